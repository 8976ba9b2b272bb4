"""Model-input composer: a conditioned image (whole or object crops) to exactly the tensor a contract declares.

Where it sits: between conditioning and every model. The detect stage composes the whole item, the score stage
composes the detected objects' crops, and the export toolchain (``export/``) calls the same :func:`compose` for
calibration and parity data, so a model never sees data prepared differently from how it was trained.

What a contract (``edge.contracts.InputContract``) gets, precisely:

1. Channel groups in the contract's order, each in [0, 1]: ``pc`` RGB / 255, ``h`` T_high, ``l`` T_low,
   ``z`` Z_eff / ``Z_SCALE`` clipped per source pixel, ``hlz`` = h, l, z.
2. Crop (boxes): the box is rounded outwards to whole pixels and clipped to the image (at least 1 pixel).
3. Resize to the contract's size with ``cv2.INTER_LINEAR``, anti-aliased when shrinking: while an axis is
   at least twice its target it is halved (``size // 2``; a linear resize by 2 is the mean of two pixels, so
   this is a box pyramid), then one linear step (shrink < 2, or enlarge) reaches the exact size. Several
   times faster than ``cv2.INTER_AREA`` at non-integer factors, with comparable anti-aliasing. ``pc`` is
   resized as uint8 (it is 8-bit data), the others as float32.
   ``stretch`` fills the whole size; ``letterbox`` keeps aspect ratio, scales by
   ``min(H/h, W/w)``, centres the image (odd padding pixel goes right/bottom) and fills the rest with
   ``pad_value`` on every channel; ``letterbox-topleft`` scales the same way but pads right and bottom only.
   ``bgr`` is ``pc`` with its three channels written in reverse order.
4. Normalise ``(x - mean) / std`` per tensor channel (skipped when the contract leaves them empty).
5. NCHW float32, C-contiguous; N = 1 for the whole image, else one per box, in box order.

Must not: run a model, cache anything between calls, or silently substitute a channel the image lacks: a
contract that needs an absent channel is refused with :class:`MissingChannelsError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.condition.image import ConditionedImage
from edge.contracts import Z_SCALE, Channel, InputContract, ResizePolicy
from edge.errors import BundleError, FrameError
from edge.records import BoxXyxy

F32 = NDArray[np.float32]
Boxes = Sequence[BoxXyxy] | NDArray[np.floating] | NDArray[np.integer]


class MissingChannelsError(BundleError):
    """A bundle's input contract needs channels this image cannot provide (e.g. ``z`` from a colour image)."""

    def __init__(self, missing: Sequence[Channel], available: frozenset[Channel], input_name: str,
                 modality: str) -> None:
        self.missing = tuple(missing)
        self.available = available
        have = ", ".join(sorted(c.value for c in available)) or "none"
        super().__init__(
            f"input {input_name!r} needs channel(s) {', '.join(c.value for c in self.missing)} that a "
            f"{modality} image cannot provide (available: {have}); use a bundle trained on available channels"
        )


@dataclass(frozen=True, slots=True)
class ResizeGeometry:
    """How a source region maps into the model input: ``x_in = (x_src - x0) * scale_x + pad_x``.

    Attributes:
        x0, y0: top-left of the (integer) source region in image pixels.
        width, height: size of the source region.
        scale_x, scale_y: model pixels per source pixel.
        pad_x, pad_y: left/top padding in model pixels (letterbox; 0 for stretch).
        out_width, out_height: size of the resized content inside the model input.
    """

    x0: int
    y0: int
    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    out_width: int
    out_height: int

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Model-input coordinates back to image pixels (for detector boxes)."""
        return ((x - self.pad_x) / self.scale_x + self.x0, (y - self.pad_y) / self.scale_y + self.y0)


def check_channels(image: ConditionedImage, contract: InputContract) -> None:
    """Raise :class:`MissingChannelsError` unless ``image`` has every channel group ``contract`` needs."""
    available = image.available
    missing = [c for c in contract.channels if c not in available]
    if missing:
        raise MissingChannelsError(missing, available, contract.input_name, image.modality.value)


def region_of(
    box: BoxXyxy | Sequence[float] | NDArray[np.floating], height: int, width: int
) -> tuple[int, int, int, int]:
    """Integer ``(x0, y0, x1, y1)`` of a box, rounded outwards and clipped; at least one pixel.

    Raises:
        FrameError: the box lies entirely outside the image or is not finite.
    """
    if isinstance(box, BoxXyxy):
        bx1, by1, bx2, by2 = box.x1, box.y1, box.x2, box.y2
    else:
        bx1, by1, bx2, by2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (bx1, by1, bx2, by2)):
        raise FrameError(f"box ({bx1}, {by1}, {bx2}, {by2}) is not finite")
    if bx2 <= 0 or by2 <= 0 or bx1 >= width or by1 >= height or bx2 < bx1 or by2 < by1:
        raise FrameError(f"box ({bx1:g}, {by1:g}, {bx2:g}, {by2:g}) lies outside the {width}x{height} image")
    x0 = min(max(math.floor(bx1), 0), width - 1)
    y0 = min(max(math.floor(by1), 0), height - 1)
    x1 = max(min(math.ceil(bx2), width), x0 + 1)
    y1 = max(min(math.ceil(by2), height), y0 + 1)
    return x0, y0, x1, y1


def geometry(region: tuple[int, int, int, int], contract: InputContract) -> ResizeGeometry:
    """Resize geometry of an integer source region under the contract's policy."""
    x0, y0, x1, y1 = region
    w, h = x1 - x0, y1 - y0
    if contract.resize is ResizePolicy.STRETCH:
        return ResizeGeometry(x0, y0, w, h, contract.width / w, contract.height / h, 0, 0,
                              contract.width, contract.height)
    s = min(contract.height / h, contract.width / w)
    ow = min(contract.width, max(1, round(w * s)))
    oh = min(contract.height, max(1, round(h * s)))
    if contract.resize is ResizePolicy.LETTERBOX_TOPLEFT:
        return ResizeGeometry(x0, y0, w, h, ow / w, oh / h, 0, 0, ow, oh)
    return ResizeGeometry(x0, y0, w, h, ow / w, oh / h, (contract.width - ow) // 2, (contract.height - oh) // 2,
                          ow, oh)


