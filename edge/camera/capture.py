"""Exit-camera capture thread: ``cv2.VideoCapture`` into a ``FrameRing``, reconnecting by itself.

Where it sits: the *acquire* side of the exit camera, started by the pipeline next to the frame source. The
thread reads a V4L2 device index, an RTSP/HTTP URL or a video file, stamps every frame with
``time.monotonic()`` and the belt encoder count at that instant, and pushes it into the ring. When the stream
fails (cable pulled, camera rebooted, file gone or ended) it releases the capture, records why, waits
``reconnect_s`` and reopens, for ever, until stopped. Nothing here may block a caller: ``status()`` and the ring
are lock-protected snapshots.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge.camera.ring import FrameRing, StampedFrame

# FFmpeg network timeouts: a dead RTSP camera must not hang the thread for minutes.
_OPEN_TIMEOUT_MS = 5000
_READ_TIMEOUT_MS = 5000


class EncoderClock(Protocol):
    """Belt position at a monotonic instant (the firmware bridge keeps one from its encoder messages)."""

    def count_at(self, t_mono_s: float) -> float | None: ...


@dataclass(frozen=True, slots=True)
class LinearEncoder:
    """A belt running at constant speed: ``count = (t - t0) * speed / mm_per_count`` (virtual scanner, tests)."""

    t0_mono_s: float
    speed_mm_s: float
    mm_per_count: float

    def count_at(self, t_mono_s: float) -> float | None:
        return (t_mono_s - self.t0_mono_s) * self.speed_mm_s / self.mm_per_count


@dataclass(frozen=True, slots=True)
class CaptureStatus:
    """Health of the capture thread, for ``edge status`` and the health topic."""

    connected: bool
    frames: int
    reconnects: int
    last_frame_t_mono_s: float | None
    last_error: str | None


def parse_device(device: int | str) -> int | str:
    """``"0"`` → 0 (a V4L2 index); anything else stays a URL or path."""
    if isinstance(device, str) and device.strip().isdigit():
        return int(device.strip())
    return device


class CameraCapture:
    """Owns one capture thread. ``start()`` returns at once; ``stop()`` joins it."""

    def __init__(
        self,
        device: int | str,
        ring: FrameRing,
        encoder: EncoderClock | None = None,
        *,
        reconnect_s: float = 2.0,
        pace_fps: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            device: camera index, URL or video file.
            ring: where frames go.
            encoder: belt position source; ``None`` leaves frames without encoder counts.
            reconnect_s: wait between reopen attempts.
            pace_fps: read at most this many frames per second (a file otherwise plays as fast as it decodes).
            clock: monotonic clock (injectable for tests).
        """
        self.device = parse_device(device)
        self.ring = ring
        self.encoder = encoder
        self.reconnect_s = reconnect_s
        self.pace_fps = pace_fps
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connected = False
        self._frames = 0
        self._reconnects = 0
        self._opened_once = False
        self._last_t: float | None = None
        self._last_error: str | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="exit-camera", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> CameraCapture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> CaptureStatus:
        with self._lock:
            return CaptureStatus(self._connected, self._frames, self._reconnects, self._last_t, self._last_error)

    def _set(self, *, connected: bool, error: str | None = None) -> None:
        with self._lock:
            self._connected = connected
            if error is not None:
                self._last_error = error

    def _open(self) -> cv2.VideoCapture | None:
        dev = self.device
        if isinstance(dev, str) and "://" not in dev and not Path(dev).exists():
            self._set(connected=False, error=f"video file {dev} does not exist")
            return None
        try:
            if isinstance(dev, int):
                cap = cv2.VideoCapture(dev)
            else:
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                          _READ_TIMEOUT_MS]
                cap = cv2.VideoCapture(dev, cv2.CAP_FFMPEG, params)
        except cv2.error as exc:
            self._set(connected=False, error=f"cannot open camera {dev!r}: {exc}")
            return None
        if not cap.isOpened():
            cap.release()
            self._set(connected=False, error=f"cannot open camera {dev!r}")
            return None
        with self._lock:
            if self._opened_once:
                self._reconnects += 1
            self._opened_once = True
            self._connected = True
        return cap

    def _run(self) -> None:
        cap: cv2.VideoCapture | None = None
        seq = 0
        next_due = self._clock()
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._open()
                    if cap is None:
                        self._stop.wait(self.reconnect_s)
                        continue
                ok, frame = cap.read()
                if not ok or frame is None:
                    cap.release()
                    cap = None
                    self._set(connected=False, error=f"stream {self.device!r} ended or was lost")
                    self._stop.wait(self.reconnect_s)
                    continue
                t = self._clock()
                count = self.encoder.count_at(t) if self.encoder is not None else None
                self.ring.push(StampedFrame(_bgr(np.asarray(frame, dtype=np.uint8)), t, count, seq))
                seq += 1
                with self._lock:
                    self._frames += 1
                    self._last_t = t
                if self.pace_fps:
                    next_due = max(next_due + 1.0 / self.pace_fps, t)
                    self._stop.wait(max(0.0, next_due - self._clock()))
        finally:
            if cap is not None:
                cap.release()
            self._set(connected=False)


def _bgr(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if frame.ndim == 2:
        return np.asarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if frame.shape[2] == 4:
        return np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    return np.ascontiguousarray(frame, dtype=np.uint8)
