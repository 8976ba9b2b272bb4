"""Waiting for an item to reach the downstream camera (``await_frame``): it waits while the belt brings the item
and the camera delivers, and never for a dead camera or past the time it was given."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge.camera.ring import FrameRing, StampedFrame
from edge.camera.select import FrameChoice, ItemTravel, NoFrame, await_frame, select_frame

MM_PER_COUNT = 0.1  # 10 counts per mm


def _push(ring: FrameRing, count: float, seq: int) -> None:
    ring.push(StampedFrame(np.zeros((8, 8, 3), np.uint8), time.monotonic(), count, seq))


def test_waits_for_the_belt_to_bring_the_item_under_the_camera() -> None:
    ring = FrameRing(100)
    item = ItemTravel(item_start_count=0.0, length_mm=400.0)  # centre under a 600 mm view at 800 mm travel
    _push(ring, 2000.0, 0)  # 200 mm of travel so far: the item is on its way
    assert isinstance(select_frame(ring, item, 600.0, MM_PER_COUNT), NoFrame)

    def belt() -> None:  # a camera at 20 frames/s on a belt at 1 m/s: 50 mm per frame
        for k in range(1, 20):
            time.sleep(0.05)
            _push(ring, 2000.0 + k * 500.0, k)

    thread = threading.Thread(target=belt)
    thread.start()
    got = await_frame(ring, item, 600.0, MM_PER_COUNT, 120.0, time.monotonic() + 5.0, poll_s=0.01)
    thread.join()
    assert isinstance(got, FrameChoice), got
    assert abs(got.travel_mm - 800.0) <= 25.0


def test_does_not_wait_for_a_camera_that_stopped_delivering() -> None:
    ring = FrameRing(10)
    ring.push(StampedFrame(np.zeros((8, 8, 3), np.uint8), time.monotonic() - 5.0, 2000.0, 0))  # 5 s old
    started = time.monotonic()
    got = await_frame(ring, ItemTravel(0.0, 400.0), 600.0, MM_PER_COUNT, 120.0, started + 5.0)
    assert isinstance(got, NoFrame) and got.pending
    assert time.monotonic() - started < 0.5


def test_gives_up_at_the_time_it_was_given() -> None:
    ring = FrameRing(10)
    stop = threading.Event()

    def stalled_belt() -> None:  # frames keep coming, but the belt does not move
        k = 0
        while not stop.is_set():
            _push(ring, 2000.0, k)
            k += 1
            time.sleep(0.02)

    thread = threading.Thread(target=stalled_belt)
    thread.start()
    try:
        started = time.monotonic()
        got = await_frame(ring, ItemTravel(0.0, 400.0), 600.0, MM_PER_COUNT, 120.0, started + 0.3, poll_s=0.02)
        waited = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert isinstance(got, NoFrame) and "not under the camera yet" in got.reason
    assert 0.2 <= waited < 1.0