def compose(image: ConditionedImage, contract: InputContract, boxes: Boxes | None = None) -> F32:
    """Build the ``(N, C, H, W) float32`` input of ``contract`` from ``image`` (whole, or one crop per box).

    Args:
        image: the conditioned item.
        contract: the bundle input to feed.
        boxes: ``None`` for the whole image; else ``BoxXyxy`` records or an ``(N, 4)`` array of
            ``x1, y1, x2, y2`` image pixels.

    Raises:
        MissingChannelsError: the image lacks a channel the contract needs.
        FrameError: a box lies outside the image.
    """
    check_channels(image, contract)
    height, width = image.shape
    if boxes is None:
        regions = [(0, 0, width, height)]
    else:
        seq = list(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)) if isinstance(boxes, np.ndarray) \
            else list(boxes)
        regions = [region_of(b, height, width) for b in seq]
    out = np.empty((len(regions), contract.tensor_channels, contract.height, contract.width), np.float32)
    for n, region in enumerate(regions):
        _fill(out[n], image, contract, geometry(region, contract))
    if contract.mean or contract.std:
        mean = np.asarray(contract.mean or (0.0,) * contract.tensor_channels, np.float32)[:, None, None]
        inv_std = (1.0 / np.asarray(contract.std or (1.0,) * contract.tensor_channels, np.float32))[:, None, None]
        out -= mean
        out *= inv_std
    return out


def _fill(dst: F32, image: ConditionedImage, contract: InputContract, g: ResizeGeometry) -> None:
    """Write one sample's channels (CHW, before normalisation) into ``dst``."""
    if g.out_width != contract.width or g.out_height != contract.height:
        dst.fill(np.float32(contract.pad_value))
    rows = slice(g.y0, g.y0 + g.height)
    cols = slice(g.x0, g.x0 + g.width)
    inner_y = slice(g.pad_y, g.pad_y + g.out_height)
    inner_x = slice(g.pad_x, g.pad_x + g.out_width)
    size = (g.out_width, g.out_height)
    c = 0
    for group in contract.channels:
        for plane, is_z in _planes(image, group):
            if plane.ndim == 3:  # pc / bgr: uint8 RGB, resized in 8 bits then scaled
                resized = resize(plane[rows, cols], size).reshape(g.out_height, g.out_width, 3)
                for k in range(3):
                    src_k = 2 - k if group is Channel.BGR else k
                    np.multiply(resized[:, :, src_k], np.float32(1.0 / 255.0), out=dst[c + k, inner_y, inner_x])
                c += 3
            else:
                src: NDArray[Any] = plane[rows, cols]
                if is_z:  # clipped per source pixel, scaled after resizing (cheaper, same result)
                    src = np.clip(src, np.float32(0.0), np.float32(Z_SCALE))
                out = dst[c, inner_y, inner_x]
                out[...] = resize(src, size).reshape(g.out_height, g.out_width)
                if is_z:
                    out *= np.float32(1.0 / Z_SCALE)
                c += 1


def resize(src: NDArray[Any], size: tuple[int, int]) -> NDArray[Any]:
    """Resize ``src`` (uint8 or float32, 2-D or 3-channel) to ``size`` = (width, height) by the composer's policy.

    The policy is in the module docstring; export tools must not reimplement it but call this.
    """
    h, w = src.shape[:2]
    out_w, out_h = size
    out: NDArray[Any] = src
    while w >= 2 * out_w or h >= 2 * out_h:
        w = w // 2 if w >= 2 * out_w else w
        h = h // 2 if h >= 2 * out_h else h
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    if (w, h) != (out_w, out_h):
        out = cv2.resize(out, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out, dtype=src.dtype)


def _planes(image: ConditionedImage, group: Channel) -> list[tuple[NDArray[np.uint8] | NDArray[np.float32], bool]]:
    """Source planes of a channel group, each with whether it is the effective-Z plane (scaled and clipped)."""
    planes: dict[Channel, list[tuple[NDArray[np.uint8] | NDArray[np.float32] | None, bool]]] = {
        Channel.PC: [(image.pc, False)],
        Channel.BGR: [(image.pc, False)],
        Channel.H: [(image.t_high, False)],
        Channel.L: [(image.t_low, False)],
        Channel.Z: [(image.zeff, True)],
        Channel.HLZ: [(image.t_high, False), (image.t_low, False), (image.zeff, True)],
    }
    out = [(p, z) for p, z in planes[group] if p is not None]
    if len(out) != len(planes[group]):  # check_channels ran first; this guards direct callers
        raise MissingChannelsError([group], image.available, "input", image.modality.value)
    return out
