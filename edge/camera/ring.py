"""Ring buffer of exit-camera frames stamped with monotonic time and belt encoder count.

Where it sits: filled by ``edge/camera/capture.py``'s thread, read by frame selection in the map stage. Readers
never wait for the writer beyond a short lock; the buffer drops the oldest frame when full. It must not decode,
copy or process images.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class StampedFrame:
    """One captured frame.

    Attributes:
        image: (H, W, 3) uint8 BGR, read-only.
        t_mono_s: ``time.monotonic()`` when the frame was read.
        encoder_count: belt encoder count at ``t_mono_s``; ``None`` when no belt position was known.
        seq: capture sequence number (gaps = dropped frames).
    """

    image: npt.NDArray[np.uint8]
    t_mono_s: float
    encoder_count: float | None
    seq: int

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        self.image.flags.writeable = False


class FrameRing:
    """Thread-safe bounded buffer; ``capacity`` = fps x ring seconds."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._frames: deque[StampedFrame] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._pushed = 0

    def push(self, frame: StampedFrame) -> None:
        with self._lock:
            self._frames.append(frame)
            self._pushed += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def pushed(self) -> int:
        with self._lock:
            return self._pushed

    def latest(self) -> StampedFrame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def snapshot(self) -> list[StampedFrame]:
        with self._lock:
            return list(self._frames)

    def nearest_count(self, encoder_count: float) -> StampedFrame | None:
        """The stamped frame whose encoder count is closest to ``encoder_count`` (frames without one skipped)."""
        frames = [f for f in self.snapshot() if f.encoder_count is not None]
        if not frames:
            return None
        counts = [float(f.encoder_count) for f in frames]  # type: ignore[arg-type]
        order = sorted(range(len(frames)), key=counts.__getitem__)
        keys = [counts[i] for i in order]
        k = bisect.bisect_left(keys, encoder_count)
        cands = [order[j] for j in (k - 1, k) if 0 <= j < len(order)]
        best = min(cands, key=lambda i: abs(counts[i] - encoder_count))
        return frames[best]

    def nearest_time(self, t_mono_s: float) -> StampedFrame | None:
        frames = self.snapshot()
        if not frames:
            return None
        return min(frames, key=lambda f: abs(f.t_mono_s - t_mono_s))
