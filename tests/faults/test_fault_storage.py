"""Storage faults (issue 29, points 3, 11 and 12): a full disk under the outbox and the audit store, an outbox at
its cap, the audit prune and file modes.

Real parts: a small tmpfs mounted by the test (root only; skipped with the reason when mount is refused) holding
the outbox and the audit store, a real Mosquitto broker and a control-room subscriber with a persistent session
at QoS 1 (``tests/publish/publish_helpers.py``). The disk is filled with a real file until ENOSPC and freed by
deleting it. The sinks are driven as the pipeline drives them: a decision whose ``publish`` raised
``PublishError`` is offered again later, and counts as stored only once ``publish`` returned.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest

from edge.config.audit import AuditConfig
from edge.config.mqtt import MqttConfig, OutboxConfig
from edge.config.site import SiteConfig
from edge.errors import PublishError
from edge.files import atomic_write_bytes
from edge.publish import HealthSnapshot, MqttSink
from edge.records import Decision
from edge.sinks.audit import AuditStore
from tests.faults.faults_helpers import DecisionReport, FaultRig, ItemPool, exactly_one_decision, wait_until
from tests.publish.publish_helpers import Broker, Collector, make_decision

SITE = SiteConfig(site_id="hub", scanner_id="s1")
PREFIX = "xray/hub/s1"


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of the given size (bytes) under tmp_path; unmounted at the end."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for the full-disk case (needs root): {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; return it (delete it to free the space)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):  # the last few bytes
            for _ in range(1024):
                fh.write(b"\0" * 512)
    return filler


def mqtt_config(port: int, outbox: Path, **outbox_kw: object) -> MqttConfig:
    return MqttConfig.model_validate({
        "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 5,
        "health_interval_s": 1.0, "outbox": {"path": outbox, **outbox_kw},
    })


def audit_config(directory: Path, **kw: object) -> AuditConfig:
    if "min_free_mb" in kw and "min_free_mb" not in AuditConfig.model_fields:
        kw.pop("min_free_mb")  # measuring the code before the setting existed
    return AuditConfig.model_validate({"directory": directory, **kw})


def problem(component: object) -> str | None:
    return getattr(component, "problem", None)


def jpeg(size_kb: int, seed: int) -> bytes:
    """A noise JPEG of roughly ``size_kb`` kB (noise does not compress)."""
    side = int((size_kb * 1024 / 1.5) ** 0.5)
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


class PipelineDriver:
    """Offers decisions to the sinks the way the pipeline does: retried until every sink stored them."""

    def __init__(self, sinks: dict[str, Callable[[Decision], None]]) -> None:
        self.sinks = sinks
        self.pending: dict[str, dict[str, Decision]] = {name: {} for name in sinks}
        self.errors: dict[str, int] = dict.fromkeys(sinks, 0)
        self.other_errors: list[str] = []

    def offer(self, decision: Decision) -> None:
        for name in self.sinks:
            self.pending[name][decision.item_id] = decision
        self.retry()

    def retry(self) -> None:
        for name, publish in self.sinks.items():
            for item_id, decision in list(self.pending[name].items()):
                try:
                    publish(decision)
                except PublishError:
                    self.errors[name] += 1
                    continue
                except Exception as exc:  # the code before the fix raised OSError from the audit store
                    self.other_errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                del self.pending[name][item_id]

    def unstored(self) -> int:
        return sum(len(p) for p in self.pending.values())


def alarm_ids(indices: range) -> set[str]:
    return {f"s1-{i:06d}" for i in indices if i % 5 == 0 or i % 11 == 0}


# ---------------------------------------------------------------------------------------------- point 3
def test_full_disk_keeps_every_alarm_says_why_and_recovers_by_itself(
        broker: Broker, small_fs: Callable[[int], Path]) -> None:
    fs = small_fs(3 * 1024 * 1024)
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-full").start()
    sink = MqttSink(mqtt_config(broker.port, fs / "outbox.sqlite3"), SITE).start()
    audit = AuditStore(audit_config(fs / "audit", min_free_mb=0), "hub")
    driver = PipelineDriver({"mqtt": sink.publish_decision, "audit": audit.publish})
    for i in range(5):
        driver.offer(make_decision(i))
    assert driver.unstored() == 0 and problem(sink) is None and problem(audit) is None

    filler = fill(fs)
    report: dict[str, Any] = {}
    health_error = None
    for i in range(5, 45):
        driver.offer(make_decision(i, overlay=b"\xff\xd8" + bytes(2000)))
    try:
        sink.publish_health(HealthSnapshot(uptime_s=1.0))  # the service main loop's health tick
    except Exception as exc:
        health_error = f"{type(exc).__name__}: {exc}"
    report["while_full"] = {"mqtt_errors": driver.errors["mqtt"], "audit_errors": driver.errors["audit"],
                            "other_errors": driver.other_errors[:2], "health_error": health_error,
                            "mqtt_problem": problem(sink), "audit_problem": problem(audit)}
    fed_while_full = alarm_ids(range(5, 45))

    def alarms_seen() -> set[str]:
        return {str(p["item_id"]) for p in col.json_on("/alarms")}

    col.wait_for(lambda: fed_while_full <= alarms_seen(), 15)
    report["alarms_published_while_full"] = len(fed_while_full & alarms_seen())
    report["alarms_fed_while_full"] = len(fed_while_full)
    print(report)
    assert health_error is None, f"the health tick raised while the disk was full: {report}"
    assert problem(sink) and "outbox" in str(problem(sink)), report
    assert problem(audit) and "audit" in str(problem(audit)), report
    assert fed_while_full <= alarms_seen(), f"alarms fed while the disk was full never reached the subscriber: " \
                                            f"{report}"
    assert driver.unstored() > 0, "the audit store cannot have stored anything on a full disk"

    filler.unlink()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (driver.unstored() or problem(sink) or problem(audit)):
        driver.retry()
        time.sleep(0.2)
    assert driver.unstored() == 0, driver.pending
    assert problem(sink) is None and problem(audit) is None, (problem(sink), problem(audit))
    assert sink.flush(15), sink.backlog()
    everything = {f"s1-{i:06d}" for i in range(45)}
    assert col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/items")} == everything, 15)
    assert alarms_seen() == alarm_ids(range(45))
    stored = {p.stem for p in (fs / "audit").rglob("*.json")}
    assert stored == everything, sorted(everything - stored)[:5]
    sink.close(3)
    col.stop()


def test_the_sinks_start_on_a_full_disk_and_recover(broker: Broker, small_fs: Callable[[int], Path]) -> None:
    fs = small_fs(2 * 1024 * 1024)
    (fs / "state").mkdir()
    filler = fill(fs)
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-start-full").start()
    try:
        sink = MqttSink(mqtt_config(broker.port, fs / "state" / "outbox.sqlite3"), SITE).start()
        audit = AuditStore(audit_config(fs / "state" / "audit", min_free_mb=0), "hub")
    except Exception as exc:
        pytest.fail(f"the sinks cannot be built on a full disk: {type(exc).__name__}: {exc}")
    assert problem(sink) is not None and problem(audit) is None  # the audit store has not written yet
    driver = PipelineDriver({"mqtt": sink.publish_decision, "audit": audit.publish})
    for i in range(12):
        driver.offer(make_decision(i))
    assert col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/alarms")} >= alarm_ids(range(12)), 15)
    assert problem(audit) is not None
    filler.unlink()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (driver.unstored() or problem(sink) or problem(audit)):
        driver.retry()
        time.sleep(0.2)
    assert driver.unstored() == 0 and problem(sink) is None and problem(audit) is None
    assert (fs / "state" / "outbox.sqlite3").exists()
    everything = {f"s1-{i:06d}" for i in range(12)}
    assert col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/items")} == everything, 15)
    sink.close(3)
    col.stop()


def test_memory_overflow_is_bounded_drops_images_then_items_never_alarms(
        broker: Broker, small_fs: Callable[[int], Path]) -> None:
    """Disk full and broker down at once: records wait in memory within ``memory_max_bytes``; over it images go
    first, then item records, never alarms; every drop is counted, and the alarms go out once the broker is
    back."""
    fs = small_fs(2 * 1024 * 1024)
    col = Collector(broker.port, f"{PREFIX}/alarms", client_id="cr-memory").start()
    sink = MqttSink(mqtt_config(broker.port, fs / "outbox.sqlite3", memory_max_bytes=200_000), SITE).start()
    assert col.wait_for(lambda: sink.link().state.value == "up", 10)
    broker.stop()
    assert col.wait_for(lambda: sink.link().state.value != "up", 10)
    filler = fill(fs)
    picture = jpeg(20, 7)
    for i in range(60):
        with contextlib.suppress(PublishError):
            sink.publish_decision(make_decision(i, overlay=picture))
    backlog = sink.backlog()
    print({"memory": backlog})
    assert backlog.memory_bytes <= 200_000 and backlog.in_memory == backlog.total
    assert backlog.evicted_image > 0 and backlog.alarm == len(alarm_ids(range(60)))
    assert backlog.image == 0 or backlog.evicted_item == 0, "items go only once no image is left"
    for i in range(60, 1500):  # alarms only from here on: they are kept past the bound, and it is said
        if i % 5 == 0:
            with contextlib.suppress(PublishError):
                sink.publish_decision(make_decision(i, overlay=picture))
    backlog = sink.backlog()
    assert backlog.alarm == len(alarm_ids(range(60))) + len(range(60, 1500, 5))
    assert backlog.memory_bytes > 200_000 and "memory" in str(problem(sink))
    assert backlog.evicted_item > 0 and backlog.item == 0
    broker.start()
    want = alarm_ids(range(60)) | {f"s1-{i:06d}" for i in range(60, 1500, 5)}
    assert col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/alarms")} >= want, 30)
    filler.unlink()
    assert col.wait_for(lambda: problem(sink) is None, 15), problem(sink)
    sink.close(3)
    col.stop()


def test_a_read_only_file_system_at_start_degrades_and_recovers_when_writable(
        broker: Broker, small_fs: Callable[[int], Path]) -> None:
    """EROFS: the outbox and the audit store on a file system mounted read-only (as after an ext4 error with
    errors=remount-ro); the sinks say so, alarms go out from memory, and both recover once it is writable."""
    fs = small_fs(4 * 1024 * 1024)
    (fs / "audit").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, capture_output=True)
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-readonly").start()
    sink = MqttSink(mqtt_config(broker.port, fs / "outbox.sqlite3"), SITE).start()
    audit = AuditStore(audit_config(fs / "audit", min_free_mb=0), "hub")
    driver = PipelineDriver({"mqtt": sink.publish_decision, "audit": audit.publish})
    for i in range(11):
        driver.offer(make_decision(i))
    assert "read-only file system" in str(problem(sink)), problem(sink)
    assert "read-only file system" in str(problem(audit)), problem(audit)
    assert col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/alarms")} >= alarm_ids(range(11)), 15)
    subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (driver.unstored() or problem(sink) or problem(audit)):
        driver.retry()
        time.sleep(0.2)
    assert driver.unstored() == 0 and problem(sink) is None and problem(audit) is None
    assert col.wait_for(lambda: len({str(p["item_id"]) for p in col.json_on("/items")}) == 11, 15)
    sink.close(3)
    col.stop()


# ---------------------------------------------------------------------------------------------- point 11
def cap_config(port: int, path: Path) -> MqttConfig:
    extra: dict[str, object] = {"max_records": 100}
    if "max_bytes" in OutboxConfig.model_fields:
        extra["max_bytes"] = 2_000_000
    return mqtt_config(port, path, **extra)


def test_120_items_through_a_small_cap_all_reach_the_subscriber_while_the_broker_is_up(
        broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-cap-up").start()
    cfg = cap_config(broker.port, tmp_path / "outbox.sqlite3").model_copy(update={"inflight_max": 1})
    sink = MqttSink(cfg, SITE).start()  # few in flight: the broker acknowledges slower than decisions come
    assert col.wait_for(lambda: sink.link().state.value == "up", 10)
    images = [jpeg(20, seed) for seed in range(4)]
    for i in range(120):
        sink.publish_decision(make_decision(i, overlay=images[i % 4]))
    assert sink.flush(60), sink.backlog()
    want = {f"s1-{i:06d}" for i in range(120)}
    col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/items")} == want, 20)
    got = {str(p["item_id"]) for p in col.json_on("/items")}
    backlog = sink.backlog()
    print({"items_received": len(got), "evicted_item": backlog.evicted_item, "evicted_image": backlog.evicted_image})
    assert got == want, f"{len(want - got)} of 120 item records never reached the subscriber"
    assert {str(p["item_id"]) for p in col.json_on("/alarms")} == alarm_ids(range(120))
    assert (backlog.evicted_item, backlog.evicted_image) == (0, 0), "a connected outbox drains, it does not evict"
    assert len([m for m in col.snapshot() if "/images/" in m.topic]) >= 120
    sink.close(3)
    col.stop()


def test_a_capped_outbox_with_the_broker_down_evicts_images_keeps_items_and_says_so(
        broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port, f"{PREFIX}/#", client_id="cr-cap-down").start()
    sink = MqttSink(cap_config(broker.port, tmp_path / "outbox.sqlite3"), SITE).start()
    assert col.wait_for(lambda: sink.link().state.value == "up", 10)
    broker.stop()
    assert col.wait_for(lambda: sink.link().state.value != "up", 10)
    images = [jpeg(20, seed) for seed in range(4)]
    for i in range(120):
        sink.publish_decision(make_decision(i, overlay=images[i % 4]))
    backlog = sink.backlog()
    print({"while_down": backlog})
    assert backlog.evicted_image > 0, "over its cap the outbox must evict (images first)"
    broker.start()
    assert sink.flush(60), sink.backlog()
    sink.publish_health(HealthSnapshot(uptime_s=2.0))  # (health is the first thing evicted over the bound)
    want = {f"s1-{i:06d}" for i in range(120)}
    col.wait_for(lambda: {str(p["item_id"]) for p in col.json_on("/items")} == want, 20)
    got = {str(p["item_id"]) for p in col.json_on("/items")}
    assert got == want, f"{len(want - got)} of 120 item records evicted: {sink.backlog()}"
    assert {str(p["item_id"]) for p in col.json_on("/alarms")} == alarm_ids(range(120))
    assert col.wait_for(lambda: col.json_on("/health"), 10)
    evicted = cast(dict[str, Any], col.json_on("/health")[-1]["outbox"])["evicted"]
    assert evicted["image"] == backlog.evicted_image and evicted["item"] == 0, evicted
    sink.close(3)
    col.stop()


# ---------------------------------------------------------------------------------------------- point 12
def test_audit_prune_never_walks_the_store_on_the_publish_thread(tmp_path: Path) -> None:
    store = AuditStore(audit_config(tmp_path / "audit", quota_mb=10), "hub", prune_every=50)
    for i in range(2000):  # a store with history, as after weeks of service
        atomic_write_bytes(tmp_path / "audit" / "2026-01-01" / f"old{i}.json", b"{}", sync_dir=False)
    walked_on: list[str] = []
    real_scandir, real_rglob, real_walk = os.scandir, Path.rglob, os.walk
    me = threading.current_thread().name

    def note(name: str) -> None:
        if threading.current_thread().name == me:
            walked_on.append(name)

    def scandir(*a: Any, **k: Any) -> Any:
        note("scandir")
        return real_scandir(*a, **k)

    def rglob(self: Path, *a: Any, **k: Any) -> Any:
        note("rglob")
        return real_rglob(self, *a, **k)

    def walk(*a: Any, **k: Any) -> Any:
        note("walk")
        return real_walk(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", scandir)
        mp.setattr(Path, "rglob", rglob)
        mp.setattr(os, "walk", walk)
        for i in range(120):
            store.publish(make_decision(i))
    assert not walked_on, f"publish walked the store on the publish thread: {walked_on[:3]}"
    store.close(2)


def test_audit_store_reopened_over_its_quota_prunes_on_its_own_thread(tmp_path: Path) -> None:
    """After a restart the store counts what is already there (one scan, off the publish thread) and its prune
    thread brings it under the quota without any decision arriving."""
    day = tmp_path / "audit" / time.strftime("%Y-%m-%d", time.gmtime())
    day.mkdir(parents=True)
    for i in range(26):  # 13 MB of records from before the restart, quota 10 MB
        (day / f"old{i:02d}.json").write_bytes(b"{}")
        (day / f"old{i:02d}.jpg").write_bytes(bytes(500_000))
        os.utime(day / f"old{i:02d}.jpg", (time.time() - 100 + i, time.time() - 100 + i))
        os.utime(day / f"old{i:02d}.json", (time.time() - 100 + i, time.time() - 100 + i))
    store = AuditStore(audit_config(tmp_path / "audit", quota_mb=10, prune_interval_s=1), "hub")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and store.pruned_records == 0:
        time.sleep(0.1)
    on_disk = sum(p.stat().st_size for p in day.iterdir())
    assert store.pruned_records > 0 and on_disk <= 10 * 1024 * 1024, (store.pruned_records, on_disk)
    assert abs(store.usage_bytes() - on_disk) < 1024
    left = sorted(p.stem for p in day.glob("*.json"))
    assert "old25" in left and "old00" not in left, "the oldest records went first"
    store.close(2)


def test_audit_prune_keeps_the_configured_free_space(small_fs: Callable[[int], Path]) -> None:
    if "min_free_mb" not in AuditConfig.model_fields:
        pytest.fail("audit has no min_free_mb: the prune ignores free disk space")
    fs = small_fs(12 * 1024 * 1024)
    store = AuditStore(audit_config(fs / "audit", min_free_mb=1), "hub", prune_every=5)
    picture = jpeg(100, 1)
    failures = 0
    for i in range(180):  # 180 x ~100 kB = 1.5 times the file system
        for _ in range(50):
            try:
                store.publish(make_decision(i, overlay=picture))
                break
            except PublishError:
                failures += 1
                time.sleep(0.1)  # the pipeline retries later
        else:
            pytest.fail(f"decision {i} never stored: {problem(store)}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize < 900_000:
        time.sleep(0.1)
    vfs = os.statvfs(fs)
    assert vfs.f_bavail * vfs.f_frsize >= 900_000, "the prune let the disk fill"
    assert store.pruned_records > 0
    names = {p.stem for p in (fs / "audit").rglob("*.json")}
    assert "s1-000179" in names and "s1-000000" not in names, "oldest records go first"
    with store._prune_lock:  # a prune pass still running deletes files between the two readings below
        assert abs(store.usage_bytes() - sum(p.stat().st_size for p in (fs / "audit").rglob("*") if p.is_file())) \
            < 64 * 1024, "the running usage total drifted from the files on disk"
    store.close(2)


@pytest.mark.parametrize("mask", [0o027, 0o002])
def test_files_are_created_with_the_process_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "status.json", b"{}")
        store = AuditStore(audit_config(tmp_path / "audit"), "hub")
        store.publish(make_decision(0, overlay=b"\xff\xd8jpeg"))
        store.close(1)
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "status.json",
                                                                *(tmp_path / "audit").rglob("*.*")]}
    assert modes and all(m == want for m in modes.values()), {k: oct(v) for k, v in modes.items()}


# ---------------------------------------------------------------------------------------------- end to end
def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} not once in the config"
    return text.replace(old, new)


def test_edge_run_starts_on_a_full_disk_publishes_every_alarm_and_recovers(
        rig: Callable[..., FaultRig], item_pool: ItemPool, small_fs: Callable[[int], Path]) -> None:
    """`edge run` with its outbox and audit store on a full tmpfs from the start (status file and intake journal
    on a good disk): it starts, decides, every alarm reaches a persistent QoS 1 subscriber, it says why it is
    degraded, outlives its health ticks, and once space returns stores everything by itself: one decision per
    item at the subscriber and in the audit store, nothing left in the spool."""
    r = rig()
    disk = small_fs(16 * 1024 * 1024)
    text = r.config.read_text(encoding="utf-8")
    text = _swap(text, f"directory: {r.state / 'audit'}\n", f"directory: {disk / 'audit'}\n  min_free_mb: 0\n")
    text = _swap(text, f"path: {r.state / 'outbox.sqlite3'}\n", f"path: {disk / 'outbox.sqlite3'}\n")
    status_line = f"  status_file: {r.state / 'status.json'}\n"
    text = _swap(text, status_line, status_line + f"  journal: {r.state / 'intake.sqlite3'}\n")
    text = _swap(text, "  keepalive_s: 5\n", "  keepalive_s: 5\n  health_interval_s: 1\n")
    r.config.write_text(text, encoding="utf-8")
    assert r.broker is not None
    alarms = Collector(r.broker.port, f"{r.topic_prefix}/alarms", client_id=f"alarms-{r.topic_prefix[-8:]}").start()
    filler = fill(disk)
    try:
        r.service.start()
    except RuntimeError as exc:
        pytest.fail(f"edge run did not start on a full disk: {str(exc)[-1500:]}")
    fed = r.spool.drop_pool(item_pool, [f"full{k:02d}" for k in range(6)])
    dark = np.zeros((300, item_pool.arrays(0)[0].shape[1]), np.uint16)  # X-ray off: UNSCREENED, an alarm
    fed += [r.spool.drop(f"dark{k}", dark, dark, has_xray=False) for k in range(4)]

    def report_now() -> DecisionReport:
        return exactly_one_decision(fed, r.records(), disk / "audit")

    wait_until(lambda: report_now().missing_subscriber == 0 or not r.service.alive, 180.0,
               "every item's record at the subscriber while the disk is full")
    time.sleep(3.0)  # three health ticks
    assert r.service.alive, f"edge run exited while the disk was full:\n{r.service.log_tail()}"
    status = r.service.status() or {}
    reason = str(status.get("reason", "")).lower()
    report = report_now()
    decided = {str(rec["item_id"]): str(rec["verdict"]) for rec in r.records()}
    want_alarms = {item for item, verdict in decided.items() if verdict in ("alarm", "unscreened")}
    got_alarms = {str(body["item_id"]) for body in alarms.json_on("/alarms")}
    print({"while_full": report.as_dict(), "status": status.get("state"), "reason": reason[:300],
           "alarms": len(want_alarms), "alarms_at_subscriber": len(want_alarms & got_alarms),
           "spool_pending": len(r.spool.pending())})
    assert report.missing_subscriber == 0, report.summary()
    assert want_alarms <= got_alarms, sorted(want_alarms - got_alarms)
    assert status.get("state") == "degraded" and "outbox" in reason and "audit" in reason, status

    filler.unlink()
    try:
        wait_until(lambda: report_now().ok, 120.0, "one decision per item at the subscriber and in the audit store")
        wait_until(lambda: "outbox" not in str((r.service.status() or {}).get("reason", "")).lower()
                   and "audit" not in str((r.service.status() or {}).get("reason", "")).lower(), 60.0,
                   "the status to drop the outbox and audit problems")
        wait_until(lambda: not r.spool.pending(), 60.0, "every spool item acknowledged")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: status {r.service.status()}, spool {r.spool.pending()}, "
                             f"{report_now().summary()}\n{r.service.log_tail(60)}") from None
    time.sleep(1.5)  # late duplicates would show now
    assert report_now().ok, report_now().summary()
    assert r.service.alive
    assert r.service.stop() == 0, r.service.log_tail()
    alarms.stop()


def test_records_written_while_the_first_scan_runs_are_counted_once(tmp_path: Path) -> None:
    """The running usage total counts a record written right after the start once, not twice (the first scan used
    to tell "from before the start" by mtime, which comes from a coarse kernel clock: a record written within the
    same tick was counted by the scan and by its writer, and the total drifted by a record, 1 run in 3)."""
    root = tmp_path / "audit"
    atomic_write_bytes(root / "2026-01-01" / "old.json", b"x" * 5000)  # a record of an earlier run
    for attempt in range(30):
        store = AuditStore(audit_config(root), "hub")
        store.publish(make_decision(attempt, overlay=b"\xff\xd8" + b"j" * 20_000))
        wait_until(store._scanned.is_set, 10, "the audit store's first scan")
        on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        assert store.usage_bytes() == on_disk, f"attempt {attempt}: the usage total drifted"
        store.close(2)


def test_temporary_files_of_writes_a_crash_interrupted_are_removed_at_start(tmp_path: Path) -> None:
    """A SIGKILL between a record's temporary files and their renames left hidden ``.*.tmp`` files that no scan
    counted or removed, and that kept their day folder from ever going under the quota. The first scan after the
    restart removes those from before the start; a temporary file as young as a write in progress stays."""
    day = tmp_path / "audit" / time.strftime("%Y-%m-%d", time.gmtime())
    day.mkdir(parents=True)
    old = [day / ".bench-1.jpg.k2j3.tmp", day / ".bench-1.json.a8x1.tmp"]
    for path in old:
        path.write_bytes(bytes(50_000))
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    young = day / ".bench-2.json.zz91.tmp"
    young.write_bytes(b"{")
    (day / ".keep").write_bytes(b"")  # hidden, not a temporary file: not ours to remove
    store = AuditStore(audit_config(tmp_path / "audit"), "hub")
    wait_until(store._scanned.is_set, 10, "the audit store's first scan")
    assert not any(p.exists() for p in old)
    assert young.exists() and (day / ".keep").exists()
    assert store.usage_bytes() == 0, "temporary files are never counted"
    store.close(2)


def test_retention_of_a_day_with_a_young_temporary_file_keeps_the_usage_total_true(tmp_path: Path) -> None:
    """A temporary file younger than the start minus 60 s (a crash then systemd's restart 2 s later) is left "to
    the day's retention" by the first scan; it was never counted, so removing its day must not take its bytes off
    the usage total (it did: the total went 50,000 below the files on disk, here negative)."""
    root = tmp_path / "audit"
    day = root / "2020-01-01"  # far past retention
    atomic_write_bytes(day / "bag-1.json", b"x" * 1000)
    (day / ".bag-2.json.k2j3ab9x.tmp").write_bytes(bytes(50_000))  # the interrupted write, seconds old
    store = AuditStore(audit_config(root, min_free_mb=0), "hub", prune_every=10_000)
    try:
        wait_until(store._scanned.is_set, 10, "the audit store's first scan")
        assert store.usage_bytes() == 1000
        assert store.prune() == 1 and not day.exists()
        on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        assert store.usage_bytes() == on_disk == 0
    finally:
        store.close(2)


def test_a_record_stored_again_at_start_before_the_first_scan_reaches_it_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal re-publishes its ``deciding`` rows at start: the same decision, the same files, rewritten in
    place while the first scan runs. When the writer claimed the record before the scan reached its folder, the
    scan left the file to the writer, and the writer counted only what it added to the file from before the
    start, never the file itself: the total stayed 0 with the record's 22 kB on disk."""
    import edge.sinks.audit as audit_module

    root = tmp_path / "audit"
    decision = make_decision(7, overlay=b"\xff\xd8" + b"j" * 20_000)
    first = AuditStore(audit_config(root, min_free_mb=0), "hub")
    first.publish(decision)  # stored, then the crash before the journal forgot it
    first.close(2)
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    go = threading.Event()
    real_dirs = audit_module._dirs

    def scan_held(where: Path) -> list[Path]:  # the first scan reaches the folders only once told to
        if threading.current_thread().name == "audit-prune":
            go.wait(10)
        return real_dirs(where)

    monkeypatch.setattr(audit_module, "_dirs", scan_held)
    store = AuditStore(audit_config(root, min_free_mb=0), "hub")
    try:
        store.publish(decision)  # the journal's re-publish
        go.set()
        wait_until(store._scanned.is_set, 10, "the audit store's first scan")
        assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) == on_disk
        assert store.usage_bytes() == on_disk
    finally:
        go.set()
        store.close(2)
