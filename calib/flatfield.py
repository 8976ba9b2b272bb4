"""``edge calibrate flatfield``: capture dark (beam off) and air (empty belt) lines and store the flat-field.

Where it sits: commissioning, and periodically after (air drifts with tube ageing and temperature). The
runtime reads the result through ``edge.condition.flatfield.load_flatfield``; this module only computes and
writes it. Storage: ``flatfield.npz`` (per-energy, per-channel mean dark and air counts, dead channels) and
``flatfield.yaml`` beside it (when, from what, statistics, the npz's sha256). Both are written atomically and
the versions they replace are kept in ``history/``.

Frame sources for the reference lines: the virtual scanner (``--from-sim``), or two raw files, each either an
``.npz``/``.npy`` with ``low`` and ``high`` ``(lines, channels) uint16`` arrays or a Durham VOTI raw file
(uint16 lines ``[low | high]`` after a header).

Must not: touch any file but the flat-field pair and its history; accept references that would make the
runtime divide by (almost) zero (a dead channel is recorded, too many dead channels are refused).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer
from numpy.typing import NDArray

from calib.paths import condition_path
from edge.condition.calfile import atomic_write_bytes, atomic_write_yaml
from edge.condition.flatfield import (
    FORMAT_VERSION,
    FlatField,
    FlatFieldCorrector,
    flatfield_npz_bytes,
    sidecar_path,
)
from edge.errors import CalibrationError

ADC_MAX = 65535
MAX_DEAD_FRACTION = 0.05
"""Refuse a capture in which more channels than this look dead: the beam or the belt was probably wrong."""


@dataclass(frozen=True, slots=True)
class ReferenceLines:
    """Raw reference lines of both energies: ``(lines, channels) uint16`` each."""

    low: NDArray[np.uint16]
    high: NDArray[np.uint16]

    def __post_init__(self) -> None:
        if self.low.ndim != 2 or self.low.shape != self.high.shape:
            raise CalibrationError(f"reference lines must be equal (lines, channels), got {self.low.shape}"
                                   f" and {self.high.shape}")
        if self.low.shape[0] < 1:
            raise CalibrationError("reference capture holds no lines")


def compute_flatfield(dark: ReferenceLines, air: ReferenceLines, source: str = "",
                      min_span_fraction: float = 0.2) -> FlatField:
    """Average the reference lines per channel and energy and mark dead channels.

    A channel is dead when, in either energy, its air-minus-dark span is below ``min_span_fraction`` of the
    median span.

    Raises:
        CalibrationError: widths differ, the air saturates the ADC, the dark clips at ADC zero, the air is
            not above dark (beam off?), or too many channels are dead.
    """
    if dark.low.shape[1] != air.low.shape[1]:
        raise CalibrationError(f"dark has {dark.low.shape[1]} channels but air has {air.low.shape[1]}")
    dark_mean = np.stack([dark.low.mean(axis=0), dark.high.mean(axis=0)]).astype(np.float32)
    air_mean = np.stack([air.low.mean(axis=0), air.high.mean(axis=0)]).astype(np.float32)
    saturated = sorted({int(c) for c in np.flatnonzero((air.low >= ADC_MAX).any(axis=0) |
                                                       (air.high >= ADC_MAX).any(axis=0))})
    if saturated:
        raise CalibrationError(f"air lines saturate the ADC on channels {_ranges(saturated)}; lower the tube "
                               "current or the integration time and capture again")
    clipped = sorted({int(c) for c in np.flatnonzero(((dark.low == 0).mean(axis=0) > 0.01) |
                                                     ((dark.high == 0).mean(axis=0) > 0.01))})
    if clipped:
        # A dark level clipped at the ADC's zero reads too high, and every transmission below air comes out
        # biased by a per-channel amount: the very column pattern the flat-field exists to remove.
        raise CalibrationError(f"dark lines hit ADC zero on channels {_ranges(clipped)}; raise the detector's "
                               "dark offset so the beam-off signal stays above zero")
    span = air_mean - dark_mean
    median = np.median(span, axis=1, keepdims=True)
    if np.any(median <= 0):
        raise CalibrationError("air is not above dark: was the beam off during the air capture, "
                               "or dark and air swapped?")
    dead_mask = (span < min_span_fraction * median).any(axis=0)
    dead = tuple(int(c) for c in np.flatnonzero(dead_mask))
    if len(dead) > MAX_DEAD_FRACTION * span.shape[1]:
        raise CalibrationError(f"{len(dead)} of {span.shape[1]} channels look dead ({_ranges(list(dead))}); "
                               "check the beam, the belt (empty?) and the detector cabling")
    return FlatField(dark_mean, air_mean, dead, time.time(), source)


def save_flatfield(ff: FlatField, path: Path, lines: tuple[int, int] = (0, 0)) -> Path | None:
    """Write ``path`` (npz) and its YAML sidecar atomically; return where the previous npz was archived."""
    data = flatfield_npz_bytes(ff)
    archived = atomic_write_bytes(path, data, keep_history=True)
    span = ff.air - ff.dark
    meta = {
        "format_version": FORMAT_VERSION,
        "captured_wall": float(ff.captured_wall),
        "captured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ff.captured_wall)),
        "source": ff.source,
        "channels": ff.channels,
        "dark_lines": int(lines[0]),
        "air_lines": int(lines[1]),
        "dead_channels": list(ff.dead),
        "stats": {
            energy: {
                "dark_mean": round(float(ff.dark[k].mean()), 2),
                "air_mean": round(float(ff.air[k].mean()), 2),
                "gain_spread_pct": round(float(100 * span[k].std() / span[k].mean()), 3),
            }
            for k, energy in enumerate(("low", "high"))
        },
        "npz": path.name,
        "npz_sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_yaml(sidecar_path(path), meta)
    return archived


def residual_column_pattern(ff: FlatField, air: ReferenceLines) -> tuple[float, float]:
    """Peak-to-mean column deviation of fresh air lines after correction, per energy, as a fraction of air.

    This is the acceptance figure (flat-field removes the fixed pattern to under 0.5% of the air level).
    """
    corrector = FlatFieldCorrector(ff)
    out = []
    for k, raw in enumerate((air.low, air.high)):
        cols = corrector.apply(raw, k).mean(axis=0, dtype=np.float64)
        out.append(float(np.max(np.abs(cols - cols.mean()))))
    return out[0], out[1]


def read_reference_lines(path: Path, fmt: str = "auto", channels: int = 640, header_lines: int = 30) -> ReferenceLines:
    """Read raw reference lines from ``.npz``/``.npy`` (``low``/``high`` arrays) or a VOTI raw file.

    Raises:
        CalibrationError: unreadable file or wrong layout (the message says which layout was expected).
    """
    if fmt == "auto":
        fmt = "npz" if path.suffix in (".npz", ".npy") else "voti"
    try:
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as npz:
                return ReferenceLines(np.asarray(npz["low"], np.uint16), np.asarray(npz["high"], np.uint16))
        if fmt == "voti":
            raw = np.fromfile(path, dtype="<u2")
            per_line = 2 * channels
            if raw.size % per_line or raw.size // per_line <= header_lines:
                raise CalibrationError(f"{path}: {raw.size} samples is not a whole number of {per_line}-sample "
                                       f"lines after a {header_lines}-line header (VOTI layout [low | high])")
            lines = raw.reshape(-1, per_line)[header_lines:]
            return ReferenceLines(np.ascontiguousarray(lines[:, :channels]),
                                  np.ascontiguousarray(lines[:, channels:]))
    except (OSError, KeyError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read reference lines as {fmt}: {exc}") from None
    raise CalibrationError(f"unknown format {fmt!r}; expected auto, npz or voti")


def capture_from_sim(seed: int, lines: int) -> tuple[ReferenceLines, ReferenceLines]:
    """Dark and air lines from the virtual scanner (the fixed pattern depends on ``seed``)."""
    from sim.physics import DualEnergyScanner  # the scanner fake; imported only when asked for

    scanner = DualEnergyScanner(seed=seed)
    rng = np.random.default_rng(seed + 1)
    dark, air = scanner.dark_lines(lines, rng), scanner.air_lines(lines, rng)
    return ReferenceLines(dark.low, dark.high), ReferenceLines(air.low, air.high)


def default_out(config: Path | None) -> Path:
    """The flatfield calibration path of ``config`` (see ``calib.paths.condition_path``)."""
    return condition_path(config, "flatfield_file")


def flatfield_command(
    out: Path | None = typer.Option(None, "--out", "-o", help="npz to write (YAML sidecar beside it); "
                                    "default: condition.flatfield_file of --config"),
    config: Path | None = typer.Option(None, "--config", "-c", help="edge.yaml whose condition section names "
                                       "the output"),
    from_sim: bool = typer.Option(False, "--from-sim", help="capture from the virtual scanner"),
    seed: int = typer.Option(0, help="virtual scanner seed (its fixed-pattern noise)"),
    lines: int = typer.Option(256, min=8, help="lines to capture per reference (virtual scanner)"),
    dark: Path | None = typer.Option(None, help="raw dark lines (beam off): .npz with low/high, or VOTI raw"),
    air: Path | None = typer.Option(None, help="raw air lines (empty belt): .npz with low/high, or VOTI raw"),
    fmt: str = typer.Option("auto", "--format", help="auto, npz or voti"),
    channels: int = typer.Option(640, help="channels per energy (VOTI raw)"),
    header_lines: int = typer.Option(30, help="header lines to skip (VOTI raw)"),
) -> None:
    """Capture dark and air references and store the flat-field (atomically, previous one kept in history/).

    Examples:
      edge calibrate flatfield --from-sim --out /tmp/cal/flatfield.npz
      edge calibrate flatfield --dark dark.raw --air air.raw --format voti -c /etc/edge/edge.yaml
    """
    target = out if out is not None else default_out(config)
    try:
        if from_sim:
            d, a = capture_from_sim(seed, lines)
            source = f"sim seed={seed}"
        elif dark is not None and air is not None:
            d = read_reference_lines(dark, fmt, channels, header_lines)
            a = read_reference_lines(air, fmt, channels, header_lines)
            source = f"dark={dark} air={air}"
        else:
            typer.echo("give either --from-sim or both --dark and --air", err=True)
            raise typer.Exit(code=2)
        ff = compute_flatfield(d, a, source)
        # Acceptance check on the air lines themselves would be circular: split them, fit on one half.
        half = max(1, a.low.shape[0] // 2)
        check = compute_flatfield(d, ReferenceLines(a.low[:half], a.high[:half]), source)
        res = residual_column_pattern(check, ReferenceLines(a.low[half:], a.high[half:])) \
            if a.low.shape[0] > 1 else (float("nan"), float("nan"))
        archived = save_flatfield(ff, target, (int(d.low.shape[0]), int(a.low.shape[0])))
    except CalibrationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"wrote {target} and {sidecar_path(target)}: {ff.channels} channels, "
               f"{len(ff.dead)} dead {list(ff.dead)[:10]}")
    typer.echo(f"residual column pattern (held-out air lines): low {100 * res[0]:.3f}% high "
               f"{100 * res[1]:.3f}% of air")
    if archived is not None:
        typer.echo(f"previous flat-field kept as {archived}")


def _ranges(cols: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``1-3, 7`` for readable channel lists."""
    if not cols:
        return ""
    parts, start, prev = [], cols[0], cols[0]
    for c in [*cols[1:], None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if c is not None:
            start = prev = c
    return ", ".join(parts)
