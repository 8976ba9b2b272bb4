"""Overlays for UNSCREENED decisions, drawn off the threads that decide them and bounded in time.

Why a thread of its own: an item becomes UNSCREENED on the intake thread (corrupt frame, link down, overload), on a
screening worker (a stage failed, the quality gate), on the watchdog (deadline, source stalled, restart) or in
``Pipeline.stop`` (shutdown). None of them may wait for the exit camera (the parcel may still be on its way to
it, ``camera.wait_s``) or for a JPEG encoder: intake would overflow, a worker would stop screening, the watchdog
would miss deadlines. So the decision is settled in the ledger first (its verdict is fixed: a late result can no
longer replace it), then handed here; one ``unscreened-overlay`` thread draws it and forwards it to the publisher.

The fail-safe promise comes first. Each decision is forwarded by ``due`` (``budget_s`` after it was handed over)
whatever happens: :meth:`OverlayHandOff.expire` (called by the pipeline's watchdog every 20 ms) forwards any
decision still waiting or still being drawn at its due time without a picture, ``overlay_note`` saying why; a
draw that raises is caught and the decision forwarded as it was; past ``max_waiting`` decisions waiting, a new
one is forwarded at once without a picture; and :meth:`close` (at stop) forwards everything left by its timeout.
Each decision is forwarded exactly once (a draw that finishes after its due time is dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from edge.records import Decision, ItemMeta, RawItem

log = logging.getLogger(__name__)

DrawUnscreened = Callable[[Decision, ItemMeta, RawItem | None, float], Decision]
"""Draws the overlay of an UNSCREENED decision (``edge.stages.map.UnscreenedOverlay``); the float is the
monotonic time its camera wait must end by (now or earlier: do not wait)."""

MAX_WAITING = 8
"""Decisions waiting for their overlay at most; past it a new one goes out at once without a picture. Each holds its
item's frames (up to ~5 MB), and a burst of UNSCREENED items (overload) must not spend the cores the screening
lacks on pictures."""

DRAW_MARGIN_S = 0.5
"""The camera wait ends this long before the decision's due time, leaving the time to draw and encode."""


@dataclass
class _Entry:
    decision: Decision
    meta: ItemMeta
    raw: RawItem | None
    due_mono: float
    forwarded: bool = False


class OverlayHandOff:
    """Draws UNSCREENED overlays on one thread and forwards each decision by its due time, drawn or not.

    ``forward`` is called under the hand-off's lock (so ``pending`` never misses a decision in transit) and must
    not block: the pipeline passes its publish queue's ``put``.
    """

    def __init__(self, draw: DrawUnscreened, forward: Callable[[Decision], None], budget_s: float,
                 max_waiting: int = MAX_WAITING, clock: Callable[[], float] = time.monotonic) -> None:
        if budget_s <= 0:
            raise ValueError(f"budget_s must be > 0, not {budget_s}")
        self._draw = draw
        self._forward = forward
        self._budget_s = budget_s
        self._max_waiting = max_waiting
        self._clock = clock
        self._lock = threading.Condition()
        self._waiting: deque[_Entry] = deque()
        self._drawing: _Entry | None = None
        self._closing = False
        self._no_wait = False
        self.expired = 0
        """Decisions forwarded without a picture because drawing took longer than the budget."""
        self._thread = threading.Thread(target=self._run, name="unscreened-overlay", daemon=True)
        self._thread.start()

    def submit(self, decision: Decision, meta: ItemMeta, raw: RawItem | None) -> None:
        """Hand over a settled UNSCREENED decision; it is forwarded within ``budget_s`` whatever happens."""
        with self._lock:
            refuse = None
            if self._closing:
                refuse = "service stopping: overlay not drawn"
            elif len(self._waiting) >= self._max_waiting:
                refuse = f"overlay not drawn: {len(self._waiting)} unscreened overlays already waiting"
            if refuse is None:
                self._waiting.append(_Entry(decision, meta, raw, self._clock() + self._budget_s))
                self._lock.notify()
                return
            self._forward(replace(decision, overlay_note=refuse))

    def pending(self) -> int:
        """Decisions handed over and not forwarded yet (``Pipeline.wait_idle`` counts them)."""
        with self._lock:
            return len(self._waiting) + (1 if self._drawing is not None and not self._drawing.forwarded else 0)

    def expire(self, now_mono: float | None = None) -> None:
        """Forward, without a picture, every decision whose due time has passed (waiting or being drawn)."""
        now = self._clock() if now_mono is None else now_mono
        late: list[_Entry] = []
        with self._lock:
            while self._waiting and self._waiting[0].due_mono <= now:
                late.append(self._waiting.popleft())
            if self._drawing is not None and not self._drawing.forwarded and self._drawing.due_mono <= now:
                late.append(self._drawing)
            for entry in late:
                entry.forwarded = True
                self._forward(replace(entry.decision,
                                      overlay_note=f"overlay not drawn within {self._budget_s:.1f} s"))
            self.expired += len(late)
        for entry in late:
            log.warning("unscreened overlay not drawn in time; decision published without it",
                        extra={"item_id": entry.meta.item_id, "budget_s": self._budget_s})

    def stopping(self) -> None:
        """The service is stopping: draw from what the camera ring holds now, never wait for a frame."""
        with self._lock:
            self._no_wait = True

    def close(self, timeout_s: float) -> None:
        """Stop taking decisions; let those waiting finish until their due time or ``timeout_s``, then forward
        the rest without a picture. Every decision handed over has been forwarded when this returns."""
        end = self._clock() + max(0.0, timeout_s)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        while self.pending() and self._clock() < end:
            self.expire()
            time.sleep(0.02)
        self.expire(float("inf"))
        self._thread.join(timeout=0.5)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closing:
                    self._lock.wait()
                if not self._waiting:
                    return
                entry = self._waiting.popleft()
                self._drawing = entry
                hurry = self._closing or self._no_wait
            # while stopping, never wait for the camera: draw what the ring already holds
            until = self._clock() if hurry else entry.due_mono - DRAW_MARGIN_S
            try:
                drawn = self._draw(entry.decision, entry.meta, entry.raw, until)
            except Exception as exc:  # the overlay must never cost the decision
                log.exception("unscreened overlay failed", extra={"item_id": entry.meta.item_id})
                drawn = replace(entry.decision, overlay_note=f"overlay failed: {exc}")
            if drawn.verdict is not entry.decision.verdict or drawn.item_uid != entry.decision.item_uid:
                log.error("unscreened overlay changed the decision; published without it",
                          extra={"item_id": entry.meta.item_id})
                drawn = replace(entry.decision, overlay_note="overlay dropped: the renderer changed the decision")
            with self._lock:
                self._drawing = None
                late = entry.forwarded
                if not late:
                    entry.forwarded = True
                    self._forward(drawn)
            if late:
                log.info("unscreened overlay finished after its decision was published; dropped",
                         extra={"item_id": entry.meta.item_id})
