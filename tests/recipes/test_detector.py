"""The agnostic detector's training CLI: model size and pauses travel through the checkpoint.

A retrain that does not fit one session is paused with ``--until`` and resumed with the same command; a non-default
width/FPN size must be stored in the checkpoint so that ``eval-detector`` / ``pack-detector`` rebuild the same
network. The cache here is a hand-made shard (dark rectangles on air), enough for the plumbing; the recipes' smoke
tests cover the simulated cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from export.recipes import detector as det
from export.recipes.cli import app


def _shard(folder: Path, n: int = 4, size: int = 128) -> None:
    """One ``det_*.npz`` shard in the layout of ``train simulate``: air (255) with one dark block per item."""
    rng = np.random.default_rng(0)
    images = np.full((n, 4, size, size), 255, np.uint8)
    boxes, box_item = [], []
    for i in range(n):
        x0, y0 = (int(v) for v in rng.integers(8, size // 2, 2))
        w, h = (int(v) for v in rng.integers(16, size // 3, 2))
        images[i, :, y0:y0 + h, x0:x0 + w] = 60
        boxes.append([x0, y0, x0 + w, y0 + h])
        box_item.append(i)
    np.savez(folder / "det_000000.npz", images=images, boxes=np.asarray(boxes, np.float32),
             box_item=np.asarray(box_item), box_threat=np.zeros(n, bool), box_kind=np.asarray(["block"] * n),
             item_threat=np.zeros(n, bool))


def _train(cache: Path, ckpt: Path, *extra: str) -> str:
    args = ["detector", "--data", str(cache), "--ckpt", str(ckpt), "--steps", "4", "--batch", "2", "--size", "64",
            "--width", "8", "--fpn", "16", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_until_pauses_and_the_same_command_finishes_with_the_stored_size(tmp_path: Path) -> None:
    _shard(tmp_path)
    ckpt = tmp_path / "d.pt"
    _train(tmp_path, ckpt, "--until", "2")
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2
    cfg: det.TrainConfig = state["config"]
    assert (cfg.width, cfg.fpn, cfg.steps) == (8, 16, 4)
    assert state["sched"]["total_steps"] == 5  # the paused run keeps the full schedule, not one ending at 2
    paused = {k: v.clone() for k, v in state["model"].items()}

    out = _train(tmp_path, ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert "resumed" in out and state["step"] == 4
    assert any(not torch.equal(paused[k], v) for k, v in state["model"].items())

    model = det.build(ckpt, 3, cfg.width, cfg.fpn)  # what eval-detector / pack-detector do with the stored config
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["c5.0.0.weight"][0] == 4 * 8 and shapes["reg.weight"][1] == 16
    boxes, scores = model(torch.from_numpy(det.plain(np.load(tmp_path / "det_000000.npz")["images"][0], "pc", 64)
                                           [None]))
    assert boxes.shape == (1, 8 * 8 + 4 * 4 + 2 * 2, 4) and scores.shape == boxes.shape[:2]


def test_the_default_size_is_the_shipped_v1_family(tmp_path: Path) -> None:
    """Without --width/--fpn the CLI trains the 16/32 network that v1.0 and detector-classes were built on."""
    _shard(tmp_path)
    ckpt = tmp_path / "d.pt"
    result = CliRunner().invoke(app, ["detector", "--data", str(tmp_path), "--ckpt", str(ckpt), "--steps", "4",
                                      "--until", "1", "--batch", "1", "--size", "64"])
    assert result.exit_code == 0, result.output
    cfg: det.TrainConfig = torch.load(ckpt, weights_only=False)["config"]
    assert (cfg.width, cfg.fpn) == (16, 32)


AGNOSTIC = Path(__file__).resolve().parents[2] / "models" / "detector-agnostic"


def test_context_starts_as_the_detector_it_is_added_to() -> None:
    """The C5 context block's last convolution starts at zero: boxes and scores are the source's, bit for bit."""
    source = det.AgnosticDetector(3, 8, 16).eval()
    with torch.no_grad():
        for p in source.parameters():  # random, non-trivial weights
            p.normal_(0, 0.2)
    model = det.AgnosticDetector(3, 8, 16, context=True).eval()
    assert det.copy_matching(model, source.state_dict()) == len(source.state_dict())
    assert det.has_context(model) and not det.has_context(source)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        (b0, s0), (b1, s1) = source(x), model(x)
    assert torch.equal(b0, b1) and torch.equal(s0, s1)
    with torch.no_grad():
        model.ctx.mix.weight.fill_(0.01)  # type: ignore[union-attr]
    with torch.inference_mode():
        assert not torch.equal(model(x)[0], b0)  # and the block does act once trained


def test_a_detector_with_context_is_not_copied_into_one_without() -> None:
    with_ctx = det.AgnosticDetector(3, 8, 16, context=True)
    with pytest.raises(ValueError, match="ctx"):
        det.copy_matching(det.AgnosticDetector(3, 8, 16), with_ctx.state_dict())


def test_fine_tuning_from_a_bundle_takes_its_size_adds_context_and_keeps_batch_norms_frozen(tmp_path: Path) -> None:
    """``--init BUNDLE --context``: width/FPN from the bundle (24/48 for v1.1), context stored in the checkpoint,
    batch norms keep the rebuilt (folded) statistics while the weights learn; eval/pack rebuild the same network."""
    _shard(tmp_path)
    ckpt = tmp_path / "d.pt"
    base = ["detector", "--data", str(tmp_path), "--ckpt", str(ckpt), "--steps", "3", "--batch", "2", "--size", "64"]
    result = CliRunner().invoke(app, [*base, "--init", str(AGNOSTIC), "--context", "--until", "1"])
    assert result.exit_code == 0, result.output
    # resumed without repeating --init/--context: the checkpoint's network (24/48 + context), still frozen
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    assert "its network, not the command line's" in result.output
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 3
    cfg: det.TrainConfig = state["config"]
    source = det.agnostic_from_bundle(AGNOSTIC)
    assert (cfg.width, cfg.fpn, cfg.context) == (*det.size_of(source), True)
    before = source.state_dict()
    after = state["model"]
    assert all(torch.equal(after[k], v) for k, v in before.items() if "running_" in k)
    assert not torch.equal(after["reg.weight"], before["reg.weight"])
    assert any(k.startswith("ctx.") for k in after)
    rebuilt = det.build(ckpt, 3, cfg.width, cfg.fpn, cfg.context)
    assert det.has_context(rebuilt)


def test_eval_detector_measures_a_shipped_bundle_and_wants_exactly_one_model(tmp_path: Path) -> None:
    """``--bundle``: the shipped detector rebuilt from its ONNX weights (its checkpoints are gone) is measured
    the same way as a checkpoint; box voting moves edges but keeps every box."""
    import json

    _shard(tmp_path)
    outs = {}
    for vote in ("0", "0.6"):
        result = CliRunner().invoke(app, ["eval-detector", "--bundle", str(AGNOSTIC), "--data", str(tmp_path),
                                          "--vote-iou", vote])
        assert result.exit_code == 0, result.output
        outs[vote] = json.loads(result.output[result.output.index("{"):])
    for out in outs.values():
        assert out["items"] == 4 and 0.0 <= out["sim"]["AR100"] <= 1.0
        assert out["sim"]["recall50@20"] > 0  # dark blocks on air are found by the shipped detector
    assert outs["0"]["threshold_sweep"]["0.45"]["dets_per_gt"] == outs["0.6"]["threshold_sweep"]["0.45"][
        "dets_per_gt"]
    for args in ([], ["--ckpt", str(tmp_path / "x.pt"), "--bundle", str(AGNOSTIC)]):
        result = CliRunner().invoke(app, ["eval-detector", "--data", str(tmp_path), *args])
        assert result.exit_code != 0 and "exactly one" in result.output


def test_a_class_aware_bundle_is_not_rebuilt_as_an_agnostic_detector() -> None:
    with pytest.raises(ValueError, match="class head"):
        det.agnostic_from_bundle(AGNOSTIC.parent / "detector-classes")
