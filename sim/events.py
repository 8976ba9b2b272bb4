"""Belt, encoder, item and frame events of the virtual scanner, as a timestamped timeline.

Where it sits: between the item stream (``sim/scene.py``) and the firmware bridge. Each event *is* the serial
protocol's message (``firmware_bridge.messages``, the one definition of what a scanner controller reports: encoder
counts, wire item ids, frame counters, fault codes and severities) sent at ``t_s`` (seconds since the stream
started), plus what only the simulator knows: the item's own id, its detector lines and frame line ranges. The
bridge's virtual firmware replays ``messages`` over a pty (``firmware_bridge.sim_adapter``); the runtime sees the
same events a real scanner's controller would send. ``encoder`` is the message's encoder count
(``counts_per_mm`` counts per millimetre of belt travel; default 10, i.e. 0.1 mm).

Sequence for a stream: ``BeltSpeed`` → ``XrayOn`` → per item ``ItemStart`` (its line 0), ``FrameReady`` every
``frame_lines`` lines (line ranges are half-open and count from the item's line 0), ``ItemEnd`` → ``XrayOff``;
``EncoderTick`` every ``tick_period_s``; ``Fault`` events where the caller injects them. Events are sorted by time,
and at equal time by the order just given. Wire item ids count the items from 0; frame ids count every frame.

Must not: do I/O or sleep; replay pacing belongs to the consumer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from firmware_bridge import messages as wire
from firmware_bridge.messages import FaultCode, FaultSeverity, fit_text  # the sim injects the wire's fault codes


class _WireEvent:
    """What every sim event shares: the serial message it is (``message``), the encoder count it carries, and no
    sim item unless the event names one. Events that send more than their message, or name an item, override."""

    __slots__ = ()
    message: wire.Event

    @property
    def encoder(self) -> int:
        return self.message.encoder_count

    @property
    def messages(self) -> tuple[wire.Message, ...]:
        return (self.message,)

    @property
    def sim_item(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class BeltSpeed(_WireEvent):
    """The belt runs at ``speed_mm_s`` from now on (the wire reports it in encoder counts per second)."""

    t_s: float
    message: wire.BeltStatus
    speed_mm_s: float


@dataclass(frozen=True, slots=True)
class EncoderTick(_WireEvent):
    """Periodic encoder report (a belt status at the current speed)."""

    t_s: float
    message: wire.BeltStatus


@dataclass(frozen=True, slots=True)
class XrayOn(_WireEvent):
    """The tube is on and stable; lines from now on are valid."""

    t_s: float
    message: wire.XrayState


@dataclass(frozen=True, slots=True)
class XrayOff(_WireEvent):
    """The tube is off (end of stream, interlock, or fault)."""

    t_s: float
    message: wire.XrayState


@dataclass(frozen=True, slots=True)
class ItemStart(_WireEvent):
    """The light curtain saw an item's leading edge: its line 0 is the detector line ``line``; ``item_id`` is the
    sim's id of the item, ``message.item_id`` the wire's."""

    t_s: float
    message: wire.ItemStart
    item_id: str
    line: int

    @property
    def sim_item(self) -> str | None:
        return self.item_id


@dataclass(frozen=True, slots=True)
class ItemEnd(_WireEvent):
    """The item's trailing edge passed; it spans ``lines`` detector lines."""

    t_s: float
    message: wire.ItemEnd
    item_id: str
    lines: int

    @property
    def sim_item(self) -> str | None:
        return self.item_id


@dataclass(frozen=True, slots=True)
class FrameReady(_WireEvent):
    """Lines ``[first_line, end_line)`` of the item are in the frame buffer (item-relative line numbers); the wire
    message says how many lines (``end_line - first_line``) under a running frame id."""

    t_s: float
    message: wire.FrameReady
    item_id: str
    frame_index: int
    first_line: int
    end_line: int

    @property
    def sim_item(self) -> str | None:
        return self.item_id


@dataclass(frozen=True, slots=True)
class Fault(_WireEvent):
    """A fault became active or cleared; an open interlock is also reported as the interlock chain opening."""

    t_s: float
    message: wire.Fault

    @property
    def code(self) -> FaultCode | int:
        try:
            return FaultCode(self.message.code)
        except ValueError:
            return self.message.code

    @property
    def active(self) -> bool:
        return self.message.active

    @property
    def messages(self) -> tuple[wire.Message, ...]:
        if self.message.code == FaultCode.INTERLOCK_OPEN:
            return (self.message, wire.Interlock(0, not self.message.active, self.message.encoder_count))
        return (self.message,)


