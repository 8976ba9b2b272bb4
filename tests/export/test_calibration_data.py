"""INT8 calibration and parity inputs straight from a labelled dataset folder or from the audit store (issue 31).

Every input must be exactly what the service composes for that item (the runtime's own conditioning and
composer), so the expected tensors here are built through the runtime, not re-implemented. The audit store is
written in its real layout from raw virtual-scanner counts; the virtual scanner stands in for the hardware only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calib.cli import calibrate_app
from edge.condition.composer import compose
from edge.condition.conditioner import Conditioner
from edge.contracts import Channel, InputContract, ResizePolicy
from edge.sources.item_meta import file_item_meta
from edge.stages.condition import degraded_image
from edge_tools.eval.datasets import load_raw_item, read_dataset
from export.calibration import audit_inputs, conditioner_from, dataset_inputs, load_inputs
from export.errors import ExportError
from sim.dataset import GenerateConfig, generate
from tests.recipes.test_own_data import OBJECTS, make_voc

REPO = Path(__file__).resolve().parents[2]
DETECTOR = InputContract(channels=(Channel.PC,), height=64, width=64, resize=ResizePolicy.LETTERBOX,
                         mean=(0.5,) * 3, std=(0.25,) * 3)
CROPS = InputContract(channels=(Channel.PC,), height=32, width=32, resize=ResizePolicy.LETTERBOX,
                      mean=(0.5,) * 3, std=(0.25,) * 3)
SEED = 5


def test_dataset_folder_gives_the_services_inputs(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    got = load_inputs(root, DETECTOR)  # told apart from a tensor folder by its layout
    assert got.inputs.shape == (4, 3, 64, 64) and got.labels is not None and got.labels.tolist() == [1, 1, 1, 1]
    item = read_dataset(root).items[0]
    raw = load_raw_item(item, file_item_meta("t", 0, item.key, 30.0))
    assert raw.image is not None
    np.testing.assert_array_equal(got.inputs[0], compose(degraded_image(raw.image), DETECTOR)[0])
    crops = load_inputs(root, CROPS, crops=True)
    assert crops.inputs.shape == (len(OBJECTS), 3, 32, 32)
    box = item.truth.objects[0].box
    np.testing.assert_array_equal(crops.inputs[0], compose(degraded_image(raw.image), CROPS, np.asarray([box]))[0])
    (root / "images" / "s2.png").write_bytes(b"not a png")
    fewer = dataset_inputs(root, DETECTOR)
    assert len(fewer.inputs) == 3 and "1 unreadable images left out" in fewer.source


@pytest.fixture(scope="module")
def sim_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two raw virtual-scanner items and a service config naming that scanner's calibrations."""
    work = tmp_path_factory.mktemp("sim-site")
    generate(GenerateConfig(n=2, seed=SEED, threat_rate=1.0, camera=False, workers=1), work / "sim")
    flat, energy = work / "flatfield.npz", work / "energy.yaml"
    runner = CliRunner()
    for args in (["flatfield", "--from-sim", "--seed", str(SEED), "-o", str(flat)],
                 ["energy", "--from-sim", "--seed", str(SEED), "-o", str(energy)]):
        result = runner.invoke(calibrate_app, args)
        assert result.exit_code == 0, result.output
    config = work / "edge.yaml"
    config.write_text(f"site:\n  site_id: t\n  scanner_id: l1\nsource:\n  type: spool\n  directory: {work}\n"
                      f"condition:\n  flatfield_file: {flat}\n  energy_file: {energy}\n"
                      f"models:\n  detector: {REPO / 'models' / 'detector-agnostic'}\n")
    return work / "sim", config


def test_audit_store_inputs_are_conditioned_with_the_sites_calibrations(tmp_path: Path,
                                                                         sim_site: tuple[Path, Path]) -> None:
    sim, config = sim_site
    audit = tmp_path / "audit"
    day = audit / "2026-12-06"
    day.mkdir(parents=True)
    raws = []
    for n, item in enumerate(read_dataset(sim).items):
        raw = load_raw_item(item, file_item_meta("t", n, item.key, 30.0))
        assert raw.low is not None and raw.high is not None
        np.savez_compressed(day / f"item-{n}.npz", high=raw.high, low=raw.low)  # as AuditStore.save_inputs
        objects = [{"box": {"x1": 10.0, "y1": 12.0, "x2": 60.0, "y2": 70.0}}] * (n + 1)
        (day / f"item-{n}.json").write_text(json.dumps({"verdict": "alarm" if n else "clear",
                                                        "objects": objects}))
        raws.append(raw)
    (day / "item-9.npz").write_bytes(b"half written")  # a broken file is counted, not fatal
    conditioner = conditioner_from(config)
    assert isinstance(conditioner, Conditioner)
    whole = load_inputs(audit, DETECTOR, conditioner=conditioner)
    assert whole.inputs.shape == (2, 3, 64, 64) and "1 unreadable" in whole.source
    expected = compose(conditioner.condition(raws[0].low, raws[0].high), DETECTOR)[0]
    np.testing.assert_array_equal(whole.inputs[0], expected)
    crops = audit_inputs(audit, CROPS, conditioner, crops=True)
    assert crops.inputs.shape == (3, 3, 32, 32)  # one box in item 0, two in item 1
    assert crops.labels is not None and crops.labels.tolist() == [0, 1, 1]  # ALARM items' crops are labelled 1
    with pytest.raises(ExportError, match="--config"):
        audit_inputs(audit, DETECTOR, None)
    with pytest.raises(ExportError, match="--config"):
        dataset_inputs(sim, DETECTOR)  # raw counts in a dataset need the calibrations too
    shutil.rmtree(day)
    day.mkdir()
    (day / "x.json").write_text("{}")
    with pytest.raises(ExportError):
        load_inputs(audit, DETECTOR, conditioner=conditioner)  # no saved inputs: not an audit store to read


def test_raw_dual_energy_dataset_trains_through_the_sites_conditioner(sim_site: tuple[Path, Path]) -> None:
    """`edge sim generate` output (raw counts, COCO): needs --config, then gives the service's own pc/h inputs."""
    from edge_tools.eval.records import DatasetError
    from export.recipes.owndata import load_labelled, store_contract

    sim, config = sim_site
    with pytest.raises(DatasetError, match="--config"):
        load_labelled(sim, "pc", 64, progress=False)
    conditioner = conditioner_from(config)
    for channels in ("pc", "h"):
        data = load_labelled(sim, channels, 64, conditioner=conditioner, progress=False).data
        assert len(data) == 2 and data.images.shape[1] == (3 if channels == "pc" else 1)
        item = read_dataset(sim).items[0]
        raw = load_raw_item(item, file_item_meta("t", 0, item.key, 30.0))
        want = compose(conditioner.condition(raw.low, raw.high), store_contract(channels, 64))[0]
        np.testing.assert_array_equal(data.images[0], np.clip(np.rint(want * 255.0), 0, 255).astype(np.uint8))
        assert sum(len(b) for b in data.boxes) > 0
