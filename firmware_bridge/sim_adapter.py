"""Adapter: the virtual scanner's event timeline (``sim.events``) -> the virtual firmware's ``Scheduled`` messages.

The sim's events are the protocol's own messages (``firmware_bridge.messages``) stamped with a time, so this only
schedules them: each event's ``messages`` at ``start_s + t_s``. Typed structurally (:class:`TimedMessages`) so that
the firmware bridge never imports ``sim`` (the sim imports the bridge's messages, not the reverse). Pure and eager;
no I/O. Not imported by the runtime.

The protocol's item ids are u32 counted by the firmware, the sim's are strings: ``SimTimeline.item_ids`` maps
wire ids back to sim ids, so a test or the demo can match decisions to ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from firmware_bridge.messages import ItemStart, Message
from firmware_bridge.virtual import Scheduled


class TimedMessages(Protocol):
    """What the adapter needs of a ``sim.events`` event."""

    @property
    def t_s(self) -> float: ...
    @property
    def messages(self) -> tuple[Message, ...]: ...
    @property
    def sim_item(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SimTimeline:
    """A sim timeline in protocol terms.

    Attributes:
        scheduled: messages with send times (s after the firmware starts), in time order.
        item_ids: wire item id (u32) -> the sim's item id.
    """

    scheduled: tuple[Scheduled, ...]
    item_ids: dict[int, str]


def from_sim_events(events: Iterable[TimedMessages], *, start_s: float = 0.0) -> SimTimeline:
    """Schedule ``sim.events.timeline(...)`` output (its messages already carry the sim's encoder counts)."""
    out: list[Scheduled] = []
    item_ids: dict[int, str] = {}
    for e in events:
        for m in e.messages:
            if isinstance(m, ItemStart) and e.sim_item is not None:
                item_ids[m.item_id] = e.sim_item
            out.append(Scheduled(start_s + e.t_s, m))
    out.sort(key=lambda s: s.at_s)  # stable: equal times keep the sim's order
    return SimTimeline(tuple(out), item_ids)
