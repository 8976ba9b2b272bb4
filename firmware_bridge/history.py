"""Link state records and the history the pipeline asks "was the link down while this item was scanned?".

Sits beside the link: the link appends a ``LinkState`` on every up/down transition; the pipeline (decide stage)
calls ``LinkHistory.down_between(t0, t1)`` with an item's monotonic start/end times and marks the item
UNSCREENED when the answer is True. No I/O, thread-safe, bounded memory.

Fail-safe rules: before the first UP the link counts as down; a time older than the oldest retained record
counts as down (we no longer know); a DOWN record is backdated to the last good frame received, because the
link was already blind from then on even though the silence was only noticed a timeout later.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class LinkStatus(StrEnum):
    """Up = handshake done and frames arriving; down = anything else."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class LinkState:
    """One transition of the firmware link.

    Attributes:
        status: the new status.
        since: monotonic time (s) the status began. For DOWN, the time of the last good frame.
        wall_time: ``time.time()`` of the same instant, for logs and MQTT.
        reason: why (``"handshake ok"``, ``"read from /dev/... failed: ..."``, ``"no frame for 2.0 s"``).
        last_encoder_count: for DOWN, the last encoder count received before going blind; for UP, the
            firmware's count from its Hello. None if never known.
        gap_s: for UP after a DOWN, how long the link was down (s); None for the first UP and for DOWN.
        counts_unobserved: for UP after a DOWN, encoder counts the belt moved while the link was down
            (None if either end is unknown). Items inside this travel were never seen by the host.
    """

    status: LinkStatus
    since: float
    wall_time: float
    reason: str
    last_encoder_count: int | None = None
    gap_s: float | None = None
    counts_unobserved: int | None = None


class LinkHistory:
    """Bounded, thread-safe record of link transitions, queried by time interval."""

    def __init__(self, max_records: int = 4096) -> None:
        self._lock = threading.Lock()
        self._records: deque[LinkState] = deque(maxlen=max_records)
        self._times: deque[float] = deque(maxlen=max_records)

    def record(self, state: LinkState) -> None:
        """Append a transition. Times must not go backwards (the link guarantees it)."""
        with self._lock:
            if self._times and state.since < self._times[-1]:
                # A backdated DOWN can never precede the UP it ends; clamp rather than reorder history.
                state = LinkState(state.status, self._times[-1], state.wall_time, state.reason,
                                  state.last_encoder_count, state.gap_s, state.counts_unobserved)
            self._records.append(state)
            self._times.append(state.since)

    def down_between(self, t0: float, t1: float) -> bool:
        """True if the link was down at any instant of [t0, t1] (monotonic seconds).

        Final once an event received at or after ``t1`` has been delivered: the link records DOWN and UP
        before it delivers any event that follows a gap.
        """
        if t1 < t0:
            raise ValueError(f"t1 ({t1}) is before t0 ({t0})")
        with self._lock:
            times = list(self._times)
            records = list(self._records)
        i = bisect.bisect_right(times, t0) - 1
        if i < 0 or records[i].status is LinkStatus.DOWN:
            return True
        j = bisect.bisect_right(times, t1)
        return any(r.status is LinkStatus.DOWN for r in records[i + 1 : j])

    def current(self) -> LinkState | None:
        """The latest transition, or None if the link never came up."""
        with self._lock:
            return self._records[-1] if self._records else None

    def records(self) -> list[LinkState]:
        """A copy of the retained transitions, oldest first."""
        with self._lock:
            return list(self._records)
