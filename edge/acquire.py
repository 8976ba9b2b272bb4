"""Acquire: join the scanner's item events (firmware bridge) with the frame source's items.

The firmware says when an item entered and left the tunnel (photo-eye ItemStart/ItemEnd with encoder counts);
the frame source delivers its images. On ItemEnd the tracker announces the item to the pipeline with the
firmware's times and encoder range, so that (a) an item whose frames never arrive becomes UNSCREENED
``source_stalled`` and (b) the link-gap check uses the times the scanner actually scanned it. Item ids are
``<scanner_id>-<firmware item counter>``; a frame source attached to the same scanner names items the same way.
An ItemStart without its ItemEnd (the link dropped in between) is announced when the link comes back, with the
gap inside its scan window, so it is UNSCREENED ``link_down`` rather than forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.records import ItemMeta
from firmware_bridge.history import LinkState, LinkStatus
from firmware_bridge.link import ReceivedEvent
from firmware_bridge.messages import ItemEnd, ItemStart

log = logging.getLogger(__name__)


def firmware_item_id(scanner_id: str, wire_id: int) -> str:
    """The item id of firmware item ``wire_id`` (u32 counter) on this scanner."""
    return f"{scanner_id}-{wire_id}"


class ItemTracker:
    """Consumes ``ReceivedEvent``s and link states; announces each finished item once."""

    def __init__(self, scanner_id: str, deadline_s: float, announce: Callable[[ItemMeta], None],
                 clock_wall: Callable[[], float] = time.time) -> None:
        self._scanner = scanner_id
        self._deadline_s = deadline_s
        self._announce = announce
        self._wall = clock_wall
        self._open: dict[int, tuple[float, float, int]] = {}
        self._lock = threading.Lock()
        self._seq = 0

    def announce_to(self, announce: Callable[[ItemMeta], None]) -> None:
        """Set where announcements go (the pipeline is built after the link that feeds this tracker)."""
        self._announce = announce

    def scanning(self, item_id: str) -> bool:
        """True while the scanner is scanning this item (ItemStart seen, ItemEnd not yet): its frames, if they
        come first, wait for the ItemEnd that carries the scan times and belt range."""
        prefix = f"{self._scanner}-"
        if not item_id.startswith(prefix) or not item_id[len(prefix):].isdigit():
            return False
        with self._lock:
            return int(item_id[len(prefix):]) in self._open

    def on_event(self, received: ReceivedEvent) -> None:
        event = received.event
        if isinstance(event, ItemStart):
            with self._lock:
                self._open[event.item_id] = (received.received_at, self._wall(), event.encoder_count)
        elif isinstance(event, ItemEnd):
            with self._lock:
                start = self._open.pop(event.item_id, None)
            if start is None:
                # We never saw it start: the link was down then. Its scan began before anything we know.
                start = (received.received_at - 3600.0, self._wall() - 3600.0, event.encoder_count)
                log.warning("item end without start", extra={"wire_id": event.item_id})
            self._emit(event.item_id, start, received.received_at, self._wall(), event.encoder_count)

    def on_state(self, state: LinkState) -> None:
        """On link recovery, announce items that started before the gap and whose end we never saw."""
        if state.status is not LinkStatus.UP or state.gap_s is None:
            return
        with self._lock:
            orphans = dict(self._open)
            self._open.clear()
        for wire_id, start in orphans.items():
            self._emit(wire_id, start, state.since, self._wall(), None)

    def _emit(self, wire_id: int, start: tuple[float, float, int], end_mono: float, end_wall: float,
              end_count: int | None) -> None:
        self._seq += 1
        start_mono, start_wall, start_count = start
        meta = ItemMeta(
            item_id=firmware_item_id(self._scanner, wire_id),
            scanner_id=self._scanner,
            seq=self._seq,
            scan_start_wall=start_wall,
            scan_end_wall=end_wall,
            scan_start_mono=start_mono,
            scan_end_mono=end_mono,
            deadline_mono=end_mono + self._deadline_s,
            encoder_start=start_count,
            encoder_end=end_count,
        )
        self._announce(meta)


class BeltClock:
    """Belt position at any monotonic instant, from the encoder counts the firmware reports.

    Every firmware event carries an encoder count; between (and shortly after) events the position is
    interpolated (extrapolated) at the belt speed those counts imply. The exit camera stamps each frame with
    ``count_at(t)`` so that an item's frame can be chosen by belt travel.
    """

    def __init__(self, max_extrapolate_s: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._points: list[tuple[float, int]] = []
        self._max_extrapolate_s = max_extrapolate_s

    def on_event(self, received: ReceivedEvent) -> None:
        with self._lock:
            self._points.append((received.received_at, received.encoder_count))
            if len(self._points) > 64:
                del self._points[:32]

    def count_at(self, t_mono_s: float) -> float | None:
        with self._lock:
            points = list(self._points)
        if not points:
            return None
        if len(points) == 1:
            return float(points[0][1]) if abs(t_mono_s - points[0][0]) < self._max_extrapolate_s else None
        (t0, c0), (t1, c1) = points[0], points[-1]
        if t_mono_s > t1 + self._max_extrapolate_s:
            return None  # the link went quiet: do not guess where the belt is
        rate = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
        return c1 + rate * (t_mono_s - t1)
