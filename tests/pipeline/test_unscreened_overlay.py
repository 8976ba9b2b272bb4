"""UNSCREENED decisions get the parcel outlined on the exit camera (or their raw X-ray), and the overlay never
delays or drops them.

The pipeline is the real one with the real map-step renderers (``UnscreenedOverlay`` over a
``CameraOverlayRenderer``: a frame ring, the mapping from the virtual camera's true calibration); the frame
source is a list of items with belt positions (as the scanner's firmware gives them), and the camera is a thread
pushing frames into the ring with the belt's encoder counts, as the capture thread does. The faults: a camera
whose parcel has not reached it within the wait (a slow belt), a renderer that hangs (a stuck camera driver)
and one that raises. Each decision's publication time is measured from the moment the item failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.camera.mapping import CameraMapper
from edge.camera.ring import FrameRing, StampedFrame
from edge.config.camera import CameraConfig
from edge.errors import BackendError
from edge.pipeline import Pipeline, Stage
from edge.records import Decision, ItemMeta, RawItem, UnscreenedReason, Verdict
from edge.sinks.memory import MemorySink
from edge.stages.decide import decide
from edge.stages.map import CameraOverlayRenderer, CameraView, UnscreenedOverlay
from sim.camera import ExitCamera
from tests.camera.camera_helpers import calibration_from_truth

LINES, CHANNELS = 300, 320
COUNTS_PER_MM = 10.0
BUDGET_S = 1.0
SLACK_S = 0.6
"""What the shared 2-core machine may add to a bound (thread wake-ups, the watchdog's 20 ms period)."""


class _Items:
    """Items with belt positions, handed over one by one; ``failing`` ones raise in the stage below."""

    def __init__(self, items: list[RawItem]) -> None:
        self._items = list(items)
        self.exhausted = False

    def next_item(self, timeout_s: float) -> RawItem | None:
        if not self._items:
            self.exhausted = True
            time.sleep(min(timeout_s, 0.05))
            return None
        return self._items.pop(0)

    def acknowledge(self, ref: str) -> None:
        pass

    def close(self) -> None:
        pass


def _item(n: int, start_count: int, *, problem: str | None = None, deadline_s: float = 30.0) -> RawItem:
    now, wall = time.monotonic(), time.time()
    end_count = start_count + int(LINES * 0.8 * COUNTS_PER_MM)
    meta = ItemMeta(f"lane1-{n}", "lane1", n, wall, wall, now, now, now + deadline_s, start_count, end_count)
    if problem is not None:
        return RawItem(meta, problem=problem)
    rng = np.random.default_rng(n)
    high = rng.integers(20_000, 60_000, size=(LINES, CHANNELS), dtype=np.uint16)
    high[100:200, 80:240] //= 4  # the parcel: a darker block
    return RawItem(meta, high=high, low=high.copy())


def _stage(failing: set[str]) -> Stage[Any, Any]:
    def screen(item: RawItem) -> Decision:
        if item.meta.item_id in failing:
            raise BackendError("inference failed on the accelerator")
        return decide(item.meta, [], time.time(), time.monotonic())
    return Stage("screen", screen)


class _Belt:
    """The camera side: frames pushed into the ring every 50 ms at the belt's count (the capture thread)."""

    def __init__(self, ring: FrameRing, count: Iterator[float]) -> None:
        self._ring, self._count = ring, count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._image = np.full((360, 640, 3), 90, np.uint8)
        self._image.setflags(write=False)

    def __enter__(self) -> _Belt:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(0.05):
            self._ring.push(StampedFrame(self._image, time.monotonic(), next(self._count), seq))
            seq += 1


def _renderer(ring: FrameRing, wait_s: float) -> tuple[CameraOverlayRenderer, CameraMapper, CameraConfig]:
    cam = ExitCamera()
    mapper = CameraMapper(calibration_from_truth(cam))
    cfg = CameraConfig(device="virtual", fps=20.0, wait_s=wait_s, encoder_mm_per_count=1 / COUNTS_PER_MM)
    return CameraOverlayRenderer(ring, mapper, cfg), mapper, cfg


def _at_camera(mapper: CameraMapper, start_count: int) -> Iterator[float]:
    """Belt counts that keep the item's centre under the camera's view centre (the frame the overlay needs)."""
    wanted = start_count + (mapper.view_centre_travel_mm() + LINES * mapper.pitch_mm / 2) * COUNTS_PER_MM
    while True:
        yield wanted


def _never_there(start_count: int) -> Iterator[float]:
    """A belt that creeps: the item never reaches the camera (its frames keep coming, always short of it)."""
    count = float(start_count)
    while True:
        count += 1.0
        yield count


def _run(items: list[RawItem], failing: set[str], draw: Any, n: int,
         **kwargs: Any) -> tuple[Pipeline, MemorySink, dict[str, float]]:
    sink = MemorySink()
    published: dict[str, float] = {}
    pipeline = Pipeline(_Items(items), [_stage(failing)], [sink], workers=1, unscreened_overlay=draw,
                        overlay_budget_s=BUDGET_S, **kwargs)
    pipeline.on_decision = lambda d: published.setdefault(d.item_id, time.monotonic())
    pipeline.start()
    try:
        assert sink.wait_for(n, timeout_s=20), f"only {len(sink.decisions)} of {n} decisions"
    finally:
        pipeline.stop(timeout_s=5)
    return pipeline, sink, published


def _picture(decision: Decision) -> np.ndarray[Any, Any]:
    assert decision.overlay_jpeg is not None, decision.overlay_note
    img = cv2.imdecode(np.frombuffer(decision.overlay_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img)


def test_a_stage_failure_is_published_with_the_parcel_outlined_on_the_camera_frame() -> None:
    ring = FrameRing(200)
    renderer, mapper, _ = _renderer(ring, wait_s=0.0)
    with _Belt(ring, _at_camera(mapper, 50_000)):
        while len(ring) < 2:
            time.sleep(0.02)
        _, sink, _ = _run([_item(1, 50_000)], {"lane1-1"}, UnscreenedOverlay(renderer), 1)
    decision = sink.decisions[0]
    assert decision.verdict is Verdict.UNSCREENED and decision.reason is UnscreenedReason.MODEL_ERROR
    assert decision.overlay_note is None, decision.overlay_note
    img = _picture(decision)
    assert img.shape[:2] == (360, 640)  # the camera frame, not the X-ray
    # the whole scanned area outlined: the white line runs where the mapping puts the item's corners
    white = img.min(axis=2) >= 200
    assert white.sum() > 200
    found = 0
    dist = cv2.distanceTransform((~white).astype(np.uint8), cv2.DIST_L2, 5)
    travel = (next(_at_camera(mapper, 50_000)) - 50_000) / COUNTS_PER_MM
    corners = mapper.xray_to_camera(np.array([[-0.5, -0.5], [CHANNELS - 0.5, -0.5], [CHANNELS - 0.5, LINES - 0.5],
                                              [-0.5, LINES - 0.5]]), travel, None)
    for x, y in corners:
        if 0 <= x < 640 and 0 <= y < 360:
            found += 1
            assert dist[round(y), round(x)] <= 3.0, (x, y, dist[round(y), round(x)])
    assert found >= 2, corners


def test_an_item_without_frames_is_outlined_from_its_encoder_counts() -> None:
    ring = FrameRing(200)
    renderer, mapper, _ = _renderer(ring, wait_s=0.0)
    renderer.channels = CHANNELS  # an earlier item with frames told the renderer the detector's width
    with _Belt(ring, _at_camera(mapper, 80_000)):
        while len(ring) < 2:
            time.sleep(0.02)
        _, sink, _ = _run([_item(2, 80_000, problem="truncated file")], set(), UnscreenedOverlay(renderer), 1)
    decision = sink.decisions[0]
    assert decision.reason is UnscreenedReason.CORRUPT_FRAME
    assert decision.overlay_note is None, decision.overlay_note
    assert _picture(decision).shape[:2] == (360, 640)


def test_a_camera_the_parcel_has_not_reached_costs_at_most_the_budget_and_the_xray_is_shown() -> None:
    """camera.wait_s is 10 s but the decision waits at most its overlay budget, then shows the raw X-ray."""
    ring = FrameRing(400)
    renderer, _, _ = _renderer(ring, wait_s=10.0)
    with _Belt(ring, _never_there(10_000)):
        while len(ring) < 2:
            time.sleep(0.02)
        started = time.monotonic()
        _, sink, published = _run([_item(3, 10_000)], {"lane1-3"}, UnscreenedOverlay(renderer), 1)
    decision = sink.decisions[0]
    assert decision.verdict is Verdict.UNSCREENED
    assert published["lane1-3"] - started <= BUDGET_S + SLACK_S, published["lane1-3"] - started
    assert decision.overlay_note is not None and "not under the camera yet" in decision.overlay_note
    assert "raw X-ray" in decision.overlay_note
    assert _picture(decision).shape[:2] == (LINES, CHANNELS)


class _Stuck:
    """A camera renderer that never returns (a hung driver) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def parcel(self, meta: ItemMeta, verdict: str, shape: tuple[int, int] | None, until_mono: float) -> CameraView:
        self.calls += 1
        self.release.wait(60)
        return CameraView(None, "released")


class _Broken:
    def parcel(self, meta: ItemMeta, verdict: str, shape: tuple[int, int] | None, until_mono: float) -> CameraView:
        raise RuntimeError("camera driver crashed")


def test_a_hung_camera_never_holds_an_unscreened_decision_past_its_budget_nor_other_items() -> None:
    stuck = _Stuck()
    items = [_item(n, 1000 * n) for n in range(1, 7)]
    failing = {"lane1-2", "lane1-4", "lane1-5"}
    started = time.monotonic()
    try:
        pipeline, sink, published = _run(items, failing, UnscreenedOverlay(stuck), 6)
    finally:
        stuck.release.set()
    by_id = {d.item_id: d for d in sink.decisions}
    assert sorted(by_id) == [f"lane1-{n}" for n in range(1, 7)]  # none lost, none twice
    assert len(sink.decisions) == 6
    for item_id in failing:
        decision = by_id[item_id]
        assert decision.verdict is Verdict.UNSCREENED and decision.reason is UnscreenedReason.MODEL_ERROR
        assert decision.overlay_jpeg is None
        assert decision.overlay_note is not None and "not drawn within" in decision.overlay_note
    # the three fail one after another; the first blocks the drawing thread, and each is still out by its budget
    assert max(published[i] for i in failing) - started <= BUDGET_S + SLACK_S + 0.5, published
    # CLEAR items were never held by the stuck overlay: the worker went on screening
    for n in (1, 3, 6):
        assert by_id[f"lane1-{n}"].verdict is Verdict.CLEAR
        assert published[f"lane1-{n}"] - started <= SLACK_S + 0.5, published
    assert pipeline._overlays is not None and pipeline._overlays.expired == 3


def test_a_failing_camera_gives_the_raw_xray_and_says_why() -> None:
    started = time.monotonic()
    _, sink, published = _run([_item(7, 7000)], {"lane1-7"}, UnscreenedOverlay(_Broken()), 1)
    decision = sink.decisions[0]
    assert decision.verdict is Verdict.UNSCREENED
    assert decision.overlay_note is not None and "camera overlay failed: camera driver crashed" in decision.overlay_note
    assert _picture(decision).shape[:2] == (LINES, CHANNELS)
    assert published["lane1-7"] - started <= SLACK_S + 0.5


def test_stopping_with_a_hung_camera_still_publishes_every_shutdown_decision(tmp_path: Path) -> None:
    stuck = _Stuck()
    gate = threading.Event()

    def held(item: RawItem) -> Decision:
        gate.wait(30)  # items still being screened when the service stops
        return decide(item.meta, [], time.time(), time.monotonic())

    sink = MemorySink()
    pipeline = Pipeline(_Items([_item(n, 1000 * n) for n in range(1, 4)]), [Stage("screen", held)], [sink],
                        workers=1, unscreened_overlay=UnscreenedOverlay(stuck), overlay_budget_s=BUDGET_S)
    pipeline.start()
    try:
        deadline = time.monotonic() + 5
        while pipeline.ledger.in_flight() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        pipeline.stop(timeout_s=3)
        stopped = time.monotonic() - started
    finally:
        gate.set()
        stuck.release.set()
    assert stopped <= 3 + SLACK_S, stopped
    assert sorted(d.item_id for d in sink.decisions) == ["lane1-1", "lane1-2", "lane1-3"]
    assert all(d.reason is UnscreenedReason.SHUTDOWN for d in sink.decisions)


@pytest.mark.parametrize("problem", [None, "truncated file"])
def test_without_a_camera_the_raw_xray_or_a_note(problem: str | None) -> None:
    item = _item(9, 9000, problem=problem)
    _, sink, _ = _run([item], {"lane1-9"}, UnscreenedOverlay(None), 1)
    decision = sink.decisions[0]
    assert decision.verdict is Verdict.UNSCREENED
    assert decision.overlay_note is not None and "no exit camera configured" in decision.overlay_note
    if problem is None:
        assert _picture(decision).shape[:2] == (LINES, CHANNELS)
    else:
        assert decision.overlay_jpeg is None and "no X-ray frames" in decision.overlay_note


def test_a_burst_of_unscreened_items_is_published_at_once_past_the_waiting_bound() -> None:
    """An overload burst: the drawing thread is stuck on the first; 8 wait (each holds its frames); the rest go
    out at once without a picture. Every one is forwarded exactly once, the last by its budget."""
    from edge.overlay_handoff import MAX_WAITING, OverlayHandOff
    from edge.stages.decide import unscreened

    stuck = _Stuck()
    forwarded: list[tuple[Decision, float]] = []
    handoff = OverlayHandOff(UnscreenedOverlay(stuck), lambda d: forwarded.append((d, time.monotonic())), BUDGET_S)
    items = [_item(n, 1000 * n) for n in range(1, 14)]
    started = time.monotonic()
    try:
        for item in items:
            decision = unscreened(item.meta, UnscreenedReason.OVERLOAD, "intake queue full", time.time(),
                                  time.monotonic())
            handoff.submit(decision, item.meta, item)
            while item is items[0] and stuck.calls == 0 and time.monotonic() - started < 5:
                time.sleep(0.005)  # the drawing thread has the first one before the others come
        refused = len(items) - 1 - MAX_WAITING
        assert len(forwarded) == refused  # at once, not after a wait
        assert all("already waiting" in (d.overlay_note or "") for d, _ in forwarded)
        while handoff.pending() and time.monotonic() - started < BUDGET_S + SLACK_S + 1:
            handoff.expire()  # the pipeline's watchdog does this every 20 ms
            time.sleep(0.02)
        handoff.close(1.0)
    finally:
        stuck.release.set()
    assert sorted(d.item_id for d, _ in forwarded) == sorted(i.meta.item_id for i in items)
    assert max(t for _, t in forwarded) - started <= BUDGET_S + SLACK_S
