"""The detector's box refiner: crops land where the boxes are, deltas invert, a fresh refiner changes nothing,
training samples only overlapping candidates, and a refined detector trains, evaluates and resumes through the CLI.

The crops are checked against an image whose pixel values are their own coordinates, so a sample's value says
where it was taken; everything else runs the real modules on small inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from export.recipes import detector as det
from export.recipes.cli import app
from export.recipes.refiner import EXPAND, RefinerShape, apply_deltas, crop_boxes, target_deltas
from export.recipes.refiner_training import _samples
from tests.recipes.test_detector import _shard


def _coordinates(n: int, h: int, w: int) -> torch.Tensor:
    """(n, 2, h, w): channel 0 = x of the pixel centre, channel 1 = y, plus 1000 x the image index."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([torch.stack([xs, ys]) + 1000.0 * i for i in range(n)])


def test_crops_sample_the_enlarged_box_of_their_own_image() -> None:
    x = _coordinates(2, 60, 80)
    boxes = torch.tensor([[[20.0, 10.0, 40.0, 30.0], [30.0, 20.0, 46.0, 44.0]],
                          [[24.0, 16.0, 48.0, 40.0], [10.0, 12.0, 30.0, 24.0]]])
    size = 8
    crops = crop_boxes(x, boxes, size)
    assert crops.shape == (4, 2, size, size)
    for n in range(2):
        for k in range(2):
            x1, y1, x2, y2 = boxes[n, k].tolist()
            u = (torch.arange(size) + 0.5) / size - 0.5
            want_x = (x1 + x2) / 2 + u * (x2 - x1) * EXPAND + 1000.0 * n
            want_y = (y1 + y2) / 2 + u * (y2 - y1) * EXPAND + 1000.0 * n
            got = crops[n * 2 + k]
            torch.testing.assert_close(got[0], want_x[None, :].expand(size, size), atol=1e-3, rtol=0)
            torch.testing.assert_close(got[1], want_y[:, None].expand(size, size), atol=1e-3, rtol=0)


def test_deltas_move_a_box_onto_its_target_and_scale_with_the_box() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 4.0, 8.0]])
    targets = torch.tensor([[12.0, 18.0, 47.0, 45.0], [-1.0, 1.0, 5.0, 6.0]])
    d = target_deltas(boxes, targets)
    torch.testing.assert_close(apply_deltas(boxes, d), targets)
    torch.testing.assert_close(d[0], torch.tensor([2 / 40, -2 / 20, -3 / 40, 5 / 20]))


def test_a_fresh_refiner_returns_the_detectors_top_candidates_unchanged() -> None:
    torch.manual_seed(0)
    plain = det.AgnosticDetector(3, 8, 16).eval()
    refined = det.AgnosticDetector(3, 8, 16, refiner=RefinerShape(top=12, crop=16, iterations=2)).eval()
    refined.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        boxes, scores = plain(x)
        got_boxes, got_scores = refined(x)
    top, idx = torch.topk(scores, 12, dim=1)
    torch.testing.assert_close(got_scores, top)
    torch.testing.assert_close(got_boxes, torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4)))
    assert det.first_stage(refined.state_dict()).keys() == plain.state_dict().keys()


def test_training_samples_are_overlapping_candidates_with_their_best_object() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    kept = np.array([[1, 1, 11, 11], [21, 19, 41, 39], [100, 100, 110, 110], [0, 0, 3, 3]], np.float32)
    for seed in range(20):  # whatever the draw, each overlapping candidate trains exactly once
        b_seed, _, w_seed = _samples(kept, gt, 6, 0.3, np.random.default_rng(seed))
        assert sorted(b_seed[w_seed > 0, 0].tolist()) == [1.0, 21.0]
    boxes, targets, weight = _samples(kept, gt, 6, 0.3, np.random.default_rng(0))
    assert weight.sum() == 2  # two candidates overlap an object; the far box and the sliver (IoU 0.09) do not
    assert {tuple(b) for b in boxes[weight > 0].tolist()} == {tuple(kept[0]), tuple(kept[1])}  # each once
    for b, t in zip(boxes, targets, strict=True):
        assert b.tolist() in (kept[0].tolist(), kept[1].tolist())
        assert t.tolist() == (gt[0] if b[0] < 15 else gt[1]).tolist()
    _, _, none = _samples(kept[2:], gt, 4, 0.3, np.random.default_rng(0))
    assert none.sum() == 0  # nothing overlaps: padding only, no gradient


