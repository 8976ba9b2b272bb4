"""Issue 12's acceptance over a real pty: the scanner's cable is pulled mid-item and re-plugged; the firmware
link reconnects by itself, and the pipeline marks the item scanned across the gap UNSCREENED (link_down) while
items before and after it are screened."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.acquire import ItemTracker
from edge.pipeline import Pipeline, Stage
from edge.records import RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.sources.spool import SpoolSource
from edge.stages.decide import decide
from firmware_bridge.link import FirmwareLink, LinkSettings
from firmware_bridge.messages import ItemEnd, ItemStart
from firmware_bridge.transport import serial_opener
from firmware_bridge.virtual import VirtualFirmware


def _clear(item: RawItem) -> Any:
    return decide(item.meta, [], time.time(), time.monotonic())


def _drop_frames(spool: Path, wire_id: int) -> None:
    high = np.full((30, 64), 40000, np.uint16)
    np.savez(spool / f"{wire_id}.npz", high=high, low=high)


def _wait(predicate: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_cable_pull_mid_item_unscreens_that_item_only(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sink = MemorySink()
    # The spool names items "<scanner>-<file stem>": the same id the tracker gives firmware item n.
    fw = VirtualFirmware(tmp_path / "ttyVFW0", heartbeat_s=0.1).start()
    settings = LinkSettings(heartbeat_s=0.1, link_timeout_s=0.4, reconnect_min_s=0.05, reconnect_max_s=0.2)
    tracker = ItemTracker("lane1", 30, lambda meta: None)
    link = FirmwareLink(serial_opener(str(fw.port)), settings, on_event=tracker.on_event, on_state=tracker.on_state)
    pipeline = Pipeline(SpoolSource(spool, "lane1", 30, poll_s=0.02), [Stage("decide", _clear)], [sink],
                        source_stall_s=3.0, link=link.history)
    tracker.announce_to(pipeline.announce)
    pipeline.start()
    link.start()
    try:
        assert link.wait_until_up(5)
        time.sleep(0.2)
        # Item 1: scanned with the link up.
        fw.send(ItemStart(1, 1000, 0))
        fw.send(ItemEnd(1, 5000, 0))
        _drop_frames(spool, 1)
        assert sink.wait_for(1, 10)
        # Item 2: starts, then the cable is pulled; it ends while the link is down; the link comes back.
        fw.send(ItemStart(2, 8000, 0))
        time.sleep(0.2)
        fw.pull_cable()
        _wait(lambda: not link.is_up)
        time.sleep(0.3)
        fw.plug_cable()
        assert link.wait_until_up(10), "the link must reconnect by itself"
        _drop_frames(spool, 2)
        assert sink.wait_for(2, 10)
        # Item 3: after the gap, screened normally.
        time.sleep(0.2)
        fw.send(ItemStart(3, 20000, 0))
        fw.send(ItemEnd(3, 24000, 0))
        _drop_frames(spool, 3)
        assert sink.wait_for(3, 10)
    finally:
        link.close()
        fw.stop()
        pipeline.stop(2)
    by_id = {d.item_id: d for d in sink.decisions}
    assert by_id["lane1-1"].verdict is Verdict.CLEAR
    assert by_id["lane1-2"].reason is UnscreenedReason.LINK_DOWN
    assert by_id["lane1-2"].encoder_start == 8000
    assert by_id["lane1-3"].verdict is Verdict.CLEAR
    gaps = [s for s in link.history.records() if s.gap_s is not None]
    assert len(gaps) == 1 and gaps[0].gap_s is not None and gaps[0].gap_s >= 0.3, "the gap is reported"
