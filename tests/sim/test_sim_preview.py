"""Pseudo-colour previews: organics orange, light inorganics green, metals blue, air white, impenetrable black;
the Z estimate from R recovers the materials' true effective Z."""

from __future__ import annotations

import numpy as np
import pytest

from sim.physics import MATERIALS, DualEnergyScanner
from sim.preview import build_zlookup, flat_field, pseudo_colour
from sim.wedge import thickness_for_t_high


@pytest.fixture(scope="module")
def slabs(scanner: DualEnergyScanner) -> dict[str, np.ndarray]:
    """Noisy rendered slabs (64 lines each) at T_high = 0.4, flat-fielded and coloured."""
    rng = np.random.default_rng(21)
    dark, air = scanner.dark_lines(64, rng), scanner.air_lines(64, rng)
    lookup = build_zlookup(scanner)
    out = {}
    for name in ("water", "sugar", "pe", "aluminium", "glass", "steel", "copper"):
        t = thickness_for_t_high(scanner, name, 0.4)
        raw = scanner.render({name: np.full((64, 640), t, np.float32)}, rng)
        out[name] = pseudo_colour(*flat_field(raw, dark, air), lookup).reshape(-1, 3).mean(axis=0)
    raw = scanner.render({"lead": np.full((64, 640), 30.0, np.float32)}, rng)
    out["lead_thick"] = pseudo_colour(*flat_field(raw, dark, air), lookup).reshape(-1, 3).mean(axis=0)
    raw = scanner.render({"water": np.zeros((64, 640), np.float32)}, rng)
    out["air"] = pseudo_colour(*flat_field(raw, dark, air), lookup).reshape(-1, 3).mean(axis=0)
    return out


def test_colour_classes(slabs: dict[str, np.ndarray]) -> None:
    for name in ("water", "sugar", "pe"):
        b, g, r = slabs[name]
        assert r > g > b, name  # orange
    for name in ("aluminium", "glass"):
        b, g, r = slabs[name]
        assert g > r and g > b, name  # green
    for name in ("steel", "copper"):
        b, g, r = slabs[name]
        assert b > g > r, name  # blue
    assert np.all(slabs["air"] > 240)
    assert np.all(slabs["lead_thick"] < 5)


def test_z_estimate_recovers_true_z(scanner: DualEnergyScanner) -> None:
    lookup = build_zlookup(scanner)
    # none of these is a reference material of the lookup (pe, pom, water, glass, Al, Ti, steel, Cu)
    for name in ("cellulose", "sugar", "pvc", "ceramic", "nickel", "ethanol"):
        for t_high in (0.7, 0.3):
            t = thickness_for_t_high(scanner, name, t_high)
            lo, hi = scanner.transmission({name: np.full((1, 1), t, np.float32)})
            z = float(lookup.effective_z(lo, hi)[0, 0])
            assert z == pytest.approx(MATERIALS[name].effective_z, rel=0.1), (name, t_high)
            assert float(lookup.effective_z_fast(lo, hi)[0, 0]) == pytest.approx(z, rel=0.05)
