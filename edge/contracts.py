"""The input contract a model bundle declares, shared by the runtime composer and the export toolchain.

A model must never see data prepared differently from how it was trained. The contract is stored in each
bundle's ``bundle.yaml``; ``edge.condition.composer`` is the one implementation that turns a conditioned item
(or a crop of it) into exactly that tensor, and ``export/`` calls the same code for calibration and parity data.

Channel meanings (each in [0, 1] before normalisation):
    ``pc``  3 channels, RGB pseudo-colour in the operator palette.
    ``bgr`` 3 channels, the same pseudo-colour in BGR order (models trained on OpenCV-read images, e.g.
            MMDetection configs without ``bgr_to_rgb``; ``edge-export import-detector --bgr``).
    ``h``   1 channel, high-energy transmission T_high.
    ``l``   1 channel, low-energy transmission T_low.
    ``z``   1 channel, effective Z divided by ``Z_SCALE`` (clipped to [0, 1]).
    ``hlz`` 3 channels, ``h``, ``l`` and ``z`` stacked in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Z_SCALE = 30.0
"""Effective Z is divided by this for the ``z`` channel (steel ≈ 26 → 0.87)."""


class Channel(StrEnum):
    """Input channel groups a bundle may ask for."""

    PC = "pc"
    BGR = "bgr"
    H = "h"
    L = "l"
    Z = "z"
    HLZ = "hlz"

    @property
    def width(self) -> int:
        """Number of tensor channels this group contributes."""
        return 3 if self in (Channel.PC, Channel.BGR, Channel.HLZ) else 1


class ResizePolicy(StrEnum):
    """How an image of another size is brought to the contract's size.

    ``letterbox`` centres the scaled image (Ultralytics, and this project's own models); ``letterbox-topleft``
    puts it in the top-left corner and pads right and bottom only (MMDetection's ``Resize(keep_ratio=True)`` +
    ``Pad``), so boxes of a model trained that way land where it expects them.
    """

    STRETCH = "stretch"
    LETTERBOX = "letterbox"
    LETTERBOX_TOPLEFT = "letterbox-topleft"


@dataclass(frozen=True, slots=True)
class InputContract:
    """What one model input expects: NCHW float32, ``channels`` in order, normalised ``(x - mean) / std``.

    ``mean``/``std`` have one entry per tensor channel (sum of the groups' widths). Letterboxing pads with
    ``pad_value`` (before normalisation; 1.0 = air) and keeps aspect ratio.
    """

    channels: tuple[Channel, ...]
    height: int
    width: int
    resize: ResizePolicy = ResizePolicy.STRETCH
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pad_value: float = 1.0
    input_name: str = "input"

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("an input contract needs at least one channel")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"input size must be positive, got {self.height}x{self.width}")
        n = self.tensor_channels
        if self.mean and len(self.mean) != n:
            raise ValueError(f"mean has {len(self.mean)} entries for {n} tensor channels")
        if self.std and len(self.std) != n:
            raise ValueError(f"std has {len(self.std)} entries for {n} tensor channels")
        if any(s <= 0 for s in self.std):
            raise ValueError("std entries must be positive")

    @property
    def tensor_channels(self) -> int:
        """Channels of the composed tensor (C in NCHW)."""
        return sum(c.width for c in self.channels)
