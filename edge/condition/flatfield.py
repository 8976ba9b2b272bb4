"""Flat-field correction: raw 16-bit counts to transmission, ``T = (I - dark) / (air - dark)`` per channel.

Where it sits: the first step of conditioning (``edge.condition.conditioner``). The dark (beam off) and air
(empty belt) references are captured at commissioning by ``edge calibrate flatfield`` (``calib.flatfield``) and
stored as ``flatfield.npz`` (arrays) plus ``flatfield.yaml`` (when, from what, and the sha256 of the npz, so a
pair that does not belong together is refused). PHYSICS.md: per channel and energy; refresh air for drift.

Dead channels (air barely above dark, e.g. a failed diode) are recorded at capture and filled at run time from
the nearest working channel, so one bad diode gives a thin duplicated column instead of a black stripe that
would read as impenetrable metal.

Must not: read files on the hot path (load once with :func:`load_flatfield`), or return values outside
``[T_FLOOR, 1]`` (downstream takes logarithms).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.condition.calfile import read_yaml_mapping, require
from edge.errors import CalibrationError, FrameError

T_FLOOR = 1e-4
"""Smallest transmission returned: keeps ``ln T`` finite (about 16 bits of dynamic range below air)."""

FORMAT_VERSION = 1


def sidecar_path(npz_path: Path) -> Path:
    """The metadata YAML that belongs to a flat-field ``.npz``."""
    return npz_path.with_suffix(".yaml")


@dataclass(frozen=True, slots=True)
class FlatField:
    """Dark and air references of one scanner, per energy and channel.

    Attributes:
        dark: ``(2, W) float32`` mean counts with the beam off; row 0 low energy, row 1 high energy.
        air: ``(2, W) float32`` mean counts through the empty belt.
        dead: indices of channels whose air signal is too close to dark to be trusted (either energy).
        captured_wall: UNIX time of the capture.
        source: what the references were captured from (free text, e.g. ``sim seed=0`` or a file name).
    """

    dark: NDArray[np.float32]
    air: NDArray[np.float32]
    dead: tuple[int, ...] = ()
    captured_wall: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.dark.dtype != np.float32 or self.air.dtype != np.float32:
            raise ValueError("dark and air must be float32")
        if self.dark.ndim != 2 or self.dark.shape[0] != 2 or self.dark.shape != self.air.shape:
            raise ValueError(f"dark and air must both be (2, W), got {self.dark.shape} and {self.air.shape}")
        width = self.channels
        bad = [c for c in self.dead if not 0 <= c < width]
        if bad:
            raise ValueError(f"dead channels {bad} outside 0..{width - 1}")
        if len(self.dead) >= width:
            raise ValueError("every channel is dead: the flat-field cannot be used")
        live = np.ones(width, bool)
        live[list(self.dead)] = False
        if np.any((self.air - self.dark)[:, live] <= 0):
            raise ValueError("air must exceed dark on every live channel")
        self.dark.flags.writeable = False
        self.air.flags.writeable = False

    @property
    def channels(self) -> int:
        """Detector channels per energy (image width)."""
        return int(self.dark.shape[1])


class FlatFieldCorrector:
    """Applies one :class:`FlatField` to raw lines; holds the precomputed per-channel factors."""

    def __init__(self, flatfield: FlatField) -> None:
        self.flatfield = flatfield
        span = (flatfield.air - flatfield.dark).astype(np.float64)
        dead = list(flatfield.dead)
        span[:, dead] = 1.0  # filled from neighbours below; any finite factor will do
        self._dark = np.ascontiguousarray(flatfield.dark, dtype=np.float32)
        self._inv = np.ascontiguousarray(1.0 / span, dtype=np.float32)
        self._dead = np.asarray(dead, dtype=np.intp)
        self._fill = _nearest_live(flatfield.channels, dead)

    def apply(self, raw: NDArray[np.uint16], energy: int) -> NDArray[np.float32]:
        """Transmission ``(H, W) float32`` in ``[T_FLOOR, 1]`` of raw ``(H, W)`` counts of one energy.

        Args:
            raw: counts of one energy; columns are channels.
            energy: 0 for low, 1 for high.

        Raises:
            FrameError: the frame's width is not this scanner's channel count.
        """
        if raw.ndim != 2 or raw.shape[1] != self.flatfield.channels:
            raise FrameError(
                f"raw frame of shape {raw.shape} does not match the flat-field's {self.flatfield.channels} channels"
            )
        out = raw.astype(np.float32)  # then same-type ops: numpy's mixed uint16/float32 loop is 2x slower
        np.subtract(out, self._dark[energy], out=out)
        np.multiply(out, self._inv[energy], out=out)
        np.clip(out, T_FLOOR, 1.0, out=out)
        if self._dead.size:
            out[:, self._dead] = out[:, self._fill]
        return out


def _nearest_live(width: int, dead: list[int]) -> NDArray[np.intp]:
    """For each dead channel, the nearest live one (ties go left)."""
    live = np.setdiff1d(np.arange(width), np.asarray(dead, dtype=np.intp))
    out = []
    for c in dead:
        out.append(int(live[np.argmin(np.abs(live - c) * 2 + (live > c))]))
    return np.asarray(out, dtype=np.intp)


def flatfield_npz_bytes(ff: FlatField) -> bytes:
    """The ``.npz`` payload of a flat-field (arrays only; metadata goes in the YAML sidecar)."""
    buf = io.BytesIO()
    np.savez(buf, dark=ff.dark, air=ff.air, dead=np.asarray(ff.dead, dtype=np.int32))
    return buf.getvalue()


def load_flatfield(path: Path) -> FlatField:
    """Load ``flatfield.npz`` and its YAML sidecar, checking they belong together.

    Raises:
        CalibrationError: either file missing or unreadable, hashes differ, or the arrays are inconsistent.
    """
    meta_path = sidecar_path(path)
    meta = read_yaml_mapping(meta_path)
    version = require(meta, "format_version", int, meta_path)
    if version != FORMAT_VERSION:
        raise CalibrationError(f"{meta_path}: format_version {version} is not supported; expected {FORMAT_VERSION}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CalibrationError(f"{path}: flat-field file not found (run `edge calibrate flatfield`)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != require(meta, "npz_sha256", str, meta_path):
        raise CalibrationError(f"{path}: sha256 {digest[:12]}… does not match {meta_path}; recapture the flat-field")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            dark = np.asarray(npz["dark"], dtype=np.float32)
            air = np.asarray(npz["air"], dtype=np.float32)
            dead = tuple(int(c) for c in npz["dead"])
    except (OSError, KeyError, ValueError) as exc:
        raise CalibrationError(f"{path}: not a flat-field archive: {exc}") from None
    try:
        return FlatField(dark, air, dead, float(require(meta, "captured_wall", (int, float), meta_path)),
                         str(meta.get("source", "")))
    except ValueError as exc:
        raise CalibrationError(f"{path}: {exc}") from None
