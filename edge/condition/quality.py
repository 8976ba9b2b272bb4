"""Image-quality gate: is there real X-ray data in this item at all? Runs before detection.

Where it sits: called by the condition stage (``edge.stages.condition``) on the raw counts and the flat-fielded
transmissions of a dual-energy item (or on a degraded source's image), before anything is detected. Why: an
item with no X-ray in it (tube off: every pixel at the dark level; a frame grabber that sent zeros; a saturated
detector; lines dropped or channels dead) has no object for the detector to find, so it was screened CLEAR
(issue 29 point 5). A finding makes the item UNSCREENED with its reason (``no_xray``, ``saturated``,
``lines_missing``, ``dead_columns``); the box never clears what it did not see.

The tests, in this order (the first that fires is reported; ``QualityConfig`` holds the thresholds):

* ``no_xray``: in either energy, fewer than ``min_lit_fraction`` of the pixels rise above ``dark_transmission``
  of the dark→air span (the flat-field's per-channel dark and air levels), or every raw count is zero (the high
  energy is judged first: it is what the tube being off shows most plainly; a dead low-energy layer shows too).
* ``saturated``: more than ``max_saturated_fraction`` of the raw pixels of either energy at ``full_scale_counts``.
  (A saturated frame flat-fields to transmission 1, i.e. empty belt, so only the raw counts show it.)
* ``lines_missing``: more than ``max_missing_line_fraction`` of the belt lines are dark across the whole detector
  in either energy, or hold one constant value (a zero-filled or stuck line; real lines always carry noise).
* ``dead_columns``: more than ``max_dead_column_fraction`` of the channels are dark along the whole item in
  either energy, or constant along it. Channels the flat-field marked dead at commissioning are already filled
  from a neighbour and are not counted.

Degraded images (pseudo-colour RGB or grey, no calibration): all black (fewer than ``min_lit_fraction`` of
pixels above ``degraded_black_level``) is ``no_xray``; all white (fewer than ``min_lit_fraction`` of pixels
below ``degraded_white_level``: nothing but air, or a saturated detector) is ``saturated``; rows and columns
black across the whole image as above (constancy means nothing there: rendered air is constant white). Nothing
else can be judged without raw counts.

Cost: a few reductions over planes the conditioner computes anyway (no full-size float copies); about 2 ms for a
640x1000 item. Must not: change the item, read files, or guess at content (a threshold hit is reported, never
repaired).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.config.condition import QualityConfig
from edge.records import UnscreenedReason

MIN_LINES_FOR_CONSTANCY = 16
"""A channel is only called constant along an item of at least this many lines (noise makes a chance tie
vanishingly rare from there)."""


@dataclass(frozen=True, slots=True)
class QualityFinding:
    """Why an item cannot be screened: the UNSCREENED ``reason`` and a one-line ``detail`` with the measure."""

    reason: UnscreenedReason
    detail: str


def _fraction(count: int, total: int) -> float:
    return count / total if total else 0.0


def _constant_rows(raw: NDArray[np.uint16]) -> NDArray[np.bool_]:
    return np.asarray(raw.min(axis=1) == raw.max(axis=1))


def _constant_columns(raw: NDArray[np.uint16]) -> NDArray[np.bool_]:
    if raw.shape[0] < MIN_LINES_FOR_CONSTANCY:
        return np.zeros(raw.shape[1], dtype=bool)
    return np.asarray(raw.min(axis=0) == raw.max(axis=0))


class QualityGate:
    """Applies one ``QualityConfig``; stateless between items, so the item workers share one instance."""

    def __init__(self, config: QualityConfig) -> None:
        self.config = config

    def inspect_dual(self, low: NDArray[np.uint16], high: NDArray[np.uint16], t_low: NDArray[np.float32],
                     t_high: NDArray[np.float32], known_dead: Sequence[int] = ()) -> QualityFinding | None:
        """Judge a dual-energy item from its raw ``(H, W) uint16`` counts and flat-fielded ``(H, W) float32``
        transmissions; None when it may be screened. ``known_dead``: channels the flat-field marked dead (their
        transmissions are filled from a neighbour; their raw counts may be stuck), not counted as dead columns."""
        cfg = self.config
        if not cfg.enabled:
            return None
        pixels = high.size
        dark = np.float32(cfg.dark_transmission)
        for energy, raw, t in (("high", high, t_high), ("low", low, t_low)):
            if not raw.any():
                return QualityFinding(UnscreenedReason.NO_XRAY, f"every {energy}-energy count is zero (no frame data)")
            lit = _fraction(int(np.count_nonzero(t > dark)), pixels)
            if lit < cfg.min_lit_fraction:
                return QualityFinding(
                    UnscreenedReason.NO_XRAY,
                    f"{lit:.1%} of {energy}-energy pixels above the dark level (+{cfg.dark_transmission:g} of the "
                    f"dark-air span); at least {cfg.min_lit_fraction:.1%} expected: X-ray off?",
                )
        full = cfg.full_scale_counts
        saturated = max(int(np.count_nonzero(low >= full)), int(np.count_nonzero(high >= full)))
        if _fraction(saturated, pixels) > cfg.max_saturated_fraction:
            return QualityFinding(
                UnscreenedReason.SATURATED,
                f"{_fraction(saturated, pixels):.1%} of pixels at full scale ({full} counts); at most "
                f"{cfg.max_saturated_fraction:.1%} allowed",
            )
        lines = high.shape[0]
        missing = ((t_high.max(axis=1) <= dark) | (t_low.max(axis=1) <= dark)
                   | _constant_rows(high) | _constant_rows(low))
        n_missing = int(np.count_nonzero(missing))
        if _fraction(n_missing, lines) > cfg.max_missing_line_fraction:
            return QualityFinding(
                UnscreenedReason.LINES_MISSING,
                f"{n_missing} of {lines} lines dark or constant across the detector (first at line "
                f"{int(np.argmax(missing))}); at most {cfg.max_missing_line_fraction:.1%} allowed",
            )
        channels = high.shape[1]
        dead = ((t_high.max(axis=0) <= dark) | (t_low.max(axis=0) <= dark)
                | _constant_columns(high) | _constant_columns(low))
        dead[list(known_dead)] = False
        return self._columns(dead, channels)

    def inspect_image(self, image: NDArray[np.uint8] | NDArray[np.uint16]) -> QualityFinding | None:
        """Judge a degraded source's image: ``(H, W, 3)`` pseudo-colour or ``(H, W)`` grey (8- or 16-bit)."""
        cfg = self.config
        if not cfg.enabled:
            return None
        scale = 257 if image.dtype == np.uint16 else 1
        # A pixel is black/white only if every colour channel is; grey images have one channel.
        least = image.min(axis=2) if image.ndim == 3 else image
        most = image.max(axis=2) if image.ndim == 3 else image
        black = most <= cfg.degraded_black_level * scale
        pixels = black.size
        lit = 1.0 - _fraction(int(np.count_nonzero(black)), pixels)
        if lit < cfg.min_lit_fraction:
            return QualityFinding(UnscreenedReason.NO_XRAY,
                                  f"image {1 - lit:.1%} black; at least {cfg.min_lit_fraction:.1%} not black expected")
        content = 1.0 - _fraction(int(np.count_nonzero(least >= cfg.degraded_white_level * scale)), pixels)
        if content < cfg.min_lit_fraction:
            return QualityFinding(UnscreenedReason.SATURATED,
                                  f"image {1 - content:.1%} white: nothing but air, or a saturated detector")
        lines = least.shape[0]
        missing = black.all(axis=1)  # rendered air rows are constant white, so only black rows count here
        n_missing = int(np.count_nonzero(missing))
        if _fraction(n_missing, lines) > cfg.max_missing_line_fraction:
            return QualityFinding(
                UnscreenedReason.LINES_MISSING,
                f"{n_missing} of {lines} image rows black across the image; at most "
                f"{cfg.max_missing_line_fraction:.1%} allowed",
            )
        # Air is white and noise-free in a rendered image, so "constant" columns are not dead there: only
        # columns black along the whole item are.
        return self._columns(np.asarray(black.all(axis=0)), least.shape[1])

    def _columns(self, dead: NDArray[np.bool_], channels: int) -> QualityFinding | None:
        n_dead = int(np.count_nonzero(dead))
        if _fraction(n_dead, channels) > self.config.max_dead_column_fraction:
            first = np.flatnonzero(dead)[:8].tolist()
            return QualityFinding(
                UnscreenedReason.DEAD_COLUMNS,
                f"{n_dead} of {channels} channels dark or constant along the item (e.g. {first}); at most "
                f"{self.config.max_dead_column_fraction:.1%} allowed",
            )
        return None
