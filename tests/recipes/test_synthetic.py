"""Synthetic metal inserts (issue 7, benign-only anomalies): the physics of one insert, and the cache that
``train classifier`` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edge.contracts import Z_SCALE
from export.recipes.cli import app
from export.recipes.simdata import CropSet, load_crops, save_crops
from export.recipes.synthetic import SYNTHETIC_GROUP, add_metal, insert_mask, synthetic_crops


def _water_crop(size: int = 64) -> np.ndarray:
    """A crop of air with a water-like block in the middle: T_high 0.6, T_low 0.5, Z 7.4."""
    c = np.zeros((6, size, size), np.float32)
    c[0], c[1] = 1.0, 1.0
    c[0, 8:56, 8:56], c[1, 8:56, 8:56], c[2, 8:56, 8:56] = 0.6, 0.5, 7.4 / Z_SCALE
    return c


def test_metal_darkens_the_low_layer_more_and_pulls_z_towards_iron_only_inside_the_part() -> None:
    rng = np.random.default_rng(3)
    crop = _water_crop()
    mask = insert_mask(rng, 64)
    out = add_metal(crop, rng, mask)
    inside, outside = mask > 0.99, mask == 0
    assert inside.sum() > 10
    # transmissions drop, the low layer more (R > 1 for iron), so ln T_low / ln T_high of the added part > 1
    added_h = -np.log(out[0][inside] / crop[0][inside])
    added_l = -np.log(out[1][inside] / crop[1][inside])
    assert (added_h > 0.3).all() and (added_l / added_h > 1.35).all() and (added_l / added_h < 2.25).all()
    # over the water block, Z moves from 7.4 towards iron's 24-28 but not past it; in air, it becomes iron's
    block = np.zeros((64, 64), bool)
    block[8:56, 8:56] = True
    z = out[2] * Z_SCALE
    assert ((z[inside & block] > 7.4) & (z[inside & block] < 28.0)).all()
    assert ((z[inside & ~block] >= 24.0) & (z[inside & ~block] <= 28.0)).all()
    # pixels the part does not cover, and the pseudo-colour channels, are untouched
    assert outside.sum() > 0 and np.array_equal(out[:, outside], crop[:, outside])
    assert np.array_equal(out[3:], crop[3:])


def test_every_insert_is_a_visible_part_that_leaves_most_of_the_object_uncovered() -> None:
    """300 draws over all six shapes (thin springs and small-part clusters included): none may vanish off the crop
    or in the blur, none may bury the host object."""
    rng = np.random.default_rng(5)
    cover = np.array([(insert_mask(rng, 64) > 0.2).mean() for _ in range(300)])  # a 1-px wire blurs to ~0.5
    assert cover.min() > 24 / 64**2 and cover.max() < 0.5
    first = np.array([(insert_mask(rng, 64, shapes=4) > 0.2).mean() for _ in range(100)])
    assert np.median(first) > np.median(cover)  # the two new shapes are the thin and small ones


def test_cache_holds_benign_crops_and_labelled_metal_copies_but_no_threat_crops(tmp_path: Path) -> None:
    n = 40
    crops = np.stack([_water_crop()] * n).astype(np.float16)
    threat = np.zeros(n, bool)
    threat[:4] = True  # a threat crop, a crop hosting one and crops of threat items must not be used
    tainted = np.zeros(n, bool)
    tainted[4:6] = True
    item_threat = threat.copy()
    item_threat[6:8] = True
    src = CropSet(crops, np.arange(n), np.array(["bottle_wine"] * n), np.array(["benign"] * n), threat, tainted,
                  item_threat)
    save_crops(src, tmp_path / "sim" / "crops_000000.npz")
    result = CliRunner().invoke(app, ["synthetic-cache", "--data", str(tmp_path / "sim"), "-o", str(tmp_path / "out"),
                                      "--share", "0.5"])
    assert result.exit_code == 0, result.output
    got = load_crops(tmp_path / "out")
    benign = ~got.threat
    assert benign.sum() == n - 8 and set(got.item[benign]) == set(range(8, n))
    assert 0 < got.threat.sum() < n - 8 and (got.group[got.threat] == SYNTHETIC_GROUP).all()
    assert (got.item_threat == got.threat).all() and not got.tainted.any()
    # every synthetic crop is a darkened copy of a benign crop of the same item
    darker = got.crops[got.threat, 0].astype(np.float32).min(axis=(1, 2)) < 0.6 - 1e-3
    assert darker.all()
    assert set(got.item[got.threat]) <= set(range(8, n))
    assert len(synthetic_crops(src, 0.0, np.random.default_rng(0)).crops) == n - 8
