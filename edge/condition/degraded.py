"""Degraded modalities: images that are not raw dual-energy scans, conditioned as far as they honestly go.

Where it sits: an alternative entry to conditioning for frame sources that deliver finished images, and for
evaluating on public datasets. A pseudo-colour RGB image (as SIXray/OPIXray) gives only ``pc``; a single-energy
grey image (as GDXray) gives only ``h`` (its grey level read as transmission, 1 = air). Nothing is guessed:
effective Z cannot be recovered from one energy, nor transmissions from a vendor's colour rendering, so those
channels are absent and ``edge.condition.composer`` refuses a bundle that needs them.

Must not: fabricate channels (for example a ``z`` from hue), or change the image beyond type conversion.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge.condition.flatfield import T_FLOOR
from edge.condition.image import ConditionedImage, Modality
from edge.errors import FrameError


def from_pseudo_colour(image: NDArray[np.uint8], order: str = "rgb") -> ConditionedImage:
    """Wrap an 8-bit pseudo-colour image (``(H, W, 3)``; ``order`` ``"rgb"`` or ``"bgr"`` as cv2 reads it).

    Raises:
        FrameError: not an ``(H, W, 3) uint8`` image, or an unknown channel order.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"a pseudo-colour image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if order not in ("rgb", "bgr"):
        raise FrameError(f"channel order {order!r} is not valid; expected 'rgb' or 'bgr'")
    rgb = image[:, :, ::-1] if order == "bgr" else image
    return ConditionedImage(Modality.PSEUDO_COLOUR, pc=np.ascontiguousarray(rgb))


def from_grey(image: NDArray[np.uint8] | NDArray[np.uint16], bright_is_air: bool = True) -> ConditionedImage:
    """Wrap a single-energy grey image (8- or 16-bit, ``(H, W)``; a 3-channel grey JPEG is accepted if R=G=B).

    Args:
        bright_is_air: the usual X-ray display (air white). Set False for images stored as attenuation.

    Raises:
        FrameError: wrong dtype or shape, or a colour image passed as grey.
    """
    if image.ndim == 3 and image.shape[2] == 3:
        if not (np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2])):
            raise FrameError("a colour image was given as single-energy grey; use from_pseudo_colour")
        image = image[:, :, 0]
    if image.ndim != 2:
        raise FrameError(f"a single-energy image must be (H, W), got shape {image.shape}")
    if image.dtype == np.uint8:
        full = 255.0
    elif image.dtype == np.uint16:
        full = 65535.0
    else:
        raise FrameError(f"a single-energy image must be uint8 or uint16, got {image.dtype}")
    t = image.astype(np.float32) * np.float32(1.0 / full)
    if not bright_is_air:
        t = np.float32(1.0) - t
    np.clip(t, T_FLOOR, 1.0, out=t)
    return ConditionedImage(Modality.SINGLE_ENERGY, t_high=t)
