"""Belt, encoder, item and frame events of the virtual scanner, as a timestamped timeline.

Where it sits: between the item stream (``sim/scene.py``) and the firmware bridge. The bridge's virtual firmware
replays :func:`timeline` over a pty in its own serial protocol; the runtime sees the same events a real scanner's
controller would send. Every event carries the time since the stream started (``t_s``) and the encoder count at
that instant (``encoder``, ``counts_per_mm`` counts per millimetre of belt travel; default 10, i.e. 0.1 mm).

Sequence for a stream: ``BeltSpeed`` → ``XrayOn`` → per item ``ItemStart`` (its line 0), ``FrameReady`` every
``frame_lines`` lines (line ranges are half-open and count from the item's line 0), ``ItemEnd`` → ``XrayOff``;
``EncoderTick`` every ``tick_period_s``; ``Fault`` events where the caller injects them. Events are sorted by time,
and at equal time by the order just given.

Must not: do I/O or sleep; replay pacing belongs to the consumer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class BeltSpeed:
    """The belt runs at ``speed_mm_s`` from now on."""

    t_s: float
    encoder: int
    speed_mm_s: float


@dataclass(frozen=True, slots=True)
class EncoderTick:
    """Periodic encoder report."""

    t_s: float
    encoder: int


@dataclass(frozen=True, slots=True)
class XrayOn:
    """The tube is on and stable; lines from now on are valid."""

    t_s: float
    encoder: int


@dataclass(frozen=True, slots=True)
class XrayOff:
    """The tube is off (end of stream, interlock, or fault)."""

    t_s: float
    encoder: int


@dataclass(frozen=True, slots=True)
class ItemStart:
    """The light curtain saw an item's leading edge: its line 0 is the detector line ``line``."""

    t_s: float
    encoder: int
    item_id: str
    line: int


@dataclass(frozen=True, slots=True)
class ItemEnd:
    """The item's trailing edge passed; it spans ``lines`` detector lines."""

    t_s: float
    encoder: int
    item_id: str
    lines: int


@dataclass(frozen=True, slots=True)
class FrameReady:
    """Lines ``[first_line, end_line)`` of the item are in the frame buffer (item-relative line numbers)."""

    t_s: float
    encoder: int
    item_id: str
    frame_index: int
    first_line: int
    end_line: int


class FaultCode(StrEnum):
    """Faults a scanner controller reports."""

    INTERLOCK_OPEN = "interlock_open"
    XRAY_FAULT = "xray_fault"
    BELT_JAM = "belt_jam"
    DETECTOR_FAULT = "detector_fault"


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault became active (``active=True``) or cleared."""

    t_s: float
    encoder: int
    code: FaultCode
    active: bool
    message: str = ""


Event = BeltSpeed | EncoderTick | XrayOn | XrayOff | ItemStart | ItemEnd | FrameReady | Fault

_ORDER = {BeltSpeed: 0, XrayOn: 1, ItemStart: 2, FrameReady: 3, ItemEnd: 4, Fault: 5, EncoderTick: 6, XrayOff: 7}


@dataclass(frozen=True, slots=True)
class ItemSpan:
    """What the timeline needs of an item: its id, its length in lines and the belt gap before it (mm)."""

    item_id: str
    lines: int
    gap_before_mm: float = 300.0


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """A fault to insert at ``t_s``, cleared after ``duration_s`` (None: never cleared)."""

    t_s: float
    code: FaultCode
    duration_s: float | None = 1.0
    message: str = ""


def timeline(
    items: Iterable[ItemSpan],
    speed_mm_s: float = 200.0,
    pitch_mm: float = 0.8,
    frame_lines: int = 64,
    counts_per_mm: float = 10.0,
    tick_period_s: float = 0.1,
    lead_s: float = 0.5,
    tail_s: float = 0.5,
    faults: Sequence[InjectedFault] = (),
) -> list[Event]:
    """The events of a stream of items on a belt at constant speed, sorted by time.

    Detector line ``k`` (counted from ``XrayOn``) completes at ``t = t_on + (k + 1) * pitch / speed``. An item
    with gap ``g`` starts ``g / pitch`` lines after the previous item's end (the first one after the lead time).

    Raises:
        ValueError: non-positive speed, pitch, frame size or encoder resolution, or an item with no lines.
    """
    if speed_mm_s <= 0 or pitch_mm <= 0 or frame_lines < 1 or counts_per_mm <= 0 or tick_period_s <= 0:
        raise ValueError("speed_mm_s, pitch_mm, frame_lines, counts_per_mm and tick_period_s must be > 0")
    line_s = pitch_mm / speed_mm_s

    def enc(t: float) -> int:
        return round(t * speed_mm_s * counts_per_mm)

    t_on = 0.1
    events: list[Event] = [BeltSpeed(0.0, 0, speed_mm_s), XrayOn(t_on, enc(t_on))]
    next_line = round((lead_s - t_on) / line_s)
    for span in items:
        if span.lines < 1:
            raise ValueError(f"item {span.item_id!r} has {span.lines} lines; expected >= 1")
        if len(events) > 2:
            next_line += max(round(span.gap_before_mm / pitch_mm), 0)
        start = next_line
        t_start = t_on + start * line_s
        events.append(ItemStart(t_start, enc(t_start), span.item_id, start))
        for k, first in enumerate(range(0, span.lines, frame_lines)):
            end = min(first + frame_lines, span.lines)
            t = t_on + (start + end) * line_s
            events.append(FrameReady(t, enc(t), span.item_id, k, first, end))
        t_end = t_on + (start + span.lines) * line_s
        events.append(ItemEnd(t_end, enc(t_end), span.item_id, span.lines))
        next_line = start + span.lines
    t_last = t_on + next_line * line_s + tail_s
    for f in faults:
        events.append(Fault(f.t_s, enc(f.t_s), f.code, True, f.message))
        if f.duration_s is not None:
            t_clear = f.t_s + f.duration_s
            events.append(Fault(t_clear, enc(t_clear), f.code, False, f.message))
            t_last = max(t_last, t_clear)
        else:
            t_last = max(t_last, f.t_s)
    n_ticks = int(t_last / tick_period_s)
    events.extend(EncoderTick(k * tick_period_s, enc(k * tick_period_s)) for k in range(1, n_ticks + 1))
    events.append(XrayOff(t_last, enc(t_last)))
    events.sort(key=lambda e: (e.t_s, _ORDER[type(e)]))
    return events


def iter_item_events(events: Iterable[Event], item_id: str) -> Iterator[ItemStart | FrameReady | ItemEnd]:
    """The events that belong to one item, in order."""
    for e in events:
        if isinstance(e, ItemStart | FrameReady | ItemEnd) and e.item_id == item_id:
            yield e


def event_to_dict(event: Event) -> dict[str, object]:
    """A JSON-ready dict with a ``type`` field (for the dataset's ``events.jsonl``)."""
    out: dict[str, object] = {"type": type(event).__name__}
    for f in fields(event):
        value = getattr(event, f.name)
        out[f.name] = str(value) if isinstance(value, StrEnum) else value
    return out
