"""Where the belt is now and how fast it moves, from the encoder counts the firmware reports (the encoder clock).

The actions worker asks it how much belt travel is left before a parcel reaches its diverter. Every firmware event
carries an encoder count stamped with the monotonic time it was received. The speed is the controller's own
encoder speed (``BeltStatus.speed_counts_s``) while it reports one (at most ``REPORTED_SPEED_MAX_AGE_S`` old), else
the slope of the counts over the last second or so of events. The controller's figure comes first because the
receive times are the host's: frames that waited in a buffer arrive together, and a slope over them is a spike
(counts that jumped in milliseconds read as a belt at many metres a second, and parcels "passed" their diverter
on paper). Between events the position is extrapolated at that speed.

While the link is down the answer is *unknown* (None), not dead-reckoned: the belt may have stopped (an e-stop
that also cut the link) or kept going, and a divert must be neither given up on a guess nor sent late on one. The
Hello of the next session carries the true count, and the worker decides again from it.
"""

from __future__ import annotations

import threading
from collections import deque

from firmware_bridge.history import LinkState, LinkStatus
from firmware_bridge.link import ReceivedEvent
from firmware_bridge.messages import BeltStatus

SPEED_WINDOW_S = 1.0
"""Counts over about this long give the speed: long enough to average encoder and read jitter out."""
REPORTED_SPEED_MAX_AGE_S = 2.0
"""The controller's reported speed is used while its last ``BeltStatus`` is at most this old."""


class BeltEstimate:
    """Thread-safe: the link's I/O thread feeds it, the actions worker reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: deque[tuple[float, int]] = deque(maxlen=256)
        self._reported_speed: float | None = None
        self._reported_at = 0.0
        self._up = False

    def on_event(self, received: ReceivedEvent) -> None:
        with self._lock:
            self._add(received.received_at, received.encoder_count)
            if isinstance(received.event, BeltStatus):
                self._reported_speed = float(received.event.speed_counts_s)
                self._reported_at = received.received_at

    def on_state(self, state: LinkState) -> None:
        with self._lock:
            self._up = state.status is LinkStatus.UP
            if self._up and state.last_encoder_count is not None:
                # a new session: the old points say nothing about the gap; start from the Hello's count
                self._points.clear()
                self._add(state.since, state.last_encoder_count)

    def _add(self, t: float, count: int) -> None:
        if self._points and t < self._points[-1][0]:
            return
        self._points.append((t, count))
        while len(self._points) > 2 and self._points[-1][0] - self._points[1][0] >= SPEED_WINDOW_S:
            self._points.popleft()

    def speed(self) -> float | None:
        """Counts per second (>= 0), or None before anything is known."""
        with self._lock:
            return self._speed()

    def _speed(self) -> float | None:
        last = self._points[-1][0] if self._points else None
        recent = last is not None and last - self._reported_at <= REPORTED_SPEED_MAX_AGE_S
        if self._reported_speed is not None and recent:
            return max(0.0, self._reported_speed)
        if len(self._points) >= 2:
            (t0, c0), (t1, c1) = self._points[0], self._points[-1]
            if t1 - t0 >= 0.05:
                return max(0.0, (c1 - c0) / (t1 - t0))
        return None

    def position(self, now_mono: float) -> float | None:
        """Encoder count now; None while the link is down or before any count arrived."""
        with self._lock:
            if not self._up or not self._points:
                return None
            t, count = self._points[-1]
            speed = self._speed() or 0.0
            return count + speed * max(0.0, now_mono - t)
