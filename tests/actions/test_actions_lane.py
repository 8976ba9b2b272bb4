"""Acceptance (issue 33, actions) over a real pty: every ALARM and UNSCREENED parcel is diverted and no CLEAR one,
with the link dropping in the middle (a cable pull while a divert is unanswered, and a controller that hangs);
a parcel decided after it passed the diverter is reported ``missed_divert`` on MQTT and beside its record, and
its alarm stands. See tests/actions/conftest.py for the lane.
"""

from __future__ import annotations

import threading
import time

from edge.records import Verdict
from firmware_bridge.virtual import VirtualFirmware
from tests.actions.conftest import LaneFactory, wait_until


def _hang_the_link_once_a_divert_is_out(fw: VirtualFirmware, in_flight: object, how: str) -> threading.Thread:
    """From now on the firmware ignores commands; once a divert is out unanswered, the link drops (``pull``: the
    cable is pulled; ``mute``: the controller goes silent, longer than the link timeout) for 1.2 s, then comes back
    and the firmware listens again. The parcel still has ~2.5 s to its arming point then: a divert that can still
    make its deadline must survive the drop (given up after the link's own 1 s command timeout, it would not)."""
    fw.ignore_commands = 1_000_000

    def chaos() -> None:
        wait_until(lambda: in_flight() > 0, 10, "a divert in flight")  # type: ignore[operator]
        if how == "pull":
            fw.pull_cable()
            time.sleep(1.2)
            fw.ignore_commands = 0
            fw.plug_cable()
        else:
            fw.set_muted(True)
            time.sleep(1.2)
            fw.ignore_commands = 0
            fw.set_muted(False)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    return thread


def test_every_alarm_and_unscreened_parcel_is_diverted_and_no_clear_one_across_link_drops(lane: LaneFactory) -> None:
    alarms = frozenset({1, 3, 6, 8})
    lane_ = lane(items=10, alarms=alarms)
    fw = lane_.firmware
    chaos: list[threading.Thread] = []

    def on_end(wire_id: int) -> None:
        if wire_id in (3, 6):  # the drops land while these ALARMs' diverts are out, and across the next scans
            chaos.append(_hang_the_link_once_a_divert_is_out(fw, lane_.actions.in_flight,
                                                             "pull" if wire_id == 3 else "mute"))

    lane_.on_item_end.append(on_end)
    lane_.run_to_end()
    for thread in chaos:
        thread.join(5)
    decisions = lane_.by_wire()
    assert sorted(decisions) == list(range(10))
    must_divert = {w for w, d in decisions.items() if d.verdict.needs_operator}
    clear = {w for w, d in decisions.items() if d.verdict is Verdict.CLEAR}
    diverted = {d.item_id for d in fw.diverted}
    unscreened = {w for w, d in decisions.items() if d.verdict is Verdict.UNSCREENED}
    print(f"ALARM {sorted(alarms)}, UNSCREENED {sorted(unscreened)}, diverted {sorted(diverted)}, passed "
          f"{sorted(fw.passed)}; link sessions {lane_.link.stats().sessions}, command retries "
          f"{lane_.link.stats().command_retries}")
    # the drops really happened, and made items UNSCREENED (scanned while the link was down)
    assert lane_.link.stats().sessions >= 3 and lane_.link.stats().command_retries >= 1
    assert unscreened, "a link drop across a scan must leave an UNSCREENED item to divert"
    assert alarms <= must_divert
    assert diverted == must_divert, f"not diverted: {sorted(must_divert - diverted)}"
    assert not diverted & clear and set(fw.passed) == clear
    # every divert reported done, on MQTT and beside the item's record; nothing for CLEAR items
    records = [r for r in lane_.action_records() if r["action"] == "divert"]
    assert {r["item_id"] for r in records} == {f"lane1-{w}" for w in must_divert}
    print("\n".join(f"{r['item_id']}: {r['detail']}" for r in records))
    assert {r["outcome"] for r in records} == {"done"}
    assert all(r["schema"] == "action-1" and set(r) == {"schema", "record_id", "item_id", "action", "outcome",
                                                        "detail", "wall"} for r in records)
    items = lane_.item_records()
    assert all(r["record_id"] == items[r["item_id"]]["record_id"] for r in records)
    files = lane_.action_files()
    assert set(files) == {f"lane1-{w}" for w in must_divert}
    assert all(f[0]["outcome"] == "done" and f[0]["action"] == "divert" for f in files.values())


def test_a_parcel_decided_after_it_passed_the_diverter_is_missed_and_its_alarm_stands(lane: LaneFactory) -> None:
    # The diverter 300 mm past the photo-eye: a parcel's leading edge is there 1.2 s after it enters, while its
    # decision comes ~0.9 s after its end (the link history must be final first), 1.7 s after it entered.
    lane_ = lane(items=3, alarms=frozenset({1}), eye_to_exit_mm=100.0, distance_mm=200.0)
    lane_.run_to_end()
    fw = lane_.firmware
    assert fw.diverted == [] and sorted(fw.passed) == [0, 1, 2]
    assert not [c for c in fw.commands if type(c.command).__name__ == "Divert"], "nothing may be sent too late"
    [record] = lane_.action_records()
    assert (record["item_id"], record["action"], record["outcome"]) == ("lane1-1", "divert", "missed_divert")
    assert "mm past the diverter's arming point" in record["detail"]
    item = lane_.item_records()["lane1-1"]
    assert item["verdict"] == "alarm" and record["record_id"] == item["record_id"]  # the alarm stands
    assert lane_.action_files()["lane1-1"][0]["outcome"] == "missed_divert"
