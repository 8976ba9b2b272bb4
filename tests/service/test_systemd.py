"""systemd integration: the shipped units verify, and the service speaks sd_notify correctly.

The tests play systemd's side of ``$NOTIFY_SOCKET``: they bind an AF_UNIX datagram socket and read what the
service sends (READY after warm-up, WATCHDOG only while the pipeline makes progress, RELOADING/READY around
SIGHUP, STOPPING on SIGTERM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import load_config
from edge.notify import Notifier
from edge.pipeline import Pipeline, Stage
from edge.records import RawItem
from edge.runtime import Runtime
from edge.screening import ModelHolder, load_models
from edge.service import Service
from edge.sinks.audit import AuditStore
from edge.sources.spool import SpoolSource
from edge.stages.decide import decide
from tests.service.conftest import Assets
from tests.service.service_helpers import REPO, write_config


class NotifyListener:
    """systemd's end of NOTIFY_SOCKET: collects (monotonic time, fields) of every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, value: str | None = None, after: float = 0.0, timeout_s: float = 60.0
                 ) -> dict[str, str]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for t, fields in list(self.messages):
                if t >= after and key in fields and (value is None or fields[key] == value):
                    return fields
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} after {after}: got {[f for _, f in self.messages]}")

    def count(self, key: str, start: float, end: float) -> int:
        return sum(1 for t, f in self.messages if start <= t <= end and key in f)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_shipped_unit_verifies_cleanly_and_is_hardened() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = REPO / "systemd" / "edge.service"
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                              text=True, timeout=60)
    line = next(x for x in security.stdout.splitlines() if "Overall exposure level" in x)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.0, line


def test_ready_reload_with_broken_bundle_and_stop(tmp_path: Path, assets: Assets) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    detector = tmp_path / "det"
    shutil.copytree(assets.detector, detector)
    cfg = write_config(tmp_path / "edge.yaml", detector=detector, scorer=assets.scorer, flat=assets.flat,
                       energy=assets.energy, state=tmp_path, items=1000, per_minute=60)
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = listener.wait_for("READY", "1", timeout_s=90)
        assert ready["STATUS"].startswith("online"), ready
        assert int(ready["MAINPID"]) == proc.pid
        t0 = time.monotonic()
        time.sleep(1.5)
        assert listener.count("WATCHDOG", t0, time.monotonic()) >= 3, "the watchdog must be pinged while healthy"
        # Break the bundle on disk, then reload: the old models must stay in service.
        model_file = next(detector.rglob("*.onnx"))
        model_file.write_bytes(b"garbage" + model_file.read_bytes()[7:])
        before = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        listener.wait_for("RELOADING", "1", after=before)
        again = listener.wait_for("READY", "1", after=before)
        assert again["STATUS"].startswith("degraded") and "reload failed" in again["STATUS"], again
        assert "sha256" in again["STATUS"]
        deadline = time.monotonic() + 10
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads((tmp_path / "status.json").read_text())
            if "reload failed" in status["reason"]:
                break
            time.sleep(0.2)
        assert "reload failed" in status["reason"] and status["models"][0].startswith("detector:det@")
        # Still screening with the old models after the failed reload.
        decided_before = sum(status["decisions"].values())
        time.sleep(2.5)
        status = json.loads((tmp_path / "status.json").read_text())
        assert sum(status["decisions"].values()) > decided_before
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING", "1", after=stop_at)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "reload failed" in stderr


def test_watchdog_withheld_while_pipeline_stalls(tmp_path: Path, assets: Assets,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = load_config(write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=None,
                                   flat=assets.flat, energy=assets.energy, state=tmp_path))
    release = threading.Event()

    def stuck(item: RawItem) -> Any:
        release.wait(30)
        return decide(item.meta, [], time.time(), time.monotonic())

    spool = tmp_path / "spool"
    pipeline = Pipeline(SpoolSource(spool, "lane1", 60, poll_s=0.02), [Stage("stuck", stuck)], [])
    runtime = Runtime(cfg, pipeline, ModelHolder(load_models(cfg.models)), None, AuditStore(cfg.audit, "s"))
    service = Service(tmp_path / "edge.yaml", runtime, Notifier(str(listener.path)), stall_s=0.5)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        listener.wait_for("READY", "1")
        t_idle = time.monotonic()
        time.sleep(1.0)
        assert listener.count("WATCHDOG", t_idle, time.monotonic()) >= 3, "idle is healthy"
        high = np.full((20, 64), 40000, np.uint16)
        np.savez(spool / "item.npz", high=high, low=high)
        time.sleep(1.0)  # the item is stuck; after stall_s no more pings
        t_stalled = time.monotonic()
        time.sleep(1.2)
        assert listener.count("WATCHDOG", t_stalled, time.monotonic()) == 0, "no pings while stalled"
        release.set()
        t_free = time.monotonic()
        time.sleep(1.0)
        assert listener.count("WATCHDOG", t_free, time.monotonic()) >= 2, "pings resume after progress"
    finally:
        release.set()
        service.request_stop()
        thread.join(timeout=30)
        listener.close()
    listener_stops = [f for _, f in listener.messages if "STOPPING" in f]
    assert listener_stops, "STOPPING=1 must be sent on stop"
