"""Flat-field capture, storage and correction against the virtual detector's fixed-pattern non-uniformity."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from calib.flatfield import (
    ReferenceLines,
    compute_flatfield,
    read_reference_lines,
    residual_column_pattern,
    save_flatfield,
)
from edge.condition import T_FLOOR, FlatField, FlatFieldCorrector, load_flatfield
from edge.condition.flatfield import sidecar_path
from edge.errors import CalibrationError, FrameError
from sim.physics import DualEnergyScanner, ScannerSpec


@pytest.fixture(scope="module")
def rough_scanner() -> DualEnergyScanner:
    """A detector with strong non-uniformity: 3% channel gain, 10% module gain steps, 150-count offsets.

    The dark level is raised to 1000 counts so that no channel's offset drives the dark signal below the ADC's
    zero (clipped darks are a hardware fault no flat-field can undo), and air lowered so no gain saturates it.
    """
    spec = ScannerSpec(gain_sigma=0.03, module_gain_sigma=0.10, offset_sigma=150.0, dark_level=1000.0,
                       air_level=40_000.0)
    return DualEnergyScanner(spec, seed=5)


def _column_profile(t: np.ndarray) -> np.ndarray:
    cols = t.mean(axis=0, dtype=np.float64)
    return np.asarray(cols - cols.mean())


def test_residual_column_pattern_below_half_percent(rough_scanner: DualEnergyScanner) -> None:
    rng = np.random.default_rng(1)
    dark, air = rough_scanner.dark_lines(256, rng), rough_scanner.air_lines(256, rng)
    ff = compute_flatfield(ReferenceLines(dark.low, dark.high), ReferenceLines(air.low, air.high))
    corrector = FlatFieldCorrector(ff)
    width = rough_scanner.spec.channels
    # Fresh scans the flat-field never saw: empty belt and a uniform 60 mm water slab across the whole belt.
    empty = rough_scanner.air_lines(256, rng)
    slab = rough_scanner.render({"water": np.full((256, width), 60.0, np.float32)}, rng)
    raw_pattern = np.abs(_column_profile(empty.high.astype(np.float64))).max() / empty.high.mean()
    assert raw_pattern > 0.05, "the injected non-uniformity must be visible before correction"
    for scan in (empty, slab):
        for k, raw in enumerate((scan.low, scan.high)):
            t = corrector.apply(raw, k)
            assert np.abs(_column_profile(t)).max() < 0.005
    # the slab's own level is right, not just flat
    _, t_high_true = rough_scanner.transmission({"water": np.full((1, 1), 60.0, np.float32)})
    assert abs(float(corrector.apply(slab.high, 1).mean()) - float(t_high_true[0, 0])) < 0.003
    low_res, high_res = residual_column_pattern(ff, ReferenceLines(empty.low, empty.high))
    assert low_res < 0.005 and high_res < 0.005


def test_output_range_and_dead_channel_fill() -> None:
    rng = np.random.default_rng(2)
    width = 32
    dark = rng.normal(300, 5, (64, 2, width)).astype(np.uint16)
    air = rng.normal(50_000, 200, (64, 2, width)).astype(np.uint16)
    air[:, :, 7] = dark[:, :, 7] + 3  # channel 7 barely responds: a dead diode
    ff = compute_flatfield(ReferenceLines(dark[:, 0], dark[:, 1]), ReferenceLines(air[:, 0], air[:, 1]))
    assert ff.dead == (7,)
    corrector = FlatFieldCorrector(ff)
    frame = np.concatenate([np.full((4, width), 0, np.uint16), np.full((4, width), 65535, np.uint16),
                            air[:4, 1]])
    t = corrector.apply(frame, 1)
    assert t.dtype == np.float32 and t.shape == frame.shape
    assert t.min() >= T_FLOOR and t.max() <= 1.0
    assert np.all(t[:4] == np.float32(T_FLOOR)) and np.all(t[4:8] == 1.0)
    np.testing.assert_array_equal(t[:, 7], t[:, 6])  # nearest live neighbour, ties to the left


def test_wrong_width_frame_is_a_frame_error(flatfield: FlatField) -> None:
    corrector = FlatFieldCorrector(flatfield)
    with pytest.raises(FrameError, match="640 channels"):
        corrector.apply(np.zeros((10, 512), np.uint16), 0)


def test_capture_refuses_saturation_swapped_and_mostly_dead() -> None:
    dark = ReferenceLines(np.full((8, 16), 300, np.uint16), np.full((8, 16), 300, np.uint16))
    air = ReferenceLines(np.full((8, 16), 50_000, np.uint16), np.full((8, 16), 50_000, np.uint16))
    saturated = ReferenceLines(air.low.copy(), air.high.copy())
    saturated.high[3, 4:7] = 65535
    with pytest.raises(CalibrationError, match="saturate the ADC on channels 4-6"):
        compute_flatfield(dark, saturated)
    clipped = ReferenceLines(dark.low.copy(), dark.high.copy())
    clipped.low[::2, 9] = 0
    with pytest.raises(CalibrationError, match="dark lines hit ADC zero on channels 9;"):
        compute_flatfield(clipped, air)
    with pytest.raises(CalibrationError, match="air is not above dark"):
        compute_flatfield(air, dark)
    half_dead = ReferenceLines(air.low.copy(), air.high.copy())
    half_dead.low[:, :8] = 310
    with pytest.raises(CalibrationError, match="8 of 16 channels look dead"):
        compute_flatfield(dark, half_dead)
    with pytest.raises(CalibrationError, match="dark has 16 channels but air has 8"):
        compute_flatfield(dark, ReferenceLines(air.low[:, :8].copy(), air.high[:, :8].copy()))


def test_save_load_roundtrip_history_and_tamper(tmp_path: Path, flatfield: FlatField) -> None:
    path = tmp_path / "cal" / "flatfield.npz"
    assert save_flatfield(flatfield, path, (128, 128)) is None
    loaded = load_flatfield(path)
    np.testing.assert_array_equal(loaded.dark, flatfield.dark)
    np.testing.assert_array_equal(loaded.air, flatfield.air)
    assert loaded.dead == flatfield.dead and loaded.source == "test"
    archived = save_flatfield(flatfield, path)
    assert archived is not None and archived.parent == path.parent / "history" and archived.exists()
    # a different npz beside the sidecar (e.g. a crash between the two writes) is refused, not used
    other = FlatField(flatfield.dark.copy(), (flatfield.air * 1.01).astype(np.float32))
    buf = io.BytesIO()
    np.savez(buf, dark=other.dark, air=other.air, dead=np.zeros(0, np.int32))
    path.write_bytes(buf.getvalue())
    with pytest.raises(CalibrationError, match="does not match"):
        load_flatfield(path)
    sidecar_path(path).unlink()
    with pytest.raises(CalibrationError, match="not found"):
        load_flatfield(path)
    assert not list(path.parent.glob(".*.tmp"))


def test_read_voti_and_npz_reference_lines(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    low = rng.integers(0, 65535, (20, 640), dtype=np.uint16)
    high = rng.integers(0, 65535, (20, 640), dtype=np.uint16)
    header = rng.integers(0, 65535, (30, 1280), dtype=np.uint16)
    raw = tmp_path / "air.raw"
    np.concatenate([header, np.concatenate([low, high], axis=1)]).astype("<u2").tofile(raw)
    lines = read_reference_lines(raw, "voti")
    np.testing.assert_array_equal(lines.low, low)
    np.testing.assert_array_equal(lines.high, high)
    npz = tmp_path / "air.npz"
    np.savez(npz, low=low, high=high)
    lines = read_reference_lines(npz)
    np.testing.assert_array_equal(lines.high, high)
    (tmp_path / "short.raw").write_bytes(b"\x00" * 1001)
    with pytest.raises(CalibrationError, match="VOTI"):
        read_reference_lines(tmp_path / "short.raw", "voti")
