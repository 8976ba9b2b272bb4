"""Step wedge: steps span the calibration range and their flat-fielded pixels agree with the per-step truth."""

from __future__ import annotations

import numpy as np

from sim.physics import MATERIALS, DualEnergyScanner
from sim.wedge import DEFAULT_WEDGE_MATERIALS, render_wedge


def test_wedge_steps_span_range_and_match_truth(scanner: DualEnergyScanner) -> None:
    scan = render_wedge(scanner, np.random.default_rng(11))
    assert {s.material for s in scan.steps} == set(DEFAULT_WEDGE_MATERIALS)
    d_lo, d_hi = (x.astype(np.float64).mean(axis=0) for x in (scan.dark.low, scan.dark.high))
    a_lo, a_hi = (x.astype(np.float64).mean(axis=0) for x in (scan.air.low, scan.air.high))
    t_lo = (scan.raw.low - d_lo) / (a_lo - d_lo)
    t_hi = (scan.raw.high - d_hi) / (a_hi - d_hi)
    for name in DEFAULT_WEDGE_MATERIALS:
        steps = [s for s in scan.steps if s.material == name]
        thick = [s.thickness_mm for s in steps]
        assert thick == sorted(thick) and len(set(thick)) == len(thick)
        assert max(s.t_high for s in steps) > 0.85 and min(s.t_high for s in steps) < 0.07
        assert all(s.effective_z == MATERIALS[name].effective_z for s in steps)
        for s in steps:
            region = s.inner()
            assert abs(np.mean(t_hi[region]) - s.t_high) < 0.01
            assert abs(np.mean(t_lo[region]) - s.t_low) < 0.01
            # The region really holds that material at that thickness.
            assert np.all(scan.path_mm[name][region] == np.float32(s.thickness_mm))
    # Steps never overlap one another.
    seen = np.zeros(scan.raw.shape, bool)
    for s in scan.steps:
        block = seen[s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]]
        assert not block.any()
        block[:] = True
