"""Ready-made timelines for the virtual firmware: a steady belt with evenly spaced items.

Used by ``edge sim firmware`` when no virtual-scanner timeline is given, and by tests that need a plausible
stream. Pure generators (endless unless ``duration_s`` is set), no I/O, no randomness.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from firmware_bridge.messages import BeltStatus, FrameReady, Interlock, ItemEnd, ItemStart, XrayState
from firmware_bridge.virtual import Scheduled


def steady_belt(
    *,
    speed_mm_s: float = 200.0,
    counts_per_mm: float = 10.0,
    item_length_mm: float = 400.0,
    item_gap_mm: float = 300.0,
    frame_lines: int = 64,
    line_pitch_mm: float = 0.8,
    status_every_s: float = 0.5,
    start_s: float = 0.2,
    duration_s: float | None = None,
) -> Iterator[Scheduled]:
    """X-ray on, interlocks closed, then items every ``item_length_mm + item_gap_mm`` of belt travel.

    Encoder counts follow the belt exactly: ``count = (t - start_s) * speed_mm_s * counts_per_mm``. Frames of
    ``frame_lines`` detector lines (``line_pitch_mm`` apart) are reported continuously, items or not.
    """
    if speed_mm_s <= 0 or counts_per_mm <= 0:
        raise ValueError(f"speed_mm_s ({speed_mm_s}) and counts_per_mm ({counts_per_mm}) must be positive")
    speed_counts_s = round(speed_mm_s * counts_per_mm)

    def count_at(t: float) -> int:
        return round((t - start_s) * speed_mm_s * counts_per_mm)

    def statuses() -> Iterator[Scheduled]:
        for k in itertools.count():
            t = start_s + k * status_every_s
            yield Scheduled(t, BeltStatus(count_at(t), speed_counts_s, True))

    def frames() -> Iterator[Scheduled]:
        period = frame_lines * line_pitch_mm / speed_mm_s
        for k in itertools.count():
            t = start_s + (k + 1) * period
            yield Scheduled(t, FrameReady(k, count_at(t), frame_lines))

    def items() -> Iterator[Scheduled]:
        pitch_s = (item_length_mm + item_gap_mm) / speed_mm_s
        length_s = item_length_mm / speed_mm_s
        for k in itertools.count():
            t = start_s + item_gap_mm / speed_mm_s + k * pitch_s
            yield Scheduled(t, ItemStart(k, count_at(t), 0))
            yield Scheduled(t + length_s, ItemEnd(k, count_at(t + length_s), 0))

    yield Scheduled(0.0, Interlock(0, True, 0))
    yield Scheduled(0.0, XrayState(True, 0))
    merged = heapq.merge(statuses(), frames(), items(), key=lambda s: s.at_s)
    for scheduled in merged:
        if duration_s is not None and scheduled.at_s > duration_s:
            return
        yield scheduled
