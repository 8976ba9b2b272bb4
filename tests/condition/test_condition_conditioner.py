"""End to end: raw counts of a virtual-scanner item through flat-field, effective Z, pseudo-colour and composer."""

from __future__ import annotations

import numpy as np
import pytest

from edge.condition import Conditioner, Modality, compose
from edge.contracts import Channel, InputContract
from edge.errors import FrameError
from sim.physics import DualEnergyScanner, effective_z_map

H, W = 300, 640


@pytest.fixture(scope="module")
def item(scanner: DualEnergyScanner) -> dict[str, np.ndarray]:
    """A water bottle, an aluminium plate, a steel bar, and a water+steel overlap, on an otherwise empty belt."""
    water = np.zeros((H, W), np.float32)
    alu = np.zeros((H, W), np.float32)
    steel = np.zeros((H, W), np.float32)
    water[40:260, 40:200] = 70.0
    alu[40:260, 260:400] = 15.0
    steel[40:260, 460:520] = 3.0
    steel[120:180, 100:140] = 2.0  # overlaps the water
    return {"water": water, "aluminium": alu, "steel": steel}


def test_regions_get_their_material_and_colour(scanner: DualEnergyScanner, conditioner: Conditioner,
                                               item: dict[str, np.ndarray]) -> None:
    raw = scanner.render(item, np.random.default_rng(3))
    img = conditioner.condition(raw.low, raw.high)
    assert img.modality is Modality.DUAL_ENERGY
    assert img.available == frozenset(Channel)
    assert img.zeff is not None and img.pc is not None and img.t_high is not None
    truth = effective_z_map(item)
    regions = {"water": (slice(50, 110), slice(50, 190)), "aluminium": (slice(50, 250), slice(270, 390)),
               "steel": (slice(50, 250), slice(465, 515)), "overlap": (slice(130, 170), slice(105, 135))}
    for name, sl in regions.items():
        assert float(np.median(img.zeff[sl])) == pytest.approx(float(np.median(truth[sl])), abs=1.5), name
    r, g, b = (float(np.median(img.pc[regions["water"]][..., k])) for k in range(3))
    assert r > g > b  # organic orange
    r, g, b = (float(np.median(img.pc[regions["aluminium"]][..., k])) for k in range(3))
    assert g > r and g > b  # inorganic green
    r, g, b = (float(np.median(img.pc[regions["steel"]][..., k])) for k in range(3))
    assert b > r and b > g  # metal blue
    air = (slice(0, 30), slice(0, W))
    assert np.all(img.zeff[air] == 0.0)
    assert float(np.median(img.pc[air])) >= 250
    assert float(np.median(img.t_high[air])) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError):
        img.zeff[0, 0] = 1.0  # records are read-only


def test_impenetrable_is_black(scanner: DualEnergyScanner, conditioner: Conditioner) -> None:
    lead = np.zeros((40, W), np.float32)
    lead[:, 200:300] = 30.0
    raw = scanner.render({"lead": lead}, np.random.default_rng(4))
    img = conditioner.condition(raw.low, raw.high)
    assert img.pc is not None
    assert int(img.pc[5:35, 210:290].max()) <= 10


def test_compose_whole_item_and_objects(scanner: DualEnergyScanner, conditioner: Conditioner,
                                        item: dict[str, np.ndarray]) -> None:
    raw = scanner.render(item, np.random.default_rng(5))
    img = conditioner.condition(raw.low, raw.high)
    detector = InputContract((Channel.PC,), 320, 320)
    scorer = InputContract((Channel.HLZ,), 64, 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert compose(img, detector).shape == (1, 3, 320, 320)
    crops = compose(img, scorer, np.array([[40, 40, 200, 260], [460, 40, 520, 260]]))
    assert crops.shape == (2, 3, 64, 64)
    z_water, z_steel = (float(np.median(crops[i, 2])) * 0.25 + 0.5 for i in range(2))
    assert z_water < z_steel


def test_bad_frames_are_frame_errors(conditioner: Conditioner) -> None:
    with pytest.raises(FrameError, match="equal"):
        conditioner.condition(np.zeros((4, 640), np.uint16), np.zeros((5, 640), np.uint16))
    with pytest.raises(FrameError, match="channels"):
        conditioner.condition(np.zeros((4, 600), np.uint16), np.zeros((4, 600), np.uint16))
