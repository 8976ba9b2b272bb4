"""The screening pipeline: the only module that knows the order of the stages.

Item workers and one bounded intake queue::

    intake ──q──► worker 1: stage 1 → stage 2 → … → stage n (returns a Decision) ──► ledger ──► publisher ──► sinks
       ▲     └──► worker 2: stage 1 → stage 2 → … → stage n ──────────────────────┘
    FrameSource                                     watchdog (deadlines, stalls) settles overdue items

* Each worker takes one item and runs every stage on it in order; ``workers`` items are screened at once. A
  thread per stage with queues between them was measured first: on 2 cores it did 5.2 items/s at 249 CPU ms per
  item where the same stages called back to back did 14.4 items/s at 106 ms (docs/performance.md), because
  every hand-over woke a thread, moved a large image between cores and let idle stages spin. With one item per
  worker the only hand-over is intake → worker, the image stays on one core's cache, and the two workers
  overlap one item's numpy/OpenCV work with the other's inference (both release the GIL).
* Every item the source delivers is registered in the :class:`~edge.ledger.DecisionLedger` (by its ``uid``)
  and in the intake journal (:mod:`edge.journal`, on disk) before anything else, and gets exactly one decision:
  its result, or UNSCREENED with a reason when a stage raised, the item missed its deadline, the intake queue was
  full (overload), the scanner link was down during the scan, the source reported the item unreadable or
  oversize, the service stopped, or it was accepted by a run that was killed (``restart``, settled at start).
* Acknowledged intake: the publisher writes the decision into the journal ahead of the sinks, asks every sink to
  store it (a sink that cannot is asked again with back-off, the decision kept in bounded memory), and only then
  acknowledges the item to its source (the spool file moves to done/) and forgets the journal row. A crash at
  any instant therefore loses no item and decides none twice (sinks are idempotent by record id).
* A second item under an item id already used is renamed ``<id>-2`` (logged) and decided like any other.
* With a scanner link, a result is held until the link history is final for the item's scan window (the link's
  timeout after the scan: a link that went blind just after the scan only says so a timeout later, backdated),
  then checked again; frames that arrive before their ItemEnd wait for it to get the scanner's belt range.
* Items announced by the scanner (item-end events) but never delivered by the source within
  ``source_stall_s`` become UNSCREENED ``source_stalled``: the box never forgets an item it was told about.
* A live source (scanner, spool) never waits: a full intake queue makes the item UNSCREENED ``overload`` at
  once, counted. Offline replay (``backpressure=True``: VOTI files, evaluation) waits for room instead.
* One item's failure never stalls the others: exceptions are caught per item; a slow item is overtaken by the
  watchdog, and its late result is dropped (counted as ``late``). A worker stops working on an item as soon as
  it has been decided (between stages), so an overdue item does not keep a core.
* UNSCREENED decisions get the parcel outlined on the exit camera (or their raw X-ray) when ``unscreened_overlay``
  is given: settled in the ledger first, then drawn on a thread of their own (:mod:`edge.overlay_handoff`) and
  published within ``overlay_budget_s`` whether drawn or not, so no deciding thread waits for the camera.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from edge.journal import IntakeJournal
from edge.ledger import DecisionLedger
from edge.overlay_handoff import DrawUnscreened, OverlayHandOff
from edge.ports import FrameSource, LinkMonitor, ResultSink
from edge.records import (
    ConditionedItem,
    DecidedItem,
    Decision,
    DetectedItem,
    ItemMeta,
    LocalisedItem,
    ModelRef,
    RawItem,
    ScoredItem,
    UnscreenedReason,
    Verdict,
)
from edge.stages.decide import reason_for, unscreened

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")
Next = TypeVar("Next")
In_contra = TypeVar("In_contra", contravariant=True)
Out_co = TypeVar("Out_co", covariant=True)

SOURCE_RETRY_MAX_S = 2.0
"""Longest wait between two calls to a frame source that keeps raising (the wait doubles from 0.2 s)."""

SINK_RETRY_MAX_S = 5.0
"""Longest wait before a sink that could not store a decision is asked again (the wait doubles from 0.25 s)."""

MAX_UNSTORED = 1000
"""Decisions kept in memory while a sink cannot store them. Past it, their overlay pictures are dropped first,
then (past twice it) the oldest CLEAR decisions; ALARM and UNSCREENED decisions are never dropped."""


@dataclass
class _Unstored:
    """A decision some sinks have not stored yet, and when to ask them again."""

    decision: Decision
    sinks: list[ResultSink]
    attempts: int = 0
    next_try_mono: float = 0.0


class Step(Protocol[In_contra, Out_co]):
    """One step of the screening chain: takes the previous step's record and returns the next one's input."""

    def __call__(self, record: In_contra, /) -> Out_co: ...


@dataclass(frozen=True, slots=True)
class Stage(Generic[In, Out]):
    """One pipeline stage: ``fn`` takes the previous stage's record (the first takes a ``RawItem``).

    The last stage returns a ``Decision``. ``fn`` is called from several item workers at once, so it must be
    thread-safe (the stages hold no per-item state; the model sessions allow concurrent calls). ``name`` keys
    the stage's counters and latencies (``Pipeline.stats``, health, ``/metrics``).
    """

    name: str
    fn: Callable[[In], Out]


@dataclass(frozen=True, slots=True)
class Chain(Generic[In, Out]):
    """Stages composed in order: ``then`` accepts only a step whose input is this chain's output, so mypy checks
    the order (the workers run the stages one by one, which no type can follow)."""

    stages: tuple[Stage[Any, Any], ...]

    def then(self, name: str, fn: Callable[[Out], Next]) -> Chain[In, Next]:
        """This chain followed by ``fn``."""
        return Chain((*self.stages, Stage(name, fn)))


def chain(name: str, fn: Callable[[In], Out]) -> Chain[In, Out]:
    """A chain of one stage."""
    return Chain((Stage(name, fn),))


def screening_stages(
    *,
    condition: Step[RawItem, ConditionedItem],
    detect: Step[ConditionedItem, DetectedItem],
    score: Step[DetectedItem, ScoredItem],
    localise: Step[ScoredItem, LocalisedItem],
    decide: Step[LocalisedItem, DecidedItem],
    map: Step[DecidedItem, Decision],  # shadows the builtin inside this function only: the stage is "map"
) -> list[Stage[Any, Any]]:
    """The screening chain, in the one order the service runs it: condition → detect → score → localise →
    decide → map. The verdict is decided before the map step draws and maps it; the raw counts stop at
    conditioning. Each stage's name is its counter in ``Pipeline.stats``."""
    screening: Chain[RawItem, Decision] = (
        chain("condition", condition)
        .then("detect", detect)
        .then("score", score)
        .then("localise", localise)
        .then("decide", decide)
        .then("map", map)
    )
    return list(screening.stages)


