"""`sim generate`: files a scanner would write, COCO readable by pycocotools with boxes that agree with masks,
identical output for the same seed whatever the number of workers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from typer.testing import CliRunner

from sim.cli import sim_app
from sim.coco import rle_decode, rle_encode, rle_encode_window
from sim.dataset import GenerateConfig, ItemStream, generate
from sim.scene import Preset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "a"
    generate(GenerateConfig(n=4, seed=3, threat_rate=0.5, workers=2), out)
    return out


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    assert img is not None, f"cannot read {path}"
    return img


def test_rle_round_trip_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    m[0, 0] = True
    rle = rle_encode(m)
    assert np.array_equal(rle_decode(rle), m)
    coco_rle = mask_utils.frPyObjects(rle, 37, 53)
    assert np.array_equal(mask_utils.decode(coco_rle).astype(bool), m)
    window = m[5:30, 7:40]
    full = np.zeros_like(m)
    full[5:30, 7:40] = window
    from_window = rle_encode_window(window, (5, 7), (37, 53))
    assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(from_window, 37, 53)).astype(bool), full)


def test_files_look_like_scanner_output(dataset: Path) -> None:
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["n"] == 4
    for name in ("dark_low", "dark_high", "air_low", "air_high"):
        ref = _read(dataset / "reference" / f"{name}.png")
        assert ref.dtype == np.uint16 and ref.shape == (64, 640)
    for item in sorted((dataset / "items").iterdir()):
        truth = json.loads((item / "truth.json").read_text())
        low = _read(item / "low.png")
        high = _read(item / "high.png")
        assert low.dtype == np.uint16 and low.shape == high.shape == (truth["height"], 640)
        preview = _read(item / "preview.png", cv2.IMREAD_COLOR)
        assert preview.shape == (truth["height"], 640, 3)
        cam = _read(item / "camera.jpg", cv2.IMREAD_COLOR)
        assert cam is not None and cam.ndim == 3
        npz = np.load(item / "truth.npz")
        assert npz["z_eff"].shape == low.shape
        # Material attenuates: where the truth says there is metal-rich stuff, the high-energy counts drop.
        air = _read(dataset / "reference" / "air_high.png").mean(axis=0)
        empty = npz["material_map"] == 0
        assert np.abs(high[empty] / np.broadcast_to(air, high.shape)[empty] - 1).mean() < 0.02
        assert (high[~empty] / np.broadcast_to(air, high.shape)[~empty]).mean() < 0.95
        assert len(truth["footprints"]) >= 1 and {"centre_x_mm", "surface_seed"} <= set(truth["footprints"][0])


def test_coco_loads_and_boxes_agree_with_masks(dataset: Path) -> None:
    coco = COCO(str(dataset / "annotations.json"))
    assert len(coco.getImgIds()) == 4
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) > 8
    ids = {a["id"] for a in anns}
    assert len(ids) == len(anns)
    for a in anns:
        m = coco.annToMask(a)
        img = coco.loadImgs(a["image_id"])[0]
        assert m.shape == (img["height"], img["width"])
        rows, cols = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
        assert a["area"] == m.sum()
        assert a["host_id"] is None or a["host_id"] in ids
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert {"pistol", "laptop", "kitchen_knife", "box"} <= names


def test_events_describe_the_items(dataset: Path) -> None:
    events = [json.loads(line) for line in (dataset / "events.jsonl").read_text().splitlines()]
    heights = {p.name: json.loads((p / "truth.json").read_text())["height"] for p in (dataset / "items").iterdir()}
    ends = {e["item_id"]: e["lines"] for e in events if e["type"] == "ItemEnd"}
    assert ends == heights


def test_same_seed_same_dataset_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "b"
    generate(GenerateConfig(n=4, seed=3, threat_rate=0.5, workers=1), other)
    for rel in ("annotations.json", "events.jsonl", "items/000002/high.png", "items/000003/low.png",
                "items/000001/truth.json", "items/000000/camera.jpg"):
        assert (dataset / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_cli_generate_and_refuse_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(sim_app, ["generate", "--help"]).output
    assert "Example" in help_text and "--threat-rate" in help_text and "--preset" in help_text
    out = tmp_path / "cli"
    args = ["generate", "--n", "2", "--seed", "9", "--out", str(out), "--preset", "electronics", "--no-camera",
            "--workers", "1", "--threat-rate", "1.0"]
    result = runner.invoke(sim_app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["preset"] == "electronics" and summary["threat_items"] == 2
    again = runner.invoke(sim_app, args)
    assert again.exit_code == 2
    assert "not empty" in again.output
    bad = runner.invoke(sim_app, ["generate", "--n", "1", "--out", str(tmp_path / "x"), "--preset", "cars"])
    assert bad.exit_code != 0


def test_item_stream_matches_generated_files(dataset: Path) -> None:
    stream = ItemStream(seed=3, preset=Preset.PARCELS, threat_rate=0.5)
    first, second = next(stream), next(stream)
    assert (first.item_id, second.item_id) == ("000000", "000001")
    high = _read(dataset / "items" / "000001" / "high.png")
    assert np.array_equal(second.raw.high, high)
    truth = json.loads((dataset / "items" / "000001" / "truth.json").read_text())
    assert [o["kind"] for o in truth["objects"]] == [o.kind for o in second.truth.objects]
    assert np.array_equal(stream.air.high, _read(dataset / "reference" / "air_high.png"))


def test_cli_gallery_needs_real_images(tmp_path: Path) -> None:
    result = CliRunner().invoke(sim_app, ["gallery", "--out", str(tmp_path / "g.png"), "--realdata",
                                          str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "real X-ray images not found" in result.output
    assert not (tmp_path / "g.png").exists()


def _sigterm_is_default() -> bool:
    import signal

    return signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_forked_generate_workers_take_sigterm_by_default_whatever_the_parent_installed() -> None:
    """A parent with a flag-only SIGTERM handler (``edge run``'s, left by an in-process ``edge demo``) passed it to
    the fork pool's workers; ``Pool.terminate`` at the end of ``generate`` then could not stop an idle worker, and
    the run hung (seen in CI: the eval tests' assets timed out after 300 s)."""
    import multiprocessing as mp
    import signal

    from sim import dataset

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with mp.get_context("fork").Pool(1, initializer=dataset._default_signals) as pool:
            assert pool.apply(_sigterm_is_default)
        with mp.get_context("fork").Pool(1) as pool:
            assert not pool.apply(_sigterm_is_default), "the parent's handler is inherited without the initializer"
    finally:
        signal.signal(signal.SIGTERM, previous)