@pytest.fixture
def small_detector(tmp_path: Path) -> tuple[Path, Path]:
    """A hand-made cache and a tiny detector checkpoint trained on it for two steps."""
    _shard(tmp_path)
    ckpt = tmp_path / "d.pt"
    result = CliRunner().invoke(app, ["detector", "--data", str(tmp_path), "--ckpt", str(ckpt), "--steps", "2",
                                      "--batch", "2", "--size", "64", "--width", "8", "--fpn", "16"])
    assert result.exit_code == 0, result.output
    return tmp_path, ckpt


def test_refiner_trains_on_the_frozen_detector_and_resumes(small_detector: tuple[Path, Path]) -> None:
    cache, detector_ckpt = small_detector
    ckpt = cache / "r.pt"
    args = ["refiner", "--data", str(cache), "--ckpt", str(ckpt), "--detector", str(detector_ckpt), "--steps", "4",
            "--batch", "2", "--per-image", "4", "--top", "10", "--crop", "16"]
    first = torch.load(detector_ckpt, weights_only=False)["model"]
    result = CliRunner().invoke(app, [*args, "--until", "2"])
    assert result.exit_code == 0, result.output
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2 and state["config"].shape == RefinerShape(10, 16, 2)
    # the detector is frozen: its weights are the checkpoint's; the refiner's last layer has left zero
    for k, v in det.first_stage(state["model"]).items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(v, first[k], msg=k)
    assert state["model"]["refine.fc2.weight"].abs().sum() > 0
    result = CliRunner().invoke(app, [*args, "--lr", "0.5"])
    assert result.exit_code == 0 and "resumed" in result.output, result.output
    assert "its run, not the command line's (lr 0.5 -> 0.001)" in result.output  # said, not silently dropped
    assert torch.load(ckpt, weights_only=False)["step"] == 4


def test_refiner_needs_a_detector_of_the_right_kind(small_detector: tuple[Path, Path]) -> None:
    cache, detector_ckpt = small_detector
    (cache / "empty").mkdir()
    refiner_ckpt = cache / "r0.pt"
    ok = CliRunner().invoke(app, ["refiner", "--data", str(cache), "--ckpt", str(refiner_ckpt), "--detector",
                                  str(detector_ckpt), "--steps", "2", "--batch", "1", "--top", "10", "--crop", "16",
                                  "--per-image", "2"])
    assert ok.exit_code == 0, ok.output
    cases = {"missing.pt": "no such detector", "empty": "not a detector bundle",
             "r0.pt": "not a class-agnostic detector checkpoint"}
    for name, message in cases.items():
        result = CliRunner().invoke(app, ["refiner", "--data", str(cache), "--ckpt", str(cache / "r.pt"),
                                          "--detector", str(cache / name), "--steps", "2"])
        assert result.exit_code == 2 and message in result.output, (name, result.output)
    # 64 px input: 64 + 16 + 4 = 84 candidates, so the graph cannot take the top 100
    result = CliRunner().invoke(app, ["refiner", "--data", str(cache), "--ckpt", str(cache / "r.pt"),
                                      "--detector", str(detector_ckpt), "--steps", "2", "--top", "100"])
    assert result.exit_code == 2 and "only 84 candidates" in result.output, result.output
    assert not (cache / "r.pt").exists()


def test_iterations_apply_only_to_a_refiner_checkpoint(small_detector: tuple[Path, Path]) -> None:
    cache, detector_ckpt = small_detector
    result = CliRunner().invoke(app, ["eval-detector", "--ckpt", str(detector_ckpt), "--data", str(cache),
                                      "--iterations", "2"])
    assert result.exit_code != 0 and "--iterations 2" in result.output, result.output
