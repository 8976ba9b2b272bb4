"""Issue 29, point 6 (link race): an item is scanned, then the scanner link goes silent (a hung controller, a
cable cut mid-run: no more heartbeats). The link can only declare the loss after its own timeout, so for those
seconds its history still says UP. An item whose frames arrive in that window must not be CLEAR on a history that
is not final yet: it must wait until the history covers its scan window (the link's timeout past its last frame)
and then be UNSCREENED ``link_down``: nobody can tell what the scanner did while the link was silent.

In process, with real parts: the virtual firmware on a real pty, the real ``FirmwareLink`` and ``ItemTracker``,
the real ``Pipeline`` and ``SpoolSource`` on a real spool folder. The screening stage always answers CLEAR (as
in tests/pipeline/test_link_gap.py): what is under test is the link gate in front of it, not the models.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.acquire import ItemTracker
from edge.config.firmware import LINK_SETTLE_MARGIN_S
from edge.pipeline import Pipeline, Stage
from edge.records import RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.sources.spool import SpoolSource
from edge.stages.decide import decide
from firmware_bridge.history import LinkStatus
from firmware_bridge.link import FirmwareLink, LinkSettings
from firmware_bridge.messages import ItemEnd, ItemStart, Message
from firmware_bridge.transport import serial_opener
from firmware_bridge.virtual import VirtualFirmware
from tests.faults.faults_helpers import Spool, wait_until

LINK_TIMEOUT_S = 1.0
"""Short enough for a quick test, long enough (10 heartbeats) that a loaded machine does not trip it."""


def _clear(item: RawItem) -> Any:
    return decide(item.meta, [], time.time(), time.monotonic())


def _send_then_go_silent(fw: VirtualFirmware, message: Message) -> None:
    """Send ``message`` and go mute in one step of the firmware thread, so that no heartbeat slips in between:
    the controller hangs right as the item ends, and ``message`` is the last frame the host ever gets from it
    (had a heartbeat followed, the link would have been alive past the scan and CLEAR would be right)."""

    def op() -> None:
        fw._emit(message)
        fw.set_muted(True)

    fw._call(op)


def _frames() -> tuple[np.ndarray, np.ndarray]:
    high = np.full((30, 64), 40000, np.uint16)
    return high, high.copy()


def test_item_scanned_just_before_the_link_goes_silent_is_unscreened(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    sink = MemorySink()
    fw = VirtualFirmware(tmp_path / "ttyVFW0", heartbeat_s=0.1).start()
    settings = LinkSettings(heartbeat_s=0.1, link_timeout_s=LINK_TIMEOUT_S, reconnect_min_s=0.05,
                            reconnect_max_s=0.2)
    tracker = ItemTracker("lane1", 30, lambda meta: None)
    link = FirmwareLink(serial_opener(str(fw.port)), settings, on_event=tracker.on_event, on_state=tracker.on_state)
    # Wired as the service wires it (edge/runtime.py): results wait out the link's timeout past the scan.
    pipeline = Pipeline(SpoolSource(spool.directory, "lane1", 30, poll_s=0.02), [Stage("decide", _clear)], [sink],
                        source_stall_s=3.0, link=link.history,
                        link_settle_s=LINK_TIMEOUT_S + LINK_SETTLE_MARGIN_S)
    tracker.announce_to(pipeline.announce)
    pipeline.start()
    link.start()
    try:
        assert link.wait_until_up(10)
        time.sleep(0.3)
        # Item 1, with the link healthy throughout: screened.
        fw.send(ItemStart(1, 1000, 0))
        fw.send(ItemEnd(1, 5000, 0))
        spool.drop("1", *_frames())
        assert sink.wait_for(1, 15)
        # Item 2: scanned, then the controller goes silent; its frames land at once, before the loss is declared.
        fw.send(ItemStart(2, 8000, 0))
        time.sleep(0.2)
        _send_then_go_silent(fw, ItemEnd(2, 12000, 0))
        spool.drop("2", *_frames())
        frames_at = time.monotonic()
        wait_until(lambda: not link.is_up, 15, "the link to declare the silence")
        declared_at = time.monotonic()
        assert sink.wait_for(2, 15 + LINK_TIMEOUT_S)
        # The link comes back; item 3 after the gap is screened again.
        fw.set_muted(False)
        assert link.wait_until_up(15), "the link must recover by itself"
        time.sleep(0.3)
        fw.send(ItemStart(3, 20000, 0))
        fw.send(ItemEnd(3, 24000, 0))
        spool.drop("3", *_frames())
        assert sink.wait_for(3, 15)
    finally:
        link.close()
        fw.stop()
        pipeline.stop(5)
    by_id = {d.item_id: d for d in sink.decisions}
    down = [s for s in link.history.records() if s.status is LinkStatus.DOWN]
    print(f"point 6: item 2 {by_id['lane1-2'].verdict.value} ({by_id['lane1-2'].reason}); frames arrived "
          f"{declared_at - frames_at:.2f} s before the loss was declared; link down since "
          f"{frames_at - down[0].since:.2f} s before the frames" if down else "no DOWN recorded")
    # The precondition of the race: the frames came in after the link's last sign of life, before the loss was
    # declared (the history said UP when they arrived). (The last DOWN is the link being closed at the end.)
    assert down and down[0].since <= frames_at < declared_at, link.history.records()
    assert by_id["lane1-1"].verdict is Verdict.CLEAR
    assert by_id["lane1-2"].verdict is Verdict.UNSCREENED and by_id["lane1-2"].reason is UnscreenedReason.LINK_DOWN, (
        f"item 2 was {by_id['lane1-2'].verdict.value} ({by_id['lane1-2'].detail})")
    assert by_id["lane1-3"].verdict is Verdict.CLEAR
    assert len(sink.decisions) == 3
