"""The screening pipeline: the only module that knows the order of the stages.

Threads and bounded queues::

    intake ──q0──► stage 1 ──q1──► stage 2 … ──► stage n (returns a Decision) ──► ledger ──► publisher ──► sinks
       ▲                                                                     ▲
    FrameSource                                             watchdog (deadlines, stalls) settles overdue items

* Every item the source delivers is registered in the :class:`~edge.ledger.DecisionLedger` before anything
  else, and gets exactly one decision: its result, or UNSCREENED with a reason when a stage raised, the item
  missed its deadline, the intake queue was full (overload), the scanner link was down during the scan, the
  source reported the item unreadable, or the service stopped.
* Items announced by the scanner (item-end events) but never delivered by the source within
  ``source_stall_s`` become UNSCREENED ``source_stalled``: the box never forgets an item it was told about.
* A live source (scanner, spool) never waits: a full intake queue makes the item UNSCREENED ``overload`` at
  once, counted. Offline replay (``backpressure=True``: VOTI files, evaluation) waits for room instead.
* One item's failure never stalls the others: exceptions are caught per item; a slow item is overtaken by the
  watchdog, and its late result is dropped (counted as ``late``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge.ledger import DecisionLedger
from edge.ports import FrameSource, LinkMonitor, ResultSink
from edge.records import Decision, ItemMeta, RawItem, UnscreenedReason
from edge.stages.decide import reason_for, unscreened

log = logging.getLogger(__name__)

StageFn = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Stage:
    """One pipeline stage: ``fn`` takes the previous stage's record (the first takes a ``RawItem``).

    The last stage returns a ``Decision``. ``workers`` threads run it; inference stages release the GIL, so two
    workers keep both cores busy.
    """

    name: str
    fn: StageFn
    workers: int = 1


@dataclass(frozen=True, slots=True)
class _Work:
    meta: ItemMeta
    payload: Any
    enqueued_mono: float


@dataclass
class StageStats:
    """Per-stage counters for health records (mutated only by that stage's workers, read racily)."""

    processed: int = 0
    failed: int = 0
    busy_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


class Pipeline:
    """Runs a source through stages into sinks with the fail-safe guarantees described in the module doc."""

    def __init__(
        self,
        source: FrameSource,
        stages: Sequence[Stage],
        sinks: Sequence[ResultSink],
        *,
        queue_depth: int = 8,
        source_stall_s: float = 5.0,
        link: LinkMonitor | None = None,
        backpressure: bool = False,
        models: Sequence[Any] = (),
        clock_mono: Callable[[], float] = time.monotonic,
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self._source = source
        self._stages = list(stages)
        self._sinks = list(sinks)
        self._link = link
        self._backpressure = backpressure
        self._models = tuple(models)
        self._mono = clock_mono
        self._wall = clock_wall
        self._stall_s = source_stall_s
        self._queues: list[queue.Queue[_Work]] = [queue.Queue(maxsize=queue_depth) for _ in self._stages]
        self._publish_q: queue.Queue[Decision | None] = queue.Queue()
        self.ledger = DecisionLedger(self._publish_q.put)
        self.stats = {s.name: StageStats() for s in self._stages}
        self._announced: dict[str, tuple[ItemMeta, float]] = {}
        self._announced_lock = threading.Lock()
        self._stop_intake = threading.Event()
        self._stop_workers = threading.Event()
        self._threads: list[threading.Thread] = []
        self._publisher: threading.Thread | None = None
        self.last_progress_mono = self._mono()
        self.source_exhausted = threading.Event()
        self.on_decision: Callable[[Decision], None] | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start intake, stage workers, watchdog and publisher threads."""
        self._publisher = threading.Thread(target=self._publish_loop, name="publish", daemon=True)
        self._publisher.start()
        for index, stage in enumerate(self._stages):
            for n in range(stage.workers):
                self._spawn(f"{stage.name}-{n}", self._stage_loop, index)
        self._spawn("watchdog", self._watchdog_loop)
        self._spawn("intake", self._intake_loop)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop intake, give in-flight items until ``timeout_s`` to finish, UNSCREEN the rest, flush sinks."""
        deadline = self._mono() + timeout_s
        self._stop_intake.set()
        while self.ledger.in_flight() and self._mono() < deadline - min(2.0, timeout_s / 3):
            time.sleep(0.02)
        for meta in self.ledger.open_items():
            self._settle_unscreened(meta, UnscreenedReason.SHUTDOWN, "service stopped before the item was screened")
        with self._announced_lock:
            announced = [m for m, _ in self._announced.values()]
            self._announced.clear()
        for meta in announced:
            if self.ledger.register(meta, self._mono()):
                self._settle_unscreened(meta, UnscreenedReason.SHUTDOWN, "service stopped before frames arrived")
        self._stop_workers.set()
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - self._mono()))
        self._publish_q.put(None)
        if self._publisher is not None:
            self._publisher.join(timeout=max(0.5, deadline - self._mono()))
        for sink in self._sinks:
            try:
                sink.close(max(0.5, deadline - self._mono()))
            except Exception:
                log.exception("sink close failed", extra={"sink": type(sink).__name__})
        self._source.close()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until the source is exhausted and every item is decided and published (tests, demo, eval)."""
        end = self._mono() + timeout_s
        while self._mono() < end:
            with self._announced_lock:
                waiting = bool(self._announced)
            if (self.source_exhausted.is_set() and not self.ledger.in_flight() and not waiting
                    and self._publish_q.unfinished_tasks == 0):
                return True
            time.sleep(0.02)
        return False

    # ---------------------------------------------------------------- inputs
    def announce(self, meta: ItemMeta) -> None:
        """The scanner says this item was scanned (item-end event); its frames must follow within the stall time."""
        with self._announced_lock:
            self._announced.setdefault(meta.item_id, (meta, self._mono() + self._stall_s))

    def making_progress(self, stall_s: float) -> bool:
        """True when idle or when some stage finished an item within ``stall_s`` (the watchdog's test)."""
        if self.ledger.in_flight() == 0:
            return True
        return self._mono() - self.last_progress_mono < stall_s

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in front of each stage (for health)."""
        return {stage.name: q.qsize() for stage, q in zip(self._stages, self._queues, strict=True)}

    # ---------------------------------------------------------------- threads
    def _intake_loop(self) -> None:
        while not self._stop_intake.is_set():
            try:
                item = self._source.next_item(timeout_s=0.1)
            except Exception as exc:
                log.error("frame source failed", extra={"error": str(exc)})
                self.source_exhausted.set()
                return
            if item is None:
                if getattr(self._source, "exhausted", False):
                    self.source_exhausted.set()
                continue
            self._accept(item)

    def _accept(self, item: RawItem) -> None:
        with self._announced_lock:
            announced = self._announced.pop(item.meta.item_id, None)
        if announced is not None:
            # The scanner's own times and encoder range are the truth about when the item was scanned.
            item = replace(item, meta=announced[0])
        meta = item.meta
        now = self._mono()
        if not self.ledger.register(meta, now):
            log.warning("duplicate item from source ignored", extra={"item_id": meta.item_id})
            return
        if item.problem is not None:
            self._settle_unscreened(meta, UnscreenedReason.CORRUPT_FRAME, item.problem)
            return
        if self._link is not None and self._link.down_between(meta.scan_start_mono, meta.scan_end_mono):
            self._settle_unscreened(meta, UnscreenedReason.LINK_DOWN,
                                    "scanner link was down while the item was scanned")
            return
        if self._backpressure:
            # Offline replay (files, evaluation): nothing is moving on a belt, so wait for room instead.
            self._forward(0, _Work(meta, item, now))
            return
        try:
            self._queues[0].put_nowait(_Work(meta, item, now))
        except queue.Full:
            self._settle_unscreened(meta, UnscreenedReason.OVERLOAD,
                                    f"intake queue full ({self._queues[0].maxsize} items waiting)")

    def _stage_loop(self, index: int) -> None:
        stage = self._stages[index]
        stats = self.stats[stage.name]
        inbox = self._queues[index]
        last = index == len(self._stages) - 1
        while not self._stop_workers.is_set():
            try:
                work = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self.ledger.is_open(work.meta.item_id):
                continue  # decided meanwhile (deadline): do not spend the cores on it
            started = self._mono()
            try:
                result = stage.fn(work.payload)
            except Exception as exc:
                stats.failed += 1
                reason, detail = reason_for(exc)
                log.error("stage failed", extra={"stage": stage.name, "item_id": work.meta.item_id,
                                                 "reason": reason.value, "error": detail})
                self._settle_unscreened(work.meta, reason, f"{stage.name}: {detail}")
                continue
            finally:
                elapsed = self._mono() - started
                stats.busy_s += elapsed
                stats.latencies_ms.append(elapsed * 1000.0)
                if len(stats.latencies_ms) > 1000:
                    del stats.latencies_ms[:500]
            stats.processed += 1
            self.last_progress_mono = self._mono()
            if last:
                if not isinstance(result, Decision):
                    self._settle_unscreened(work.meta, UnscreenedReason.INTERNAL_ERROR,
                                            f"last stage returned {type(result).__name__}, not a Decision")
                elif not self.ledger.settle(result):
                    log.warning("late result dropped", extra={"item_id": work.meta.item_id})
                continue
            self._forward(index + 1, _Work(work.meta, result, self._mono()))

    def _forward(self, index: int, work: _Work) -> None:
        target = self._queues[index]
        while not self._stop_workers.is_set():
            if not self.ledger.is_open(work.meta.item_id):
                return
            try:
                target.put(work, timeout=0.1)
                return
            except queue.Full:
                continue

    def _watchdog_loop(self) -> None:
        while not self._stop_workers.is_set():
            now = self._mono()
            for meta in self.ledger.overdue(now):
                self._settle_unscreened(meta, UnscreenedReason.DEADLINE_MISSED,
                                        f"not screened within its deadline ({now - meta.scan_end_mono:.2f} s "
                                        "after the scan ended)")
            with self._announced_lock:
                stalled = [m for m, due in self._announced.values() if due <= now]
                for meta in stalled:
                    del self._announced[meta.item_id]
            for meta in stalled:
                if self.ledger.register(meta, now):
                    self._settle_unscreened(meta, UnscreenedReason.SOURCE_STALLED,
                                            f"scanner reported the item but no frames arrived within "
                                            f"{self._stall_s:.1f} s")
            time.sleep(0.02)

    def _settle_unscreened(self, meta: ItemMeta, reason: UnscreenedReason, detail: str) -> None:
        decision = unscreened(meta, reason, detail, self._wall(), self._mono(), self._models)
        if self.ledger.settle(decision):
            log.warning("item unscreened", extra={"item_id": meta.item_id, "reason": reason.value,
                                                  "detail": detail})

    def _publish_loop(self) -> None:
        while True:
            decision = self._publish_q.get()
            try:
                if decision is None:
                    return
                for sink in self._sinks:
                    try:
                        sink.publish(decision)
                    except Exception:
                        log.exception("sink failed", extra={"sink": type(sink).__name__,
                                                            "item_id": decision.item_id})
                if self.on_decision is not None:
                    self.on_decision(decision)
            finally:
                self._publish_q.task_done()
