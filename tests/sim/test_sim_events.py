"""Belt/item/frame timeline: complete, ordered, consistent with belt speed and the encoder."""

from __future__ import annotations

from itertools import pairwise

import pytest

from sim.events import (
    EncoderTick,
    Fault,
    FaultCode,
    FrameReady,
    InjectedFault,
    ItemEnd,
    ItemSpan,
    ItemStart,
    XrayOff,
    XrayOn,
    event_to_dict,
    iter_item_events,
    timeline,
)


def test_timeline_covers_every_item_line_once() -> None:
    spans = [ItemSpan("a", 500, 0.0), ItemSpan("b", 130, 250.0), ItemSpan("c", 64, 100.0)]
    events = timeline(spans, speed_mm_s=200.0, pitch_mm=0.8, frame_lines=64, counts_per_mm=10.0)
    times = [e.t_s for e in events]
    assert times == sorted(times)
    assert isinstance(events[1], XrayOn) and isinstance(events[-1], XrayOff)
    starts = {e.item_id: e for e in events if isinstance(e, ItemStart)}
    ends = {e.item_id: e for e in events if isinstance(e, ItemEnd)}
    for span in spans:
        mine = list(iter_item_events(events, span.item_id))
        assert isinstance(mine[0], ItemStart) and isinstance(mine[-1], ItemEnd)
        frames = [e for e in mine if isinstance(e, FrameReady)]
        assert frames[0].first_line == 0 and frames[-1].end_line == span.lines
        assert all(f.end_line == g.first_line for f, g in pairwise(frames))
        assert [f.frame_index for f in frames] == list(range(len(frames)))
        # the item lasts lines * pitch / speed seconds
        assert ends[span.item_id].t_s - starts[span.item_id].t_s == pytest.approx(span.lines * 0.8 / 200.0)
        assert ends[span.item_id].lines == span.lines
    # gaps between items are the requested belt distance
    gap_lines = starts["b"].line - (starts["a"].line + 500)
    assert gap_lines * 0.8 == pytest.approx(250.0, abs=0.8)
    for e in events:  # encoder: 10 counts per mm of travel at 200 mm/s
        assert e.encoder == round(e.t_s * 200.0 * 10.0)
    ticks = [e for e in events if isinstance(e, EncoderTick)]
    assert len(ticks) > 10


def test_faults_are_inserted_and_cleared() -> None:
    events = timeline([ItemSpan("a", 100)], faults=[InjectedFault(0.3, FaultCode.BELT_JAM, 0.5, "jam")])
    faults = [e for e in events if isinstance(e, Fault)]
    assert [(f.active, f.t_s) for f in faults] == [(True, 0.3), (False, 0.8)]
    d = event_to_dict(faults[0])
    assert d == {"type": "Fault", "t_s": 0.3, "encoder": 600, "code": "belt_jam", "active": True, "message": "jam"}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        timeline([ItemSpan("a", 10)], speed_mm_s=0)
    with pytest.raises(ValueError, match="expected >= 1"):
        timeline([ItemSpan("a", 0)])
