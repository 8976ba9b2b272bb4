"""Acceptance: over a real pty, the port is closed and re-created mid-stream; the link reconnects, reports the
gap, and an item scanned across the gap is UNSCREENED while items before and after are screened.

The decide rule below is the one the pipeline applies (it lives in edge/, not here): an item is screened only if
both its start and end arrived and ``history.down_between(start, end)`` is False.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from firmware_bridge.history import LinkStatus
from firmware_bridge.link import FirmwareLink, ReceivedEvent
from firmware_bridge.messages import BeltStatus, ItemEnd, ItemStart
from firmware_bridge.virtual import Scheduled, VirtualFirmware

COUNTS_PER_S = 1600  # 200 mm/s at the 8 counts/mm of the FAST settings
ITEM_STARTS = [0.2, 1.0, 1.8, 2.6]
ITEM_LENGTH_S = 0.6
PULL_AT_S = 1.9  # inside item 2 = [1.8, 2.4]
UNPLUGGED_S = 0.12
HIDDEN_ITEM = (99, 1.93, 1.97)  # starts and ends while the cable is out


def counts(t: float) -> int:
    return round(t * COUNTS_PER_S)


def timeline() -> list[Scheduled]:
    out = [Scheduled(k * 0.05, BeltStatus(counts(k * 0.05), COUNTS_PER_S, True)) for k in range(66)]
    for item_id, t in enumerate(ITEM_STARTS):
        out.append(Scheduled(t, ItemStart(item_id, counts(t), 0)))
        out.append(Scheduled(t + ITEM_LENGTH_S, ItemEnd(item_id, counts(t + ITEM_LENGTH_S), 0)))
    hidden_id, t0, t1 = HIDDEN_ITEM
    out += [Scheduled(t0, ItemStart(hidden_id, counts(t0), 0)), Scheduled(t1, ItemEnd(hidden_id, counts(t1), 0))]
    return sorted(out, key=lambda s: s.at_s)


def test_items_scanned_during_a_cable_pull_are_unscreened(firmware: Callable[..., VirtualFirmware],
                                                          link: Callable[..., FirmwareLink],
                                                          wait: Callable[..., None]) -> None:
    fw = firmware(timeline())
    lk = link(fw.port)
    starts: dict[int, ReceivedEvent] = {}
    ends: dict[int, ReceivedEvent] = {}

    def pump() -> bool:
        while not lk.events.empty():
            e = lk.events.get_nowait()
            if isinstance(e.event, ItemStart):
                starts[e.event.item_id] = e
            elif isinstance(e.event, ItemEnd):
                ends[e.event.item_id] = e
        return True

    wait(lambda: pump() and fw.elapsed_s() >= PULL_AT_S, timeout_s=5.0, what="the moment to pull the cable")
    fw.pull_cable()
    pulled = time.monotonic()
    assert not fw.port.exists()
    time.sleep(UNPLUGGED_S)
    plugged = time.monotonic()
    fw.plug_cable()
    assert fw.port.is_symlink() and fw.device is not None  # a new pty (the kernel may reuse the number)
    wait(lambda: pump() and 3 in ends, timeout_s=5.0, what="the last item's end")

    def decide(item_id: int) -> str:
        s, e = starts.get(item_id), ends.get(item_id)
        if s is None or e is None:
            return "unscreened"
        return "unscreened" if lk.history.down_between(s.received_at, e.received_at) else "screened"

    assert {i: decide(i) for i in range(4)} == {0: "screened", 1: "screened", 2: "unscreened", 3: "screened"}
    # Item 2 started before the pull and ended after the reconnect: it is the history that condemns it.
    assert 2 in starts and 2 in ends
    assert lk.history.down_between(starts[2].received_at, ends[2].received_at)
    # The item wholly inside the gap never reached the host...
    assert HIDDEN_ITEM[0] not in starts and HIDDEN_ITEM[0] not in ends

    up0, down, up1 = lk.history.records()
    assert (up0.status, down.status, up1.status) == (LinkStatus.UP, LinkStatus.DOWN, LinkStatus.UP)
    assert down.since <= pulled and up1.since >= plugged
    assert up1.gap_s is not None and up1.gap_s >= plugged - pulled
    assert abs(up1.gap_s - (up1.since - down.since)) < 1e-9
    assert up1.wall_time - down.wall_time > 0
    # ...but the belt travel it occupied is reported as unobserved.
    assert down.last_encoder_count is not None and up1.last_encoder_count is not None
    assert up1.counts_unobserved == up1.last_encoder_count - down.last_encoder_count
    assert down.last_encoder_count <= counts(HIDDEN_ITEM[1]) < counts(HIDDEN_ITEM[2]) <= up1.last_encoder_count
    assert lk.stats().sessions == 2
