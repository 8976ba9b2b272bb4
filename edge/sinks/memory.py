"""An in-memory sink: the demo's and the tests' window on every decision, in order, thread-safe."""

from __future__ import annotations

import threading

from edge.records import Decision


class MemorySink:
    """Keeps every decision it is given; ``wait_for(n)`` blocks until n have arrived."""

    def __init__(self) -> None:
        self._items: list[Decision] = []
        self._cond = threading.Condition()
        self.closed = False

    def publish(self, decision: Decision) -> None:
        with self._cond:
            self._items.append(decision)
            self._cond.notify_all()

    def close(self, timeout_s: float) -> None:
        self.closed = True

    @property
    def decisions(self) -> list[Decision]:
        """A copy of what arrived so far."""
        with self._cond:
            return list(self._items)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """True once ``count`` decisions have arrived, False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._items) >= count, timeout=timeout_s)
