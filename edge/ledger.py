"""Exactly one decision per item: the ledger every path (result, failure, deadline, shutdown) settles through.

Several threads may try to decide the same item: the worker that finished it, the watchdog that saw its
deadline pass, the shutdown path. The first settle wins; later ones are counted as late and dropped, so a
subscriber never sees two decisions for one item and never sees none.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from edge.records import Decision, ItemMeta


@dataclass(frozen=True, slots=True)
class Pending:
    """An item that has entered the pipeline and awaits its decision."""

    meta: ItemMeta
    accepted_mono: float


class DecisionLedger:
    """Tracks in-flight items and forwards each item's first decision to ``on_settled``."""

    def __init__(self, on_settled: Callable[[Decision], None]) -> None:
        self._on_settled = on_settled
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._settled_ids: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.late = 0

    def register(self, meta: ItemMeta, now_mono: float) -> bool:
        """Start tracking ``meta``; False if an item with that id was already seen (a duplicate delivery)."""
        with self._lock:
            if meta.item_id in self._pending or meta.item_id in self._settled_ids:
                return False
            self._pending[meta.item_id] = Pending(meta, now_mono)
            return True

    def is_open(self, item_id: str) -> bool:
        """True while the item still awaits its decision (workers skip items already decided)."""
        with self._lock:
            return item_id in self._pending

    def settle(self, decision: Decision) -> bool:
        """Record ``decision`` if it is the item's first; True if it was accepted and forwarded."""
        with self._lock:
            if decision.item_id not in self._pending:
                self.late += 1
                return False
            del self._pending[decision.item_id]
            self._settled_ids.add(decision.item_id)
            if len(self._settled_ids) > 100_000:
                # Keep memory flat over long runs: ids this old can no longer be redelivered by a source.
                self._settled_ids = set(list(self._settled_ids)[-50_000:])
            self.counts[decision.verdict.value] += 1
        self._on_settled(decision)
        return True

    def overdue(self, now_mono: float) -> list[ItemMeta]:
        """Items whose deadline has passed and that are still undecided."""
        with self._lock:
            return [p.meta for p in self._pending.values() if p.meta.deadline_mono <= now_mono]

    def open_items(self) -> list[ItemMeta]:
        """Every undecided item (for shutdown)."""
        with self._lock:
            return [p.meta for p in self._pending.values()]

    def in_flight(self) -> int:
        """Number of undecided items."""
        with self._lock:
            return len(self._pending)
