"""Adapter: the virtual scanner's event timeline (``sim.events``) -> the virtual firmware's ``Scheduled`` messages.

Sits between ``sim`` (which knows belts, items and frames in its own terms) and ``virtual`` (which only plays
protocol messages). Pure and eager; no I/O. Not imported by the runtime.

Translation (sim event -> protocol message):

    BeltSpeed    -> BeltStatus(encoder, speed_mm_s * counts_per_mm counts/s, running = speed > 0)
    EncoderTick  -> BeltStatus(encoder, last speed, running)
    XrayOn/Off   -> XrayState(True/False, encoder)
    ItemStart    -> ItemStart(wire id, encoder, eye 0)
    ItemEnd      -> ItemEnd(wire id, encoder, eye 0)
    FrameReady   -> FrameReady(running frame counter, encoder, end_line - first_line)
    Fault        -> Fault(code, severity, active, encoder, message) (+ Interlock for interlock_open)

The protocol's item ids are u32 counted by the firmware, the sim's are strings: ``SimTimeline.item_ids`` maps
wire ids back to sim ids, so a test or the demo can match decisions to ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firmware_bridge.messages import (
    BeltStatus,
    Fault,
    FaultCode,
    FaultSeverity,
    FrameReady,
    Interlock,
    ItemEnd,
    ItemStart,
    Message,
    XrayState,
)
from firmware_bridge.virtual import Scheduled
from sim import events as sim_events

FAULTS: dict[sim_events.FaultCode, tuple[FaultCode, FaultSeverity]] = {
    sim_events.FaultCode.INTERLOCK_OPEN: (FaultCode.INTERLOCK_OPEN, FaultSeverity.CRITICAL),
    sim_events.FaultCode.XRAY_FAULT: (FaultCode.XRAY_TUBE, FaultSeverity.CRITICAL),
    sim_events.FaultCode.BELT_JAM: (FaultCode.BELT_JAM, FaultSeverity.ERROR),
    sim_events.FaultCode.DETECTOR_FAULT: (FaultCode.DETECTOR, FaultSeverity.ERROR),
}
"""Sim fault -> wire fault code and severity. Interlock and X-ray faults stop screening: CRITICAL."""


@dataclass(frozen=True, slots=True)
class SimTimeline:
    """A sim timeline in protocol terms.

    Attributes:
        scheduled: messages with send times (s after the firmware starts), in time order.
        item_ids: wire item id (u32) -> the sim's item id.
    """

    scheduled: tuple[Scheduled, ...]
    item_ids: dict[int, str]


def _text(message: str, limit: int = 64) -> str:
    """Cut to ``limit`` UTF-8 bytes without splitting a character (the codec refuses longer text)."""
    return message.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def from_sim_events(events: Iterable[sim_events.Event], *, counts_per_mm: float = 10.0,
                    start_s: float = 0.0) -> SimTimeline:
    """Translate ``sim.events.timeline(...)`` output; ``counts_per_mm`` must match the one the sim used.

    Raises:
        ValueError: a sim event or fault code this adapter has no translation for (add it here, do not drop it).
    """
    wire_ids: dict[str, int] = {}
    out: list[Scheduled] = []
    speed_counts_s = 0
    frames = 0

    def wire_id(item_id: str) -> int:
        if item_id not in wire_ids:
            wire_ids[item_id] = len(wire_ids)
        return wire_ids[item_id]

    for e in events:
        msgs: list[Message]
        if isinstance(e, sim_events.BeltSpeed):
            speed_counts_s = round(e.speed_mm_s * counts_per_mm)
            msgs = [BeltStatus(e.encoder, speed_counts_s, speed_counts_s != 0)]
        elif isinstance(e, sim_events.EncoderTick):
            msgs = [BeltStatus(e.encoder, speed_counts_s, speed_counts_s != 0)]
        elif isinstance(e, sim_events.XrayOn | sim_events.XrayOff):
            msgs = [XrayState(isinstance(e, sim_events.XrayOn), e.encoder)]
        elif isinstance(e, sim_events.ItemStart):
            msgs = [ItemStart(wire_id(e.item_id), e.encoder, 0)]
        elif isinstance(e, sim_events.ItemEnd):
            msgs = [ItemEnd(wire_id(e.item_id), e.encoder, 0)]
        elif isinstance(e, sim_events.FrameReady):
            msgs = [FrameReady(frames, e.encoder, e.end_line - e.first_line)]
            frames += 1
        elif isinstance(e, sim_events.Fault):
            if e.code not in FAULTS:
                raise ValueError(f"sim fault code {e.code!r} has no wire code; expected one of "
                                 + ", ".join(str(c) for c in FAULTS))
            code, severity = FAULTS[e.code]
            msgs = [Fault(code, severity, e.active, e.encoder, _text(e.message))]
            if e.code is sim_events.FaultCode.INTERLOCK_OPEN:
                msgs.append(Interlock(0, not e.active, e.encoder))
        else:
            raise ValueError(f"sim event {type(e).__name__} has no protocol message")
        out.extend(Scheduled(start_s + e.t_s, m) for m in msgs)
    out.sort(key=lambda s: s.at_s)  # stable: equal times keep the sim's order
    return SimTimeline(tuple(out), {v: k for k, v in wire_ids.items()})
