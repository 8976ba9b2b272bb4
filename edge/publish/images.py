"""Fit an overlay JPEG under the ``mqtt.image_max_bytes`` cap before it enters the outbox.

Brokers and control-room clients choke on multi-megabyte messages, and a backlog of large images fills the
outbox; so an overlay over the cap is re-encoded at falling JPEG quality, then scaled down, until it fits.
An overlay that cannot be decoded or made to fit is dropped with a note: the decision itself is never held
back by its picture. Pure function of bytes (OpenCV in memory), no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_QUALITIES = (85, 70, 55, 40, 30, 20)
_SCALE_STEP = 0.7
_MIN_SIDE_PX = 32


@dataclass(frozen=True, slots=True)
class FittedImage:
    """Result of fitting: ``jpeg`` is None when the overlay was dropped; ``note`` says why or what changed."""

    jpeg: bytes | None
    note: str | None


def fit_jpeg(jpeg: bytes, max_bytes: int) -> FittedImage:
    """Return ``jpeg`` unchanged if it fits, else a re-encoded (lower quality, then smaller) copy that fits."""
    if len(jpeg) <= max_bytes:
        return FittedImage(jpeg, None)
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return FittedImage(None, f"overlay dropped: {len(jpeg)} bytes over the cap and not a decodable JPEG")
    scale = 1.0
    while True:
        h, w = image.shape[:2]
        sized = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            sized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        for quality in _QUALITIES:
            ok, buf = cv2.imencode(".jpg", sized, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and buf.size <= max_bytes:
                out_h, out_w = sized.shape[:2]
                return FittedImage(
                    buf.tobytes(),
                    f"overlay reduced from {len(jpeg)} to {buf.size} bytes (quality {quality}, {out_w}x{out_h})",
                )
        scale *= _SCALE_STEP
        if min(h, w) * scale < _MIN_SIDE_PX:
            return FittedImage(None, f"overlay dropped: cannot fit {len(jpeg)} bytes under {max_bytes}")
