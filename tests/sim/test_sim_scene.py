"""Scenes: libraries complete, ground truth consistent with the path maps, threats and concealments as asked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sim.objects import BENIGN, HOSTS
from sim.physics import MATERIALS
from sim.scene import ItemTruth, Preset, SceneConfig, build_item
from sim.shapes import Canvas
from sim.threats import CONCEALMENTS, FIREARM_PARTS, KNIVES, THREATS


def _item(seed: int, preset: Preset = Preset.PARCELS, threat_rate: float = 0.5) -> ItemTruth:
    return build_item(np.random.default_rng(seed), preset, SceneConfig(threat_rate=threat_rate), seed)


def test_libraries_cover_the_issue() -> None:
    assert len(BENIGN) >= 20
    for kind in ("clothing", "book", "shoes", "phone", "laptop", "tablet", "charger", "cable", "hairdryer",
                 "toaster", "iron", "cosmetics", "toy", "keys", "coins", "belt", "food_tin"):
        assert kind in BENIGN
    assert sum(k.startswith("bottle") for k in BENIGN) >= 3
    for kind in ("barrel", "slide", "bolt_carrier", "spring", "spring_pin", "magazine", "trigger_assembly",
                 "pistol_frame", "pistol"):
        assert kind in FIREARM_PARTS
    assert len(KNIVES) >= 3
    assert {"screw_cluster", "metal_plate", "organic_block"} <= set(CONCEALMENTS)


@pytest.mark.parametrize("kind", sorted({**BENIGN, **THREATS}))
def test_every_kind_draws_known_materials(kind: str) -> None:
    builder = {**BENIGN, **THREATS}[kind]
    for seed in range(2):
        drawn = builder(np.random.default_rng(seed), 0.8)
        assert drawn.kind == kind
        assert set(drawn.canvas.layers) <= set(MATERIALS)
        total = sum(drawn.canvas.layers.values())
        assert float(np.max(total)) > 0.3
        assert drawn.threat == (kind in THREATS)


def test_lying_cylinder_is_thickest_in_the_middle() -> None:
    c = Canvas(80, 200, 0.8)
    c.cylinder("water", 0, 0, 150, 35)
    profile = c.layers["water"][c.h // 2]
    centre = int(np.argmax(profile))
    assert abs(centre - c.w // 2) <= 1
    assert profile[centre] == pytest.approx(70.0, rel=0.02)
    assert profile[centre] > profile[c.w // 2 + 30] > profile[c.w // 2 + 40] > 0


def test_items_are_deterministic_per_seed() -> None:
    a, b, c = _item(4), _item(4), _item(5)
    assert a.shape == b.shape and set(a.path_mm) == set(b.path_mm)
    assert all(np.array_equal(a.path_mm[m], b.path_mm[m]) for m in a.path_mm)
    assert [o.kind for o in a.objects] == [o.kind for o in b.objects]
    assert a.shape != c.shape or set(a.path_mm) != set(c.path_mm) or any(
        not np.array_equal(a.path_mm[m], c.path_mm[m]) for m in a.path_mm
    )


@pytest.mark.parametrize("preset", list(Preset))
def test_ground_truth_is_consistent(preset: Preset) -> None:
    for seed in range(3):
        item = _item(seed, preset)
        h, w = item.shape
        assert w == 640 and h > 100
        total = np.sum(np.stack(list(item.path_mm.values())), axis=0)
        assert np.array_equal(item.z_eff > 0, total > 0)
        assert np.array_equal(item.material_map > 0, total > 0)
        assert item.material_names[0] == "air"
        for o in item.objects:
            x, y, bw, bh = o.bbox_xywh
            full = o.full_mask(item.shape)
            rows = np.flatnonzero(full.any(axis=1))
            cols = np.flatnonzero(full.any(axis=0))
            assert (x, y, bw, bh) == (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
            # the object's mask only covers pixels that hold material
            assert np.all(total[full] > 0)
        for fp in item.footprints:
            corners = fp.corners_mm()
            assert corners[:, 0].min() >= 0 and corners[:, 0].max() <= 640 * 0.8
            assert corners[:, 1].min() >= 0 and corners[:, 1].max() <= h * 0.8


def test_contents_lie_inside_their_parcel() -> None:
    for seed in range(4):
        item = _item(seed, threat_rate=0.0)
        for o in item.objects:
            if o.group == "container":
                continue
            fp = item.footprints[o.parcel_index]
            poly = (fp.corners_mm() / item.pitch_mm - 0.5).astype(np.float32)
            cy, cx = np.argwhere(o.full_mask(item.shape)).mean(axis=0)
            assert cv2.pointPolygonTest(poly, (float(cx), float(cy)), False) >= 0, o.kind


def test_threat_rate_controls_threats() -> None:
    assert all(_item(s, threat_rate=1.0).threat for s in range(5))
    assert not any(_item(s, threat_rate=0.0).threat for s in range(5))


def test_concealed_objects_sit_inside_their_host() -> None:
    found = 0
    for seed in range(20):
        item = _item(seed, Preset.ELECTRONICS, threat_rate=1.0)
        by_id = {o.object_id: o for o in item.objects}
        for o in item.objects:
            if o.host_id is None:
                continue
            host = by_id[o.host_id]
            assert host.kind in HOSTS and o.threat and not host.threat
            inside = (o.full_mask(item.shape) & host.full_mask(item.shape)).sum() / o.area
            assert inside > 0.9, (o.kind, host.kind, inside)
            found += 1
    assert found >= 3


def test_threat_metals_have_higher_true_z_than_organics() -> None:
    zs: dict[str, list[float]] = {"metal": [], "organic": []}
    for seed in range(10):
        for o in _item(seed, threat_rate=1.0).objects:
            if o.kind in ("slide", "barrel", "kitchen_knife", "bolt_carrier", "dagger"):
                zs["metal"].append(o.effective_z)
            if o.kind in ("book", "food"):
                zs["organic"].append(o.effective_z)
    assert zs["metal"] and zs["organic"]
    assert min(zs["metal"]) > 20 > 10 > max(zs["organic"])