@dataclass(frozen=True, slots=True)
class _Work:
    meta: ItemMeta
    payload: Any
    enqueued_mono: float


@dataclass
class StageStats:
    """Per-stage counters for health records (updated by every worker under a lock, read racily)."""

    processed: int = 0
    failed: int = 0
    busy_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, elapsed_s: float, ok: bool) -> None:
        """Count one call of the stage (the latency window keeps the last 500–1000 calls)."""
        with self._lock:
            self.busy_s += elapsed_s
            self.latencies_ms.append(elapsed_s * 1000.0)
            if len(self.latencies_ms) > 1000:
                del self.latencies_ms[:500]
            if ok:
                self.processed += 1
            else:
                self.failed += 1


class Pipeline:
    """Runs a source through stages into sinks with the fail-safe guarantees described in the module doc."""

    def __init__(
        self,
        source: FrameSource,
        stages: Sequence[Stage[Any, Any]],
        sinks: Sequence[ResultSink],
        *,
        workers: int = 2,
        queue_depth: int = 8,
        source_stall_s: float = 5.0,
        link: LinkMonitor | None = None,
        link_settle_s: float = 0.0,
        scanning: Callable[[str], bool] | None = None,
        backpressure: bool = False,
        models: Sequence[ModelRef] | Callable[[], Sequence[ModelRef]] = (),
        journal: IntakeJournal | None = None,
        on_accept: Callable[[RawItem], None] | None = None,
        unscreened_overlay: DrawUnscreened | None = None,
        overlay_budget_s: float = 2.0,
        clock_mono: Callable[[], float] = time.monotonic,
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        if workers < 1:
            raise ValueError(f"a pipeline needs at least one worker, not {workers}")
        self._workers = workers
        self._source = source
        self._stages = list(stages)
        self._sinks = list(sinks)
        self._link = link
        self._link_settle_s = link_settle_s
        self._scanning = scanning
        self._backpressure = backpressure
        fixed = tuple(models) if not callable(models) else ()
        self._model_refs: Callable[[], Sequence[ModelRef]] = models if callable(models) else (lambda: fixed)
        self._journal = journal
        self._on_accept = on_accept
        """Called with each item once it has its final identity (a restart's journal identity, an in-run rename),
        before it is screened: the audit store keeps its raw inputs under the name its record will have."""
        self._mono = clock_mono
        self._wall = clock_wall
        self._stall_s = source_stall_s
        self._intake: queue.Queue[_Work] = queue.Queue(maxsize=queue_depth)
        self._publish_q: queue.Queue[Decision | None] = queue.Queue()
        self.ledger = DecisionLedger(self._settled)
        self._overlays = (OverlayHandOff(unscreened_overlay, self._publish_q.put, overlay_budget_s)
                          if unscreened_overlay is not None else None)
        """Draws UNSCREENED overlays off the deciding threads; None: they are published without one."""
        self._overlay_inputs: dict[str, tuple[ItemMeta, RawItem | None]] = {}
        """uid -> what an UNSCREENED decision being settled is drawn from (set just before the ledger settles)."""
        self._in_work: dict[str, RawItem] = {}
        """uid -> the frames of every item a worker is screening (an item UNSCREENED meanwhile is drawn from them)."""
        self.stats = {s.name: StageStats() for s in self._stages}
        self._announced: dict[str, tuple[ItemMeta, float]] = {}
        self._announced_lock = threading.Lock()
        self._early: dict[str, tuple[RawItem, float]] = {}
        """Items whose frames came before the scanner's ItemEnd: held (by the intake thread) until it arrives."""
        self._redelivery: dict[str, tuple[ItemMeta, float]] = {}
        """Items a killed run accepted and never decided, whose source still holds them: source ref -> (the
        journal's meta, until when to wait for the source to deliver them again). Guarded by _announced_lock."""
        self._unannounced: dict[str, float] = {}
        """Items accepted before the scanner announced them (item id -> when), so that the late ItemEnd is not
        taken for an item whose frames never came."""
        self._stalled: OrderedDict[str, None] = OrderedDict()
        """Announced items already decided ``source_stalled``: frames arriving late for them are let go."""
        self._held: list[tuple[float, Decision, ItemMeta]] = []
        """Results waiting until the link history is final for their scan window (see ``link_settle_s``)."""
        self._held_lock = threading.Lock()
        self._refs: dict[str, str] = {}
        """uid -> the source's ref of every accepted item not yet acknowledged."""
        self._refs_lock = threading.Lock()
        self._unstored: list[_Unstored] = []
        """Decisions some sink has not stored yet (publisher thread only)."""
        self.unstored_dropped = 0
        self._stop_intake = threading.Event()
        self._stop_workers = threading.Event()
        self._threads: list[threading.Thread] = []
        self._publisher: threading.Thread | None = None
        self.last_progress_mono = self._mono()
        self.source_exhausted = threading.Event()
        self.source_problem: str | None = None
        """Set while the frame source keeps failing (the service reports itself degraded); cleared by its next
        good answer."""
        self.sink_problem: str | None = None
        """Set while some sink cannot store decisions (they wait in memory, their source items unacknowledged)."""
        self.on_decision: Callable[[Decision], None] | None = None
        self._intake_thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Settle what an earlier run left undecided, then start intake, workers, watchdog and publisher."""
        self._publisher = threading.Thread(target=self._publish_loop, name="publish", daemon=True)
        self._publisher.start()
        self._recover()
        for n in range(self._workers):
            self._spawn(f"worker-{n}", self._worker_loop)
        self._spawn("watchdog", self._watchdog_loop)
        self._intake_thread = self._spawn("intake", self._intake_loop)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _recover(self) -> None:
        """Items an earlier run accepted but did not finish (killed, power lost): exactly one decision each.

        A decision written ahead of the sinks is stored again (same record ids: subscribers see it once) and its
        source item acknowledged before intake starts, so the spool does not deliver it a second time. An item
        never decided whose source still holds it (the spool file is still there) is screened again when the
        source delivers it, under its journal identity (same item id and uid); one the source does not deliver
        within the stall time (gone, or a source that keeps nothing) is decided UNSCREENED ``restart``.
        """
        if self._journal is None:
            return
        leftovers = self._journal.leftovers()
        wait_until = self._mono() + max(self._stall_s, 5.0)
        for left in leftovers:
            decision = left.decision
            if decision is None and left.source_ref is not None:
                with self._announced_lock:
                    self._redelivery[left.source_ref] = (left.meta, wait_until)
                continue
            if decision is None:
                decision = unscreened(left.meta, UnscreenedReason.RESTART,
                                      "accepted before the service stopped unexpectedly (crash, kill or power "
                                      "loss) and not screened then", self._wall(), self._mono(),
                                      self._model_refs())
                # its frames went with the run that took it in, and its parcel left the camera long ago
                decision = replace(decision, overlay_note="no overlay: decided at a restart, the item's frames and "
                                                          "camera frames are gone")
                self._journal.deciding(decision)
            if left.source_ref is not None:
                with self._refs_lock:
                    self._refs[left.meta.uid] = left.source_ref
                self._acknowledge(left.source_ref)
            self.ledger.register(left.meta, self._mono())
            self.ledger.settle(decision)
        if leftovers:
            log.warning("items left undecided or unstored by the previous run: decisions stored again, items "
                        "screened again when their source delivers them", extra={
                            "items": len(leftovers), "to_screen_again": len(self._redelivery)})

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop intake, give in-flight items until ``timeout_s`` to finish, UNSCREEN the rest, flush sinks."""
        deadline = self._mono() + timeout_s
        self._stop_intake.set()
        if self._intake_thread is not None:
            # an item the source hands over now must be in the ledger before the open items are settled below
            self._intake_thread.join(timeout=max(0.1, deadline - self._mono()))
        for item, _ in list(self._early.values()):  # frames still waiting for their ItemEnd
            self._accept(item)
        self._early.clear()
        while self.ledger.in_flight() and self._mono() < deadline - min(2.0, timeout_s / 3):
            self._release_held(final=False)
            time.sleep(0.02)
        self._release_held(final=True)
        if self._overlays is not None:  # the items UNSCREENED now are drawn from the frames the camera has
            self._overlays.stopping()
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
        if self._overlays is not None:  # every UNSCREENED decision handed over reaches the publisher first
            self._overlays.close(max(0.5, deadline - self._mono()))
        self._publish_q.put(None)
        if self._publisher is not None:
            self._publisher.join(timeout=max(0.5, deadline - self._mono()))
        for sink in self._sinks:
            try:
                sink.close(max(0.5, deadline - self._mono()))
            except Exception:
                log.exception("sink close failed", extra={"sink": type(sink).__name__})
        self._source.close()
        if self._journal is not None:
            self._journal.close()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until the source is exhausted and every item is decided and published (tests, demo, eval)."""
        end = self._mono() + timeout_s
        while self._mono() < end:
            with self._announced_lock:
                waiting = bool(self._announced) or bool(self._redelivery)
            drawing = self._overlays.pending() if self._overlays is not None else 0
            if (self.source_exhausted.is_set() and not self.ledger.in_flight() and not waiting and not drawing
                    and self._publish_q.unfinished_tasks == 0):
                return True
            time.sleep(0.02)
        return False

    def problems(self) -> list[str]:
        """Why the pipeline cannot keep its promises in full right now (empty when it can): for the health model."""
        found = [p for p in (self.source_problem, self.sink_problem) if p]
        if self._journal is not None and self._journal.problem:
            found.append(self._journal.problem)
        return found

    # ---------------------------------------------------------------- inputs
    def announce(self, meta: ItemMeta) -> None:
        """The scanner says this item was scanned (item-end event); its frames must follow within the stall time.

        Frames that beat even the item's ItemStart were accepted without waiting: their late ItemEnd is matched
        here and dropped, so it does not turn into a second, ``source_stalled`` decision."""
        now = self._mono()
        with self._announced_lock:
            delivered = self._unannounced.pop(meta.item_id, None)
            if delivered is not None and now - delivered < self._stall_s:
                log.info("item end came after the item's frames; the item is already accepted",
                         extra={"item_id": meta.item_id})
                return
            self._announced.setdefault(meta.item_id, (meta, now + self._stall_s))

    def making_progress(self, stall_s: float) -> bool:
        """True when idle or when some stage finished an item within ``stall_s`` (the watchdog's test)."""
        if self.ledger.in_flight() == 0:
            return True
        return self._mono() - self.last_progress_mono < stall_s

    def queue_depths(self) -> dict[str, int]:
        """Items waiting for a worker (for health; items between stages never wait, a worker carries them)."""
        return {"intake": self._intake.qsize()}

    # ---------------------------------------------------------------- threads
    def _intake_loop(self) -> None:
        failures = 0
        while not self._stop_intake.is_set():
            self._admit_early()
            try:
                item = self._source.next_item(timeout_s=0.1)
            except Exception as exc:
                # A disk hiccup or a vanished file must not end intake for good: log, back off, ask again, and
                # say so in the service status until the source answers again.
                failures += 1
                if self.source_problem is None:  # the first error names the trouble; the text stays until recovery
                    self.source_problem = f"frame source failing: {exc}"
                log.error("frame source failed", extra={"error": str(exc), "failures": failures})
                self._stop_intake.wait(min(SOURCE_RETRY_MAX_S, 0.1 * 2 ** min(failures, 6)))
                continue
            if failures:
                log.info("frame source recovered", extra={"failures": failures})
                failures, self.source_problem = 0, None
            if item is None:
                if self._source.exhausted and not self._early:
                    # Done (files replayed): stop asking. An exhausted source may answer at once instead of
                    # waiting out the timeout, and polling it would spin a core for nothing.
                    self.source_exhausted.set()
                    return
                continue
            if self._frames_before_item_end(item):
                self._early[item.meta.item_id] = (item, self._mono() + self._stall_s)
                continue
            self._accept(item)

    def _frames_before_item_end(self, item: RawItem) -> bool:
        """True when the scanner is still scanning this item (ItemStart seen, ItemEnd not yet): its belt range
        and scan times come with the ItemEnd, so the item waits for it (at most the stall time)."""
        if self._scanning is None:
            return False
        with self._announced_lock:
            if item.meta.item_id in self._announced:
                return False
        return self._scanning(item.meta.item_id)

    def _admit_early(self) -> None:
        if not self._early:
            return
        now = self._mono()
        for item_id, (item, due) in list(self._early.items()):
            with self._announced_lock:
                announced = item_id in self._announced
            if announced or due <= now or not (self._scanning and self._scanning(item_id)):
                del self._early[item_id]
                self._accept(item)

    def _accept(self, item: RawItem) -> None:
        with self._announced_lock:
            announced = self._announced.pop(item.meta.item_id, None)
            redo = self._redelivery.pop(item.source_ref, None) if item.source_ref is not None else None
            if announced is None and self._scanning is not None:
                self._unannounced[item.meta.item_id] = self._mono()
        if announced is not None:
            # The scanner's own times and encoder range are the truth about when the item was scanned.
            item = replace(item, meta=announced[0])
        elif item.meta.item_id in self._stalled:
            # Frames for an item the scanner announced and that was already decided source_stalled: it has its
            # one decision; let the source forget these frames.
            log.warning("frames arrived after the item was decided source_stalled; not screened again",
                        extra={"item_id": item.meta.item_id})
            if item.source_ref is not None:
                self._acknowledge(item.source_ref)
            return
        if redo is not None:
            # Accepted by a killed run and never decided: screened now under its journal identity.
            item = replace(item, meta=replace(item.meta, item_id=redo[0].item_id, uid=redo[0].uid))
            log.info("item accepted before a restart is screened again", extra={"item_id": redo[0].item_id})
        meta = item.meta
        if self.ledger.item_id_in_use(meta.item_id):
            # A second item under a name already used (a file dropped twice, a counter that restarted): it is
            # another parcel and gets its own decision, under a distinct id.
            n = 2
            while self.ledger.item_id_in_use(f"{meta.item_id}-{n}"):
                n += 1
            renamed = f"{meta.item_id}-{n}"
            log.warning("item id already used in this run; the new item is renamed",
                        extra={"item_id": meta.item_id, "renamed": renamed})
            meta = replace(meta, item_id=renamed)
            item = replace(item, meta=meta)
        now = self._mono()
        if not self.ledger.register(meta, now):
            log.warning("the same item delivered twice; ignored", extra={"item_id": meta.item_id})
            return
        if self._journal is not None:
            self._journal.accept(meta, item.source_ref)
        if item.source_ref is not None:
            with self._refs_lock:
                self._refs[meta.uid] = item.source_ref
        if self._on_accept is not None:
            try:
                self._on_accept(item)
            except Exception:  # keeping a copy of the item must never cost it its decision
                log.exception("item accept hook failed", extra={"item_id": meta.item_id})
        if self._stop_workers.is_set():  # handed over after stop() gave up waiting for the source
            self._settle_unscreened(meta, UnscreenedReason.SHUTDOWN, "service stopped before the item was screened")
            return
        if item.problem is not None:
            self._settle_unscreened(meta, item.problem_reason or UnscreenedReason.CORRUPT_FRAME, item.problem,
                                    item)
            return
        if self._link is not None and self._link.down_between(meta.scan_start_mono, meta.scan_end_mono):
            self._settle_unscreened(meta, UnscreenedReason.LINK_DOWN,
                                    "scanner link was down while the item was scanned", item)
            return
        if self._backpressure or redo is not None:
            # Offline replay (files, evaluation): nothing is moving on a belt, so wait for room instead. Items a
            # killed run left in the source come back all at once at the restart: they wait their turn too,
            # rather than turning into a burst of overloads.
            self._wait_for_room(_Work(meta, item, now))
            return
        try:
            self._intake.put_nowait(_Work(meta, item, now))
        except queue.Full:
            self._settle_unscreened(meta, UnscreenedReason.OVERLOAD,
                                    f"intake queue full ({self._intake.maxsize} items waiting)", item)

    def _worker_loop(self) -> None:
        while not self._stop_workers.is_set():
            try:
                work = self._intake.get(timeout=0.1)
            except queue.Empty:
                continue
            self._screen(work)

    def _screen(self, work: _Work) -> None:
        """Run every stage on one item; settle its decision (or why it has none)."""
        if isinstance(work.payload, RawItem):
            self._in_work[work.meta.uid] = work.payload
        try:
            self._screen_stages(work)
        finally:
            self._in_work.pop(work.meta.uid, None)

    def _screen_stages(self, work: _Work) -> None:
        meta = work.meta
        record = work.payload
        for stage in self._stages:
            if not self.ledger.is_open(meta.uid):
                return  # decided meanwhile (deadline, shutdown): do not spend the cores on it
            stats = self.stats[stage.name]
            started = self._mono()
            try:
                record = stage.fn(record)
            except Exception as exc:
                stats.record(self._mono() - started, ok=False)
                reason, detail = reason_for(exc)
                log.error("stage failed", extra={"stage": stage.name, "item_id": meta.item_id,
                                                 "reason": reason.value, "error": detail})
                self._settle_unscreened(meta, reason, f"{stage.name}: {detail}")
                return
            stats.record(self._mono() - started, ok=True)
            self.last_progress_mono = self._mono()
        if not isinstance(record, Decision):
            self._settle_unscreened(meta, UnscreenedReason.INTERNAL_ERROR,
                                    f"last stage returned {type(record).__name__}, not a Decision")
            return
        if self._link is not None and record.verdict is not Verdict.UNSCREENED:
            final_at = meta.scan_end_mono + self._link_settle_s
            if self._mono() < final_at:
                # The link may have gone blind just after the scan and not know it yet (it declares DOWN a
                # timeout later, backdated): hold the result until the history is final for the scan window.
                with self._held_lock:
                    self._held.append((final_at, record, meta))
                return
        self._settle_result(record, meta)

    def _settle_result(self, decision: Decision, meta: ItemMeta) -> None:
        if (self._link is not None and decision.verdict is not Verdict.UNSCREENED
                and self._link.down_between(meta.scan_start_mono, meta.scan_end_mono)):
            self._settle_unscreened(meta, UnscreenedReason.LINK_DOWN,
                                    "scanner link was down while the item was scanned (found after screening)")
            return
        if not self.ledger.settle(decision):
            log.warning("late result dropped", extra={"item_id": meta.item_id})

    def _release_held(self, final: bool) -> None:
        """Settle held results whose scan window the link history now covers (all of them when ``final``)."""
        now = self._mono()
        with self._held_lock:
            due = [h for h in self._held if final or h[0] <= now]
            self._held = [h for h in self._held if not (final or h[0] <= now)]
        for _, decision, meta in due:
            self._settle_result(decision, meta)

    def _wait_for_room(self, work: _Work) -> None:
        while not self._stop_workers.is_set():
            if not self.ledger.is_open(work.meta.uid):
                return
            try:
                self._intake.put(work, timeout=0.1)
                return
            except queue.Full:
                continue

    def _watchdog_loop(self) -> None:
        while not self._stop_workers.is_set():
            self._release_held(final=False)
            if self._overlays is not None:
                self._overlays.expire()
            now = self._mono()
            for meta in self.ledger.overdue(now):
                self._settle_unscreened(meta, UnscreenedReason.DEADLINE_MISSED,
                                        f"not screened within its deadline ({now - meta.scan_end_mono:.2f} s "
                                        "after the scan ended)")
            with self._announced_lock:
                stalled = [m for m, due in self._announced.values() if due <= now]
                for meta in stalled:
                    del self._announced[meta.item_id]
                for item_id, seen in list(self._unannounced.items()):
                    if now - seen >= self._stall_s:
                        del self._unannounced[item_id]
                never_again = [(ref, m) for ref, (m, due) in self._redelivery.items() if due <= now]
                for ref, _ in never_again:
                    del self._redelivery[ref]
            for ref, meta in never_again:
                if self.ledger.register(meta, now):
                    with self._refs_lock:
                        self._refs[meta.uid] = ref
                    self._settle_unscreened(meta, UnscreenedReason.RESTART,
                                            "accepted before the service stopped unexpectedly (crash, kill or "
                                            "power loss) and not delivered again by its source")
            for meta in stalled:
                if self.ledger.register(meta, now):
                    self._stalled[meta.item_id] = None
                    while len(self._stalled) > 10_000:
                        self._stalled.popitem(last=False)
                    if self._journal is not None:
                        self._journal.accept(meta, None)
                    self._settle_unscreened(meta, UnscreenedReason.SOURCE_STALLED,
                                            f"scanner reported the item but no frames arrived within "
                                            f"{self._stall_s:.1f} s")
            time.sleep(0.02)

    def _settle_unscreened(self, meta: ItemMeta, reason: UnscreenedReason, detail: str,
                           raw: RawItem | None = None) -> None:
        decision = unscreened(meta, reason, detail, self._wall(), self._mono(), self._model_refs())
        if self._overlays is not None:
            self._overlay_inputs[meta.uid] = (meta, raw if raw is not None else self._in_work.get(meta.uid))
        try:
            settled = self.ledger.settle(decision)
        finally:
            self._overlay_inputs.pop(meta.uid, None)
        if settled:
            log.warning("item unscreened", extra={"item_id": meta.item_id, "reason": reason.value,
                                                  "detail": detail})

    # ---------------------------------------------------------------- publishing
    def _settled(self, decision: Decision) -> None:
        """The ledger accepted ``decision``: publish it, an UNSCREENED one once its overlay is drawn (bounded)."""
        inputs = self._overlay_inputs.pop(decision.item_uid, None)
        if self._overlays is not None and inputs is not None and decision.verdict is Verdict.UNSCREENED:
            self._overlays.submit(decision, *inputs)
            return
        self._publish_q.put(decision)

    def _publish_loop(self) -> None:
        while True:
            try:
                decision = self._publish_q.get(timeout=0.25 if self._unstored else None)
            except queue.Empty:
                self._retry_unstored(final=False)
                continue
            try:
                if decision is None:
                    self._retry_unstored(final=True)
                    return
                if self._journal is not None:
                    self._journal.deciding(decision)  # ahead of the sinks: a crash now repeats this decision
                self._store(_Unstored(decision, list(self._sinks)))
                if self.on_decision is not None:
                    try:  # a failing observer must not stop the decisions after this one
                        self.on_decision(decision)
                    except Exception:
                        log.exception("decision callback failed", extra={"item_id": decision.item_id})
                self._retry_unstored(final=False)
            finally:
                self._publish_q.task_done()

    def _store(self, entry: _Unstored) -> None:
        """Ask every sink that has not stored ``entry`` yet; acknowledge the source item once all have."""
        failed = []
        for sink in entry.sinks:
            try:
                sink.publish(entry.decision)
            except Exception as exc:
                failed.append(sink)
                if entry.attempts == 0:
                    log.error("sink could not store the decision; kept in memory and retried",
                              extra={"sink": type(sink).__name__, "item_id": entry.decision.item_id,
                                     "error": str(exc)})
                # stable text (no item id): the health model publishes the status again whenever a reason changes
                self.sink_problem = (f"{type(sink).__name__} cannot store decisions; they wait in memory and their "
                                     "source items stay unacknowledged")
        if not failed:
            self._finish(entry.decision)
            return
        entry.sinks = failed
        entry.attempts += 1
        entry.next_try_mono = self._mono() + min(SINK_RETRY_MAX_S, 0.25 * 2 ** min(entry.attempts - 1, 5))
        if entry not in self._unstored:
            self._unstored.append(entry)
            self._bound_unstored()

    def _retry_unstored(self, final: bool) -> None:
        if not self._unstored:
            return
        now = self._mono()
        due = [e for e in self._unstored if final or e.next_try_mono <= now]
        for entry in due:
            self._unstored.remove(entry)
            self._store(entry)
        if final and self._unstored:
            log.error("decisions not stored by every sink at stop; the intake journal repeats them at the next "
                      "start", extra={"decisions": len(self._unstored)})
        if not self._unstored and self.sink_problem is not None:
            log.info("every sink stores decisions again")
            self.sink_problem = None

    def _bound_unstored(self) -> None:
        """Keep memory flat while a sink cannot store: pictures go first, then the oldest CLEARs, never alarms."""
        if len(self._unstored) <= MAX_UNSTORED:
            return
        for entry in self._unstored[: len(self._unstored) - MAX_UNSTORED]:
            if entry.decision.overlay_jpeg is not None:
                entry.decision = replace(entry.decision, overlay_jpeg=None,
                                         overlay_note="picture dropped: decision waited too long to be stored")
        excess = len(self._unstored) - 2 * MAX_UNSTORED
        if excess > 0:
            clears = [e for e in self._unstored if e.decision.verdict is Verdict.CLEAR][:excess]
            for entry in clears:
                self._unstored.remove(entry)
            self.unstored_dropped += len(clears)
            log.error("CLEAR decisions dropped unstored (a sink has failed for long)",
                      extra={"dropped": len(clears), "total_dropped": self.unstored_dropped})

    def _finish(self, decision: Decision) -> None:
        """Every sink stored ``decision``: the source may let the item go, and the journal forget it."""
        with self._refs_lock:
            ref = self._refs.pop(decision.item_uid, None)
        if ref is not None:
            self._acknowledge(ref)
        if self._journal is not None:
            self._journal.done(decision.item_uid)

    def _acknowledge(self, ref: str) -> None:
        try:
            self._source.acknowledge(ref)
        except Exception:
            log.exception("source could not acknowledge an item", extra={"ref": ref})
