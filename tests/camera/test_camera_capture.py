"""The capture thread against real OpenCV video files: stamping, ring buffer, reconnect after loss."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from edge.camera.capture import CameraCapture, LinearEncoder
from edge.camera.ring import FrameRing


def _write_mp4(path: Path, n: int = 20, size: tuple[int, int] = (160, 120)) -> None:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, size)
    assert wr.isOpened()
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, : (i * 7) % size[0] + 1] = (0, 180, 255)  # a bar that grows: frames differ
        wr.write(img)
    wr.release()


def _wait(cond: object, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_reads_mp4_into_ring_with_time_and_encoder(tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    _write_mp4(video)
    ring = FrameRing(8)
    enc = LinearEncoder(time.monotonic(), speed_mm_s=200.0, mm_per_count=0.8)
    cap = CameraCapture(str(video), ring, enc, reconnect_s=0.05, pace_fps=100.0)
    with cap:
        assert _wait(lambda: ring.pushed >= 12)
    frames = ring.snapshot()
    assert len(frames) == 8  # bounded: oldest dropped
    assert frames[0].image.shape == (120, 160, 3)
    t = [f.t_mono_s for f in frames]
    c = [f.encoder_count for f in frames]
    assert t == sorted(t) and all(x is not None for x in c)
    assert c == sorted(c)  # type: ignore[type-var]
    # stamps agree with the encoder model at the capture instant
    f = frames[-1]
    assert abs(f.encoder_count - enc.count_at(f.t_mono_s)) < 1e-6  # type: ignore[operator]
    assert ring.nearest_count(c[3]) is frames[3]  # type: ignore[arg-type]
    assert not cap.status().connected


def test_reconnects_when_the_file_disappears_and_returns(tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    _write_mp4(video, n=10)
    spare = tmp_path / "spare.mp4"
    shutil.copy(video, spare)
    ring = FrameRing(64)
    cap = CameraCapture(str(video), ring, None, reconnect_s=0.05, pace_fps=200.0)
    cap.start()
    try:
        assert _wait(lambda: ring.pushed >= 5)
        video.unlink()  # the camera goes away
        assert _wait(lambda: not cap.status().connected and "does not exist" in (cap.status().last_error or ""))
        stalled = ring.pushed
        time.sleep(0.2)
        assert ring.pushed == stalled  # nothing arrives while it is gone, and nothing blocks
        shutil.copy(spare, video)  # it comes back
        assert _wait(lambda: ring.pushed > stalled + 3)
        assert cap.status().reconnects >= 1
        assert all(f.encoder_count is None for f in ring.snapshot())
    finally:
        cap.stop()
    assert cap._thread is not None and not cap._thread.is_alive()


def test_unopenable_device_reports_and_stops_promptly(tmp_path: Path) -> None:
    ring = FrameRing(4)
    cap = CameraCapture(str(tmp_path / "nothing.mp4"), ring, reconnect_s=0.05)
    cap.start()
    assert _wait(lambda: cap.status().last_error is not None)
    t0 = time.monotonic()
    cap.stop()
    assert time.monotonic() - t0 < 2.0
    assert len(ring) == 0 and not cap.status().connected
