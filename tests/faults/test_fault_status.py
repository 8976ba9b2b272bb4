"""Fault suite, points 7 and 12 (reload) of issue 29: the status never says online when the box is not, and a
SIGHUP reload applies what it can, says what it did not apply, and decisions after it name the new models.

Everything is real: ``edge run`` as a subprocess with real (untrained) OpenVINO bundles, the virtual firmware on
a real pty whose cable is pulled, a real Mosquitto broker on a free port (the retained status is read by a fresh
subscriber, as a control room would), the Prometheus endpoint over HTTP, ``edge status`` as a subprocess, and
small tmpfs mounts remounted read-only for the audit store and the outbox (as root; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.bundles import Role
from firmware_bridge.virtual import VirtualFirmware
from tests.faults.faults_helpers import EdgeProcess, FaultAssets, write_fault_config
from tests.publish.publish_helpers import Broker, free_port
from tests.service.service_helpers import REPO, build_bundle

pytestmark = pytest.mark.timeout(900)

START_TIMEOUT_S = 180.0
"""Loading and warming two bundles in a fresh interpreter on a loaded 2-core machine."""
CHANGE_TIMEOUT_S = 20.0
"""A state change must show within a few seconds; generous because the machine is shared."""


@pytest.fixture(scope="module")
def other_scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second scorer bundle under another name, for the reload test."""
    return build_bundle(Role.SCORER, tmp_path_factory.mktemp("status-assets"), "scorer-b")


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: Callable[[], str] | str) -> Any:
    """Poll until ``predicate`` returns something truthy and return it; fail naming ``what`` otherwise."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what if isinstance(what, str) else what()}")


def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} not once in the config"
    return text.replace(old, new)


def write_status_config(path: Path, assets: FaultAssets, state: Path, spool: Path, *, broker: Broker | None,
                        topic_prefix: str = "faults/status", audit: Path | None = None, outbox: Path | None = None,
                        metrics_port: int | None = None, firmware_port: Path | None = None,
                        health_interval_s: int | None = None) -> Path:
    """The fault suite's config (``write_fault_config``), with the audit store and the outbox where the test
    wants them (on a tmpfs it can remount read-only or fill), the metrics endpoint on, and optionally MQTT
    health records every ``health_interval_s`` (a health tick while a store fails must not end the process)."""
    write_fault_config(path, assets, state, spool, broker_port=None if broker is None else broker.port,
                       topic_prefix=topic_prefix, firmware_port=firmware_port, link_timeout_s=0.8)
    text = path.read_text(encoding="utf-8")
    if audit is not None:
        # a small tmpfs: without this the store would prune every record to keep its default free space
        text = _swap(text, f"directory: {state / 'audit'}\n", f"directory: {audit}\n  min_free_mb: 0\n")
    if outbox is not None:
        text = _swap(text, f"path: {state / 'outbox.sqlite3'}\n", f"path: {outbox}\n")
        # the intake journal stays on the good disk (by default it lives beside the outbox)
        status_line = f"  status_file: {state / 'status.json'}\n"
        text = _swap(text, status_line, status_line + f"  journal: {state / 'intake.sqlite3'}\n")
    if health_interval_s is not None:
        text = _swap(text, "  keepalive_s: 5\n", f"  keepalive_s: 5\n  health_interval_s: {health_interval_s}\n")
    if metrics_port is not None:
        status_line = f"  status_file: {state / 'status.json'}\n"
        text = _swap(text, status_line, status_line + f"  metrics_port: {metrics_port}\n")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[[Path, Path], EdgeProcess]]:
    """Start ``edge run`` processes (waiting for their first status); all are stopped at the end."""
    started: list[EdgeProcess] = []

    def start(cfg: Path, state: Path) -> EdgeProcess:
        process = EdgeProcess(cfg, state / "status.json", cfg.with_suffix(".log"))
        started.append(process)
        return process.start(START_TIMEOUT_S)

    yield start
    for process in started:
        process.stop(30.0)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Small tmpfs mounts (root only): the test remounts them read-only to make a store fail."""
    mounted: list[Path] = []

    def mount(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class NotifyStatus:
    """systemd's end of ``NOTIFY_SOCKET``: keeps every ``STATUS=`` line the service sends."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.lines += [line[len("STATUS="):] for line in data.splitlines() if line.startswith("STATUS=")]

    def latest(self) -> str:
        return self.lines[-1] if self.lines else ""

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------- observers

def status_file(state: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def edge_status(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", "status", "--config", str(cfg)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def retained_status(port: int, topic: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """What a control room connecting now reads on the retained status topic."""
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(json.loads(msg.payload))
            ready.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        ready.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1] if got else None


def degraded_naming(state: Path, *words: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        data = status_file(state)
        if data and data["state"] == "degraded" and all(w in data["reason"].lower() for w in words):
            return data
        return None
    return check


def online(state: Path) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        data = status_file(state)
        return data if data and data["state"] == "online" else None
    return check


def assert_everywhere(cfg: Path, broker_port: int, topic: str, metrics_port: int, state: str,
                      words: tuple[str, ...]) -> None:
    """The status file (already checked by the caller), `edge status`, the retained MQTT status and the
    metrics all say ``state``, and the reason names ``words``."""
    shown = edge_status(cfg)
    assert f"state: {state}" in shown.stdout, shown.stdout + shown.stderr
    assert all(w in shown.stdout.lower() for w in words), shown.stdout

    def mqtt_says() -> dict[str, Any] | None:
        payload = retained_status(broker_port, topic)
        if payload and payload["state"] == state and all(w in payload["reason"].lower() for w in words):
            return payload
        return None

    wait_until(mqtt_says, CHANGE_TIMEOUT_S, f"retained MQTT status {state} naming {words}")
    expected_up = {"online": "edge_up 1.0", "degraded": "edge_up 0.5"}[state]
    wait_until(lambda: expected_up in metrics(metrics_port), CHANGE_TIMEOUT_S, f"metrics {expected_up}")


# ---------------------------------------------------------------------------------------------- tests

def test_link_down_makes_every_status_output_degraded_and_recovery_online(
        tmp_path: Path, fault_assets: FaultAssets, broker: Broker, monkeypatch: pytest.MonkeyPatch,
        services: Callable[[Path, Path], EdgeProcess]) -> None:
    fw = VirtualFirmware(tmp_path / "ttyVFW0", heartbeat_s=0.1).start()
    notify = NotifyStatus(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))  # the child inherits it, as under systemd
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    try:
        prefix = f"faults/{uuid.uuid4().hex[:8]}"
        metrics_port = free_port()
        state = tmp_path / "state"
        cfg = write_status_config(tmp_path / "edge.yaml", fault_assets, state, tmp_path / "spool", broker=broker,
                                  topic_prefix=prefix, metrics_port=metrics_port, firmware_port=fw.port)
        service = services(cfg, state)
        wait_until(online(state), CHANGE_TIMEOUT_S, lambda: f"online at start; last: {status_file(state)}")
        assert_everywhere(cfg, broker.port, f"{prefix}/status", metrics_port, "online", ())

        fw.pull_cable()
        down = wait_until(degraded_naming(state, "firmware link"), CHANGE_TIMEOUT_S,
                          lambda: f"status file degraded naming the firmware link; last: {status_file(state)}")
        assert down["links"]["firmware"] == "down"
        assert_everywhere(cfg, broker.port, f"{prefix}/status", metrics_port, "degraded", ("firmware link",))
        assert 'edge_link_up{link="firmware"} 0' in metrics(metrics_port)
        assert 'edge_component_ok{component="firmware_link"} 0' in metrics(metrics_port)
        assert notify.latest().startswith("degraded: firmware link down"), notify.lines  # systemctl status

        fw.plug_cable()
        wait_until(online(state), CHANGE_TIMEOUT_S, lambda: f"online after replug; last: {status_file(state)}")
        assert_everywhere(cfg, broker.port, f"{prefix}/status", metrics_port, "online", ())
        assert notify.latest() == "online: screening", notify.lines
        assert service.alive, service.log_tail()
    finally:
        fw.stop()
        notify.close()


def _drop_corrupt_item(spool: Path, name: str) -> None:
    """A completed spool entry that cannot be read: the box must still decide it (UNSCREENED)."""
    spool.mkdir(parents=True, exist_ok=True)
    part = spool / f".{name}.npz.tmp"
    part.write_bytes(b"not an npz archive")
    part.rename(spool / f"{name}.npz")


def fill(disk: Path) -> Path:
    """Fill a filesystem to the last byte with one ballast file (delete it to give the space back)."""
    ballast = disk / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
        for size in (4096, 512, 1):  # the tail end of the last block
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                continue
    return ballast


@pytest.mark.parametrize(("store", "fault"), [("audit", "read-only"), ("outbox", "full")])
def test_store_that_cannot_write_makes_the_status_degraded_until_it_can_again(
        tmp_path: Path, fault_assets: FaultAssets, broker: Broker, store: str, fault: str,
        services: Callable[[Path, Path], EdgeProcess], tmpfs: Callable[[str], Path]) -> None:
    """The audit store's filesystem remounted read-only; the outbox's filesystem full (SQLite keeps its file
    open for writing, so that filesystem cannot be remounted read-only under it: EBUSY)."""
    disk = tmpfs("disk")
    prefix = f"faults/{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    state, spool = tmp_path / "state", tmp_path / "spool"
    cfg = write_status_config(tmp_path / "edge.yaml", fault_assets, state, spool, broker=broker, topic_prefix=prefix,
                              metrics_port=metrics_port, audit=disk / "audit" if store == "audit" else None,
                              outbox=disk / "outbox.sqlite3" if store == "outbox" else None, health_interval_s=1)
    service = services(cfg, state)
    wait_until(online(state), CHANGE_TIMEOUT_S, lambda: f"online at start; last: {status_file(state)}")
    _drop_corrupt_item(spool, "before")
    wait_until(lambda: _audit_record(state, disk if store == "audit" else state, "before"), CHANGE_TIMEOUT_S,
               "the first decision stored")
    assert (status_file(state) or {}).get("state") == "online", status_file(state)

    ballast = None
    if fault == "read-only":
        remount(disk, "ro")
    else:
        ballast = fill(disk)
    dropped = 0

    def degraded_after_more_items() -> dict[str, Any] | None:
        # Each decision must be stored: keep feeding (one a second) until a write has had to fail.
        nonlocal dropped
        found = degraded_naming(state, store)()
        if found is None and dropped < CHANGE_TIMEOUT_S:
            _drop_corrupt_item(spool, f"during-{dropped}")
            dropped += 1
            time.sleep(0.9)
        return found

    wait_until(degraded_after_more_items, CHANGE_TIMEOUT_S + 5,
               lambda: f"status file degraded naming the {store}; last: {status_file(state)}")
    assert_everywhere(cfg, broker.port, f"{prefix}/status", metrics_port, "degraded", (store,))
    assert service.alive, f"the service must not exit for a failing {store}: {service.log_tail()}"

    if ballast is not None:
        ballast.unlink()
    else:
        remount(disk, "rw")
    _drop_corrupt_item(spool, "after")
    wait_until(online(state), 60.0, lambda: f"online again once the {store} can write; last: {status_file(state)}")
    assert_everywhere(cfg, broker.port, f"{prefix}/status", metrics_port, "online", ())


def test_reload_applies_models_reports_what_needs_a_restart_and_decisions_name_new_models(
        tmp_path: Path, fault_assets: FaultAssets, other_scorer: Path,
        services: Callable[[Path, Path], EdgeProcess]) -> None:
    state, spool = tmp_path / "state", tmp_path / "spool"
    cfg = write_status_config(tmp_path / "edge.yaml", fault_assets, state, spool, broker=None)
    service = services(cfg, state)
    assert service.proc is not None
    wait_until(online(state), CHANGE_TIMEOUT_S, lambda: f"online at start; last: {status_file(state)}")
    _drop_corrupt_item(spool, "old-models")
    first = wait_until(lambda: _audit_record(state, state, "old-models"), CHANGE_TIMEOUT_S, "first decision")
    assert {m["name"] for m in first["models"]} == {"det", "scorer"}

    # A new scorer (applied live) and a new queue depth (needs a restart: the pipeline's queue is built once).
    write_status_config(cfg, replace(fault_assets, scorer=other_scorer), state, spool, broker=None)
    cfg.write_text(_swap(cfg.read_text(), "  deadline_s: 30\n", "  deadline_s: 30\n  queue_depth: 5\n"))
    service.proc.send_signal(signal.SIGHUP)
    refused = "reload: section 'decide' changed and needs a restart (decide.queue_depth); it was not applied"

    def reloaded() -> dict[str, Any] | None:
        data = status_file(state)
        if data and any("scorer-b" in m for m in data["models"]) and refused in data["reason"]:
            return data
        return None

    data = wait_until(reloaded, 60.0, lambda: f"new scorer in service, refusal in the status: {status_file(state)}")
    assert data["state"] == "degraded"
    assert refused in service.log_path.read_text(errors="replace")
    shown = edge_status(cfg)
    assert refused in shown.stdout, shown.stdout

    _drop_corrupt_item(spool, "new-models")
    second = wait_until(lambda: _audit_record(state, state, "new-models"), CHANGE_TIMEOUT_S, "decision after reload")
    assert second["verdict"] == "unscreened"
    assert {m["name"] for m in second["models"]} == {"det", "scorer-b"}, second["models"]

    # The restart-only key put back as it runs: nothing is pending any more, the box is online again.
    write_status_config(cfg, replace(fault_assets, scorer=other_scorer), state, spool, broker=None)
    service.proc.send_signal(signal.SIGHUP)
    wait_until(online(state), 60.0, lambda: f"online once the config matches again; last: {status_file(state)}")
    assert service.alive, service.log_tail()


def _audit_record(state: Path, audit_parent: Path, name: str) -> dict[str, Any] | None:
    for path in (audit_parent / "audit").rglob(f"*{name}*.json"):
        if not path.name.startswith("."):
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    return None


def test_status_file_follows_the_umask(tmp_path: Path) -> None:
    """Point 12: the status file is readable as the unit's UMask says (0022 -> 0644), not always 0600."""
    from edge.status import StatusReport, write_status

    report = StatusReport(state="online", reason="screening", pid=1, written_wall=time.time(), uptime_s=1.0,
                          versions={}, models=[], links={}, queues={}, in_flight=0, decisions={}, late_results=0,
                          stage_p50_ms={})
    old = os.umask(0o022)
    try:
        write_status(tmp_path / "status.json", report)
    finally:
        os.umask(old)
    assert (tmp_path / "status.json").stat().st_mode & 0o777 == 0o644
