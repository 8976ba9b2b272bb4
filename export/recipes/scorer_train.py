"""Training the benign-only crop scorers: the STFPM scorer with its from-scratch backbone (``edge-export train
scorer``) and the PaDiM-style Gaussian on that backbone's features (``train padim``).

Where it sits: reads the crop caches or datasets (:mod:`export.recipes.inputs`), trains with
:mod:`export.recipes.scorer` / fits with :mod:`export.recipes.padim`, and hands the model with its provenance to
:func:`export.recipes.scorer_pack.finish_scorer` (threshold, table, bundle). Only benign crops are used.
Must not: see threat crops in training, or be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import RecipeInputError, RecipeOptionError
from export.recipes import padim as pd
from export.recipes import scorer as sc
from export.recipes.inputs import crops
from export.recipes.scorer_pack import finish_scorer
from export.recipes.simdata import load_crops

Say = Callable[[str], None]
Show = Callable[[dict[str, Any]], None]


def check_channels(channels: str) -> None:
    """``--channels`` must name one of the crop inputs the recipes know."""
    if channels not in sc.INPUTS:
        raise RecipeOptionError(f"--channels must be one of {', '.join(sc.INPUTS)}, got {channels!r}")


def checked_checkpoint(ckpt: Path, channels: str) -> None:
    """A checkpoint trained on another input than ``channels`` stops the command (1), before any work."""
    try:
        sc.check_checkpoint(ckpt, channels)
    except ValueError as exc:
        raise RecipeInputError(str(exc)) from exc


def _scale_weights(scales: str) -> tuple[float, ...]:
    weights = tuple(float(w) for w in scales.split(","))
    if len(weights) != 3 or not any(weights):
        raise RecipeOptionError(f"--scales wants three comma-separated weights, not all 0; got {scales!r}")
    return weights


def train_stfpm(data: Path, val: Path, ckpt_dir: Path, out: Path | None, test: Path | None, *, teacher_steps: int,
                student_steps: int, batch: int, seed: int, threads: int, version: str, int8_max_drop: float,
                topk: int, scales: str, kind_share: float, teacher_init: str, channels: str, progress: Say,
                show: Show) -> None:
    """``train scorer``: the kind-classifying teacher and the STFPM student on benign crops, then
    :func:`finish_scorer`. Detector crops (``train detcrops``) that match no object have no kind: benign evidence
    for the student, nothing for the teacher."""
    check_channels(channels)
    cfg = sc.ScorerConfig(teacher_steps=teacher_steps, student_steps=student_steps, batch=batch, seed=seed,
                          threads=threads, teacher_init=teacher_init, channels=channels)
    checked_checkpoint(ckpt_dir / "teacher.pt", channels)
    tr = crops(data, channels, progress=progress)
    tr = tr.select(sc.benign_training_mask(tr))
    kinded = tr.kind != ""
    progress(f"{len(tr.crops)} benign training crops ({int(kinded.sum())} with a kind), "
             f"{len(set(tr.kind[kinded].tolist()))} kinds")
    x = sc.crop_inputs(tr, channels)
    weights = _scale_weights(scales)
    teacher, names = sc.train_teacher(x[kinded], tr.kind[kinded], ckpt_dir / "teacher.pt", cfg, progress)
    trained = sc.train_student(teacher, x, ckpt_dir / "student.pt", cfg, progress)
    model = sc.StfpmScorer(trained.teacher, trained.student, topk, weights).eval()
    kind_weight = 0.0
    if kind_share > 0:
        kind_weight = kind_share * sc.kind_weight_for(model, x[:2000])
        progress(f"kind-entropy weight {kind_weight:.4f} (share {kind_share})")
        model = sc.StfpmScorer(trained.teacher, trained.student, topk, weights, kind_weight).eval()
    cont = f" from {teacher_init}" if teacher_init else ""
    name = "scorer-stfpm" if channels == "hlz" else f"scorer-stfpm-{channels}"
    finish_scorer(model, name, val, test, out, version,
                  training_data=f"{len(x)} benign object crops ({channels} 64x64) from {data.name} (virtual "
                                f"scanner, seed 7), teacher = {len(names)}-kind classifier trained from "
                                f"scratch ({teacher_steps} steps{cont}), student {student_steps} steps, seed {seed}; "
                                f"score = mean of the top {topk} map pixels, scale weights {scales}, kind-entropy "
                                f"weight {kind_weight:.4f} (share {kind_share}); "
                                "threshold = 95th percentile of benign validation objects (sim items "
                                "1000000..1000149)",
                  notes="STFPM student-teacher" + (" plus the teacher's kind-posterior entropy on every map pixel"
                                                   if kind_weight else "")
                        + "; raw map/score normalised 'logistic' so the threshold maps to 0.5; "
                        f"INT8 accepted at >= {1 - int8_max_drop:.2f} decision agreement; see docs/models.md",
                  progress=progress, show=show, int8_max_drop=int8_max_drop, channels=channels)


def fit_padim(val: Path, ckpt_dir: Path, data: Path, out: Path | None, test: Path | None, *, max_crops: int,
              version: str, progress: Say, show: Show) -> None:
    """``train padim``: the Gaussian (plain numpy) on the STFPM teacher's features of at most ``max_crops`` benign
    hlz crops, then :func:`finish_scorer`."""
    checked_checkpoint(ckpt_dir / "teacher.pt", "hlz")  # the PaDiM recipe reads hlz crops only
    teacher, _ = sc.train_teacher(np.zeros((0, 3, 64, 64), np.float32), np.zeros(0, str), ckpt_dir / "teacher.pt",
                                  sc.ScorerConfig(channels="hlz"), progress)
    embedder = pd.Embedder(sc.Backbone(3, 0), pd.channel_subset())
    embedder.backbone.load_state_dict(teacher.state_dict(), strict=False)
    embedder.eval()
    tr = load_crops(data)
    tr = tr.select(sc.benign_training_mask(tr))
    x = sc.crop_inputs(tr)[:max_crops]
    progress(f"embedding {len(x)} benign crops …")
    mean, inv_cov = pd.fit_gaussian(pd.embeddings(embedder, x))
    model = pd.PadimScorer(embedder, mean, inv_cov).eval()
    finish_scorer(model, "scorer-padim", val, test, out, version,
                  training_data=f"Gaussian fitted (numpy) on {len(x)} benign object crops (hlz 64x64) from the "
                                "sim-train cache; features = STFPM teacher stages 2+3, "
                                f"{pd.EMBED_DIM} random channels (seed {pd.EMBED_SEED}); threshold = 95th percentile "
                                "of benign validation objects (sim items 1000000..1000149)",
                  notes="PaDiM-style; Gaussian kept in initialisers padim_mean / padim_inv_cov so a site can refit "
                        "it in numpy (export.recipes.padim.replace_gaussian); see docs/models.md",
                  progress=progress, show=show)
