"""Issue 33 (actions): a divert pending when the real ``edge run`` is SIGKILLed is not forgotten.

The service runs with ``actions.divert`` against the virtual firmware on a real pty; the test plays the scanner
(item events with encoder counts, the belt standing still, then moving) and drops the items' frames into the
spool with no X-ray in them, so both are UNSCREENED ``no_xray`` and must be diverted. The firmware ignores the
diverts, so both are pending when the service is killed. The belt then moves on past the first parcel's arming
point (not the second's) and the service is started again: the first is reported ``missed_divert`` (the
controller, asked, says TOO_LATE), the second is sent, acknowledged and diverted. Before issue 33 the service
sent no divert at all (nothing to resend), and the intake journal forgets an item as soon as its decision is
stored: neither outcome would exist.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from firmware_bridge.messages import BeltStatus, ItemEnd, ItemStart
from firmware_bridge.virtual import DiverterModel, VirtualFirmware
from tests.faults.faults_helpers import FaultRig, wait_until
from tests.publish.publish_helpers import Collector

ACTIONS = """\
actions:
  divert:
    eye_to_exit_mm: 1000
    distance_mm: 9000
    arm_mm: 50
"""
CPM = 10  # firmware.encoder_counts_per_mm default
AT_COUNTS = 10_000 * CPM  # the diverter 10 m past the photo-eye, as configured above
STARTS = {1: 1_000, 2: 60_000}  # arming points 100,500 and 159,500 counts


def _pending(state: Path) -> list[tuple[str, str | None]]:
    db = sqlite3.connect(str(state / "actions.sqlite3"))
    try:
        return [(r[0], r[1]) for r in db.execute("SELECT item_id, outcome FROM actions WHERE action = 'divert'")]
    except sqlite3.Error:
        return []
    finally:
        db.close()


def test_a_divert_pending_at_a_kill_is_resent_after_the_restart_or_reported_missed(
        tmp_path: Path, rig: Callable[..., FaultRig]) -> None:
    fw = VirtualFirmware(tmp_path / "ttyVFW0", heartbeat_s=0.1,
                         diverter=DiverterModel(AT_COUNTS, 50 * CPM)).start()
    try:
        r = rig(firmware_port=fw.port, link_timeout_s=0.8, extra=ACTIONS)
        assert r.broker is not None
        actions_seen = Collector(r.broker.port, f"{r.topic_prefix}/actions").start()
        try:
            r.service.start()
            fw.ignore_commands = 1_000_000  # the controller does not answer: the diverts stay pending
            fw.send(BeltStatus(0, 0, True))  # the belt stands still: no deadline comes closer
            dark = np.zeros((60, 64), np.uint16)
            for wire, start in STARTS.items():
                fw.send(ItemStart(wire, start, 0))
                r.spool.drop(str(wire), dark, dark, has_xray=False)
                fw.send(ItemEnd(wire, start + 2_000, 0))
            wait_until(lambda: len(_pending(r.state)) == 2, 60, "both diverts stored by the actions sink")
            time.sleep(0.5)  # sent and unanswered
            r.service.kill()
            assert sorted(_pending(r.state)) == [("lane1-1", None), ("lane1-2", None)]
            fw.send(BeltStatus(120_000, 0, True))  # the belt moved while the box was down: parcel 1 went by
            assert fw.passed == [1] and fw.diverted == []
            fw.ignore_commands = 0
            r.service.start()
            wait_until(lambda: len(actions_seen.json_on("/actions")) >= 2, 60, "both outcomes on MQTT")
            outcomes = {m["item_id"]: m["outcome"] for m in actions_seen.json_on("/actions")}
            assert outcomes == {"lane1-1": "missed_divert", "lane1-2": "done"}, r.service.log_tail()
            fw.send(BeltStatus(200_000, 0, True))
            wait_until(lambda: fw.diverted, 10, "parcel 2 at the diverter")
            assert [d.item_id for d in fw.diverted] == [2] and fw.passed == [1]
            files = sorted(r.audit_dir.glob("*/*.actions.json"))
            assert [json.loads(p.read_text())[0]["outcome"] for p in files] == ["missed_divert", "done"]
            items = {json.loads(p.read_text())["item_id"]: json.loads(p.read_text())["verdict"]
                     for p in r.audit_dir.glob("*/lane1-?.json")}
            assert items == {"lane1-1": "unscreened", "lane1-2": "unscreened"}  # the missed one's alarm stands
        finally:
            actions_seen.stop()
    finally:
        fw.stop()