SEVERITY: dict[FaultCode, FaultSeverity] = {
    FaultCode.INTERLOCK_OPEN: FaultSeverity.CRITICAL,
    FaultCode.XRAY_TUBE: FaultSeverity.CRITICAL,
    FaultCode.BELT_JAM: FaultSeverity.ERROR,
    FaultCode.DETECTOR: FaultSeverity.ERROR,
}
"""Severity of an injected fault by code when the caller does not say: interlock and X-ray faults stop
screening (CRITICAL); others are ERROR."""


def fault_event(t_s: float, encoder: int, code: FaultCode, active: bool, message: str = "",
                severity: FaultSeverity | None = None) -> Fault:
    """A fault event, its text cut to what the wire carries (64 bytes UTF-8, on a character boundary)."""
    severity = severity if severity is not None else SEVERITY.get(code, FaultSeverity.ERROR)
    return Fault(t_s, wire.Fault(code, severity, active, encoder, fit_text(message)))


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
    severity: FaultSeverity | None = None
    """None: by code (:data:`SEVERITY`)."""


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
    speed_counts_s = round(speed_mm_s * counts_per_mm)

    def enc(t: float) -> int:
        return round(t * speed_mm_s * counts_per_mm)

    def belt(t: float) -> wire.BeltStatus:
        return wire.BeltStatus(enc(t), speed_counts_s, speed_counts_s != 0)

    t_on = 0.1
    events: list[Event] = [BeltSpeed(0.0, belt(0.0), speed_mm_s), XrayOn(t_on, wire.XrayState(True, enc(t_on)))]
    next_line = round((lead_s - t_on) / line_s)
    frames = 0
    for wire_id, span in enumerate(items):
        if span.lines < 1:
            raise ValueError(f"item {span.item_id!r} has {span.lines} lines; expected >= 1")
        if len(events) > 2:
            next_line += max(round(span.gap_before_mm / pitch_mm), 0)
        start = next_line
        t_start = t_on + start * line_s
        events.append(ItemStart(t_start, wire.ItemStart(wire_id, enc(t_start), 0), span.item_id, start))
        for k, first in enumerate(range(0, span.lines, frame_lines)):
            end = min(first + frame_lines, span.lines)
            t = t_on + (start + end) * line_s
            events.append(FrameReady(t, wire.FrameReady(frames, enc(t), end - first), span.item_id, k, first, end))
            frames += 1
        t_end = t_on + (start + span.lines) * line_s
        events.append(ItemEnd(t_end, wire.ItemEnd(wire_id, enc(t_end), 0), span.item_id, span.lines))
        next_line = start + span.lines
    t_last = t_on + next_line * line_s + tail_s
    for f in faults:
        events.append(fault_event(f.t_s, enc(f.t_s), f.code, True, f.message, f.severity))
        if f.duration_s is not None:
            t_clear = f.t_s + f.duration_s
            events.append(fault_event(t_clear, enc(t_clear), f.code, False, f.message, f.severity))
            t_last = max(t_last, t_clear)
        else:
            t_last = max(t_last, f.t_s)
    n_ticks = int(t_last / tick_period_s)
    events.extend(EncoderTick(k * tick_period_s, belt(k * tick_period_s)) for k in range(1, n_ticks + 1))
    events.append(XrayOff(t_last, wire.XrayState(False, enc(t_last))))
    events.sort(key=lambda e: (e.t_s, _ORDER[type(e)]))
    return events


def iter_item_events(events: Iterable[Event], item_id: str) -> Iterator[ItemStart | FrameReady | ItemEnd]:
    """The events that belong to one item, in order."""
    for e in events:
        if isinstance(e, ItemStart | FrameReady | ItemEnd) and e.item_id == item_id:
            yield e


def event_to_dict(event: Event) -> dict[str, object]:
    """A JSON-ready dict with a ``type`` field (for the dataset's ``events.jsonl``; the form it always had:
    ``t_s``, ``encoder`` and the sim's fields, a fault's code by its lower-case name)."""
    out: dict[str, object] = {"type": type(event).__name__, "t_s": event.t_s, "encoder": event.encoder}
    if isinstance(event, BeltSpeed):
        out["speed_mm_s"] = event.speed_mm_s
    elif isinstance(event, ItemStart):
        out |= {"item_id": event.item_id, "line": event.line}
    elif isinstance(event, ItemEnd):
        out |= {"item_id": event.item_id, "lines": event.lines}
    elif isinstance(event, FrameReady):
        out |= {"item_id": event.item_id, "frame_index": event.frame_index, "first_line": event.first_line,
                "end_line": event.end_line}
    elif isinstance(event, Fault):
        code = event.code
        out |= {"code": code.name.lower() if isinstance(code, FaultCode) else code, "active": event.active,
                "message": event.message.detail}
    return out
