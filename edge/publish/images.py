"""Keep an overlay JPEG under the ``mqtt.image_max_bytes`` cap before it enters the outbox.

Brokers and control-room clients choke on multi-megabyte messages, and a backlog of large images fills the
outbox. The map stage already fits every overlay under the one cap (``edge.runtime.overlay_max_bytes``, the
smallest of the camera's and this one) with the one JPEG fit (``edge.camera.overlay.fit_image``), so here a
picture normally passes on a length check alone, never decoded. A picture from elsewhere over the cap (a decision
written by an older run and repeated from the intake journal) is decoded and fitted the same way; one that cannot
be decoded or made to fit is dropped with a note: the decision itself is never held back by its picture. Pure
function of bytes (OpenCV in memory), no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.camera.overlay import fit_image

_START_QUALITY = 85
"""Quality a re-fitted picture starts at (it was a JPEG already: more quality would only add bytes)."""


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
    try:
        fitted = fit_image(np.asarray(image, dtype=np.uint8), max_bytes, _START_QUALITY)
    except ValueError:
        return FittedImage(None, f"overlay dropped: cannot fit {len(jpeg)} bytes under {max_bytes}")
    return FittedImage(fitted.jpeg, f"overlay reduced from {len(jpeg)} to {len(fitted.jpeg)} bytes (quality "
                                    f"{fitted.quality}, {fitted.width}x{fitted.height})")
