"""Acceptance: 1,000 items through two broker restarts and one SIGKILL of the publisher; no alarm is lost."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from publish_helpers import REPO, Broker, Collector

from edge.schemas import validator

COUNT = 1000
HERE = Path(__file__).resolve().parent


def _publisher(port: int, outbox: Path, progress: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "publisher_proc.py"), "--port", str(port), "--outbox", str(outbox),
         "--count", str(COUNT), "--rate", "200", "--progress", str(progress)],
        cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _progress(path: Path) -> int:
    try:
        return int(path.read_text() or -1)
    except (OSError, ValueError):
        return -1


def _wait_progress(path: Path, at_least: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _progress(path) < at_least:
        assert proc.poll() is None, "publisher died early"
        assert time.monotonic() < deadline, f"publisher stuck at {_progress(path)}"
        time.sleep(0.02)


def test_every_alarm_survives_broker_restarts_and_publisher_kill(broker: Broker, tmp_path: Path) -> None:
    collector = Collector(broker.port, "xray/acc/s1/#", client_id="control-room-acc").start()
    outbox, progress, log = tmp_path / "outbox.sqlite3", tmp_path / "progress", tmp_path / "publisher.log"
    proc = _publisher(broker.port, outbox, progress, log)
    try:
        _wait_progress(progress, 150, proc)
        broker.stop()                                  # outage 1 ...
        _wait_progress(progress, 300, proc)
        proc.send_signal(signal.SIGKILL)               # ... during which the edge process crashes with a backlog
        proc.wait(timeout=5)
        killed_at = _progress(progress)
        proc = _publisher(broker.port, outbox, progress, log)
        _wait_progress(progress, 400, proc)
        broker.start()
        _wait_progress(progress, 700, proc)
        broker.stop()                                  # outage 2
        time.sleep(1.0)
        broker.start()
        assert proc.wait(timeout=40) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    expected_alarm_items = {f"s1-{i:06d}" for i in range(COUNT) if i % 5 == 0 or i % 11 == 0}

    def alarm_items() -> set[str]:
        return {str(p["item_id"]) for p in collector.json_on("/alarms")}

    every_item = {f"s1-{i:06d}" for i in range(COUNT)}
    # items 996..999 follow the last alarm: wait for them too, not only for the alarms
    collector.wait_for(lambda: expected_alarm_items <= alarm_items()
                       and {str(p["item_id"]) for p in collector.json_on("/items")} == every_item, timeout=15)
    collector.stop()

    alarms = collector.json_on("/alarms")
    missing = expected_alarm_items - {str(p["item_id"]) for p in alarms}
    assert not missing, f"{len(missing)} alarms lost, e.g. {sorted(missing)[:5]}; publisher killed at {killed_at}"

    # None corrupt: every copy is valid against the shipped schema, and a record id means one item only.
    check_alarm, check_item = validator("xray-edge/alarm@2"), validator("xray-edge/item@2")
    ids_by_item: dict[str, set[str]] = defaultdict(set)
    for p in alarms:
        check_alarm.validate(p)
        assert p["verdict"] in ("alarm", "unscreened")
        ids_by_item[str(p["item_id"])].add(str(p["record_id"]))
    assert all(len(ids) == 1 for ids in ids_by_item.values()), "a redelivery changed its record_id"
    assert len({next(iter(ids)) for ids in ids_by_item.values()}) == len(ids_by_item), "record ids collide"
    items = collector.json_on("/items")
    for p in items:
        check_item.validate(p)
    assert {str(p["item_id"]) for p in items} == {f"s1-{i:06d}" for i in range(COUNT)}
    assert all(p["verdict"] == "clear" for p in items if p["item_id"] not in expected_alarm_items)

    with sqlite3.connect(outbox) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0, "outbox not empty at the end"
    duplicates = len(alarms) - len(ids_by_item)
    print(json.dumps({"alarms": len(ids_by_item), "alarm_copies": len(alarms), "duplicates": duplicates,
                      "killed_at": killed_at}))
