"""Calibration/validation data: conditioned .npz items go through the runtime composer; bad items are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.condition.composer import compose
from edge.condition.image import ConditionedImage, Modality
from edge.contracts import Channel, InputContract
from export.calibration import load_inputs
from export.errors import ExportError

CONTRACT = InputContract(channels=(Channel.HLZ,), height=16, width=24, mean=(0.5, 0.5, 0.3), std=(0.2, 0.2, 0.1))


def _planes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    h = rng.uniform(0.1, 1.0, (40, 50)).astype(np.float32)
    return {"t_high": h, "t_low": (h * 0.8).astype(np.float32),
            "zeff": rng.uniform(5, 26, (40, 50)).astype(np.float32)}


def test_conditioned_items_are_composed_like_the_runtime(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items = [_planes(rng) for _ in range(3)]
    for i, planes in enumerate(items):
        np.savez(tmp_path / f"item{i}.npz", label=i % 2, **planes)
    composed = np.random.default_rng(1).random((2, 3, 16, 24), dtype=np.float32)
    np.save(tmp_path / "z_extra.npy", composed)
    (tmp_path / "labels.json").write_text(json.dumps({"z_extra": 1}))
    data = load_inputs(tmp_path, CONTRACT)
    assert data.inputs.shape == (5, 3, 16, 24)
    for i, planes in enumerate(items):
        want = compose(ConditionedImage(Modality.DUAL_ENERGY, **planes), CONTRACT)[0]
        np.testing.assert_array_equal(data.inputs[i], want)
    np.testing.assert_array_equal(data.inputs[3:], composed)
    assert data.labels is not None and data.labels.tolist() == [0, 1, 0, 1, 1]
    calib, val = data.split(4)
    assert len(calib.inputs) == 4 and len(val.inputs) == 1 and val.labels is not None


def test_items_that_break_the_contract_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 16, 20), np.float32))
    with pytest.raises(ExportError, match=r"a\.npy: tensor shape \(1, 3, 16, 20\) does not match"):
        load_inputs(tmp_path, CONTRACT)
    (tmp_path / "a.npy").unlink()
    np.savez(tmp_path / "pc_only.npz", pc=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ExportError, match=r"pc_only\.npz: unreadable item"):
        load_inputs(tmp_path, CONTRACT)
    with pytest.raises(ExportError, match="no such data folder"):
        load_inputs(tmp_path / "missing", CONTRACT)
