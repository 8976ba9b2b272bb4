"""The conditioned item: calibrated transmission, effective Z and pseudo-colour of one X-ray image.

Where it sits: the record the condition stage hands on (``edge.condition.conditioner`` builds it from raw
dual-energy counts, ``edge.condition.degraded`` from a pseudo-colour or single-energy image) and the only thing
``edge.condition.composer`` reads to build a model input.

Must not: hold raw counts, do I/O, or let anyone write into its arrays (they are marked read-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from edge.contracts import Channel

Float32Array = NDArray[np.float32]
UInt8Array = NDArray[np.uint8]


class Modality(StrEnum):
    """What the image came from; it decides which channels can be derived at all."""

    DUAL_ENERGY = "dual_energy"
    PSEUDO_COLOUR = "pseudo_colour"
    SINGLE_ENERGY = "single_energy"


@dataclass(frozen=True, slots=True)
class ConditionedImage:
    """One item (or any X-ray image) after conditioning. Rows are belt lines, columns detector channels.

    Attributes:
        modality: where the pixels came from.
        t_high: ``(H, W) float32`` in [0, 1], high-energy transmission (1 = air); for a single-energy image the
            grey transmission it shows. ``None`` when it cannot be derived.
        t_low: ``(H, W) float32`` in [0, 1], low-energy transmission, or ``None``.
        zeff: ``(H, W) float32``, effective atomic number (0 = air, no material), or ``None``.
        pc: ``(H, W, 3) uint8`` RGB pseudo-colour in the operator palette, or ``None``.
    """

    modality: Modality
    t_high: Float32Array | None = None
    t_low: Float32Array | None = None
    zeff: Float32Array | None = None
    pc: UInt8Array | None = None

    def __post_init__(self) -> None:
        shapes: set[tuple[int, int]] = set()
        for name in ("t_high", "t_low", "zeff"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.dtype != np.float32 or arr.ndim != 2:
                raise ValueError(f"{name} must be (H, W) float32, got {arr.ndim}-D {arr.dtype}")
            shapes.add((int(arr.shape[0]), int(arr.shape[1])))
        if self.pc is not None:
            if self.pc.dtype != np.uint8 or self.pc.ndim != 3 or self.pc.shape[2] != 3:
                raise ValueError(f"pc must be (H, W, 3) uint8, got shape {self.pc.shape} {self.pc.dtype}")
            shapes.add((int(self.pc.shape[0]), int(self.pc.shape[1])))
        if not shapes:
            raise ValueError("a conditioned image needs at least one of t_high, t_low, zeff, pc")
        if len(shapes) != 1:
            raise ValueError(f"conditioned planes differ in size: {sorted(shapes)}")
        (h, w) = shapes.pop()
        if h < 1 or w < 1:
            raise ValueError(f"conditioned image is empty ({h}x{w})")
        for name in ("t_high", "t_low", "zeff", "pc"):
            arr = getattr(self, name)
            if arr is not None:
                arr.flags.writeable = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of every plane."""
        for arr in (self.t_high, self.t_low, self.zeff, self.pc):
            if arr is not None:
                return (int(arr.shape[0]), int(arr.shape[1]))
        raise AssertionError("unreachable: __post_init__ requires a plane")

    @property
    def available(self) -> frozenset[Channel]:
        """Contract channel groups this image can feed (``hlz`` needs all three of h, l and z)."""
        out: set[Channel] = set()
        if self.pc is not None:
            out.update((Channel.PC, Channel.BGR))  # bgr: the same pseudo-colour in OpenCV's order
        if self.t_high is not None:
            out.add(Channel.H)
        if self.t_low is not None:
            out.add(Channel.L)
        if self.zeff is not None:
            out.add(Channel.Z)
        if {Channel.H, Channel.L, Channel.Z} <= out:
            out.add(Channel.HLZ)
        return frozenset(out)
