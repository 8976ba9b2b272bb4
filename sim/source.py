"""The virtual scanner as a frame source: items arrive in real time, like a scanner's, through the same
``FrameSource`` port (``next_item``/``close``) a real scanner's source implements.

Items come from ``sim.dataset.ItemStream`` (deterministic per seed) at ``items_per_minute``; each is named
``<scanner_id>-<n>`` with n counting from 1, the id the firmware bridge gives item n (``edge.acquire``), so the
virtual firmware's item events and these frames join up. The item's ground truth rides along in
``RawItem.truth`` for tests and the demo; the pipeline never reads it. Rendering runs ahead in a background
thread so pacing is not delayed by physics. Must not: import torch.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Protocol

from edge.records import ItemMeta, RawItem
from sim.dataset import ItemStream, SimItem
from sim.scene import Preset


class SimSourceSettings(Protocol):
    """What the source needs from ``edge.config.source.SimSourceConfig`` (kept structural: sim never imports
    the runtime's config package)."""

    @property
    def seed(self) -> int: ...
    @property
    def preset(self) -> str: ...
    @property
    def threat_rate(self) -> float: ...
    @property
    def items_per_minute(self) -> float: ...
    @property
    def max_items(self) -> int | None: ...


class SimFrameSource:
    """Delivers virtual-scanner items at a steady rate until ``max_items`` (then reports itself exhausted)."""

    def __init__(self, settings: SimSourceSettings, scanner_id: str, deadline_s: float, lookahead: int = 2) -> None:
        self.stream = ItemStream(seed=settings.seed, preset=Preset(settings.preset),
                                 threat_rate=settings.threat_rate)
        self._scanner_id = scanner_id
        self._deadline_s = deadline_s
        self._period_s = 60.0 / settings.items_per_minute
        self._max = settings.max_items
        self._ready: queue.Queue[SimItem] = queue.Queue(maxsize=lookahead)
        self._stop = threading.Event()
        self._delivered = 0
        self._next_due = time.monotonic()
        self.exhausted = False
        self._thread = threading.Thread(target=self._render_loop, name="sim-render", daemon=True)
        self._thread.start()

    def _render_loop(self) -> None:
        index = 0
        while not self._stop.is_set() and (self._max is None or index < self._max):
            item = self.stream.item(index)
            while not self._stop.is_set():
                try:
                    self._ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            index += 1

    def next_item(self, timeout_s: float) -> RawItem | None:
        if self._max is not None and self._delivered >= self._max:
            self.exhausted = True
            return None
        wait = self._next_due - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        try:
            sim_item = self._ready.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None
        time.sleep(max(0.0, self._next_due - time.monotonic()))
        self._delivered += 1
        self._next_due = max(self._next_due + self._period_s, time.monotonic())
        lines = sim_item.raw.high.shape[0]
        scan_s = lines * self.stream.scanner.spec.pitch_mm / self.stream.scanner.spec.belt_speed_mm_s
        end_mono, end_wall = time.monotonic(), time.time()
        meta = ItemMeta(
            item_id=f"{self._scanner_id}-{self._delivered}",
            scanner_id=self._scanner_id,
            seq=self._delivered,
            scan_start_wall=end_wall - scan_s,
            scan_end_wall=end_wall,
            scan_start_mono=end_mono - scan_s,
            scan_end_mono=end_mono,
            deadline_mono=end_mono + self._deadline_s,
        )
        return RawItem(meta=meta, high=sim_item.raw.high, low=sim_item.raw.low, truth=sim_item.truth)

    def acknowledge(self, source_ref: str) -> None:
        """Nothing to let go: the virtual scanner keeps no files (items carry no ref)."""
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
