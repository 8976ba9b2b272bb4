"""Exactly one decision per item: the ledger every path (result, failure, deadline, shutdown) settles through.

Several threads may try to decide the same item: the worker that finished it, the watchdog that saw its
deadline pass, the shutdown path. The first settle wins; later ones are counted as late and dropped, so a
subscriber never sees two decisions for one item and never sees none.

Items are keyed by ``ItemMeta.uid`` (drawn once per accepted item), not by ``item_id``: two different items may
carry the same item id (a file dropped twice, a firmware counter that restarted) and each gets its decision.
The pipeline asks :meth:`DecisionLedger.item_id_in_use` to give the second one a distinct id. The memory of
settled items is bounded and forgets the *oldest* first (insertion order), so an item just decided is never
forgotten while an old one is still remembered.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from edge.records import Decision, ItemMeta

SETTLED_MEMORY = 100_000
"""How many settled items (uids and item ids) the ledger remembers; the oldest are forgotten first."""


@dataclass(frozen=True, slots=True)
class Pending:
    """An item that has entered the pipeline and awaits its decision."""

    meta: ItemMeta
    accepted_mono: float


class DecisionLedger:
    """Tracks in-flight items and forwards each item's first decision to ``on_settled``."""

    def __init__(self, on_settled: Callable[[Decision], None], memory: int = SETTLED_MEMORY) -> None:
        self._on_settled = on_settled
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._memory = memory
        self._settled_uids: OrderedDict[str, None] = OrderedDict()
        self._item_ids: OrderedDict[str, None] = OrderedDict()
        """Item ids seen recently (open or settled), oldest first: a new item reusing one is renamed."""
        self.counts: Counter[str] = Counter()
        self.late = 0

    def _remember(self, table: OrderedDict[str, None], key: str) -> None:
        table[key] = None
        table.move_to_end(key)
        while len(table) > self._memory:
            table.popitem(last=False)

    def item_id_in_use(self, item_id: str) -> bool:
        """True if an item with this id is open or was settled recently (within the ledger's memory)."""
        with self._lock:
            return item_id in self._item_ids

    def register(self, meta: ItemMeta, now_mono: float) -> bool:
        """Start tracking ``meta``; False if this very item (its uid) was already seen (a duplicate delivery)."""
        with self._lock:
            if meta.uid in self._pending or meta.uid in self._settled_uids:
                return False
            self._pending[meta.uid] = Pending(meta, now_mono)
            self._remember(self._item_ids, meta.item_id)
            return True

    def is_open(self, uid: str) -> bool:
        """True while the item (by uid) still awaits its decision (workers skip items already decided)."""
        with self._lock:
            return uid in self._pending

    def settle(self, decision: Decision) -> bool:
        """Record ``decision`` if it is the item's first; True if it was accepted and forwarded."""
        with self._lock:
            if decision.item_uid not in self._pending:
                self.late += 1
                return False
            del self._pending[decision.item_uid]
            self._remember(self._settled_uids, decision.item_uid)
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
