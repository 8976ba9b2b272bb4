"""Re-packing shipped crop scorers without their training checkpoints: another kind-uncertainty term on an STFPM
scorer (``edge-export train stfpm-kind``), or an STFPM scorer fused with an insert classifier (``train fuse``).

Where it sits: the networks are rebuilt from the bundles' ONNX weights (:mod:`export.recipes.rebuild`); only the
score rule changes, weighed on the benign crops of a validation cache, and
:func:`export.recipes.scorer_pack.finish_scorer` sets the threshold and packs (FP32 only: INT8 is judged at the
item threshold later, ``train add-int8``). Must not: train, or be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.bundles import load_bundle
from edge.errors import BundleError
from export.errors import RecipeInputError, RecipeOptionError
from export.recipes import scorer as sc
from export.recipes.fused import fuse
from export.recipes.rebuild import torch_from_bundle
from export.recipes.scorer_pack import finish_scorer
from export.recipes.simdata import load_crops

Say = Callable[[str], None]
Show = Callable[[dict[str, Any]], None]


def stfpm_kind(source: Path, val: Path, out: Path | None, test: Path | None, *, uncertainty: str, kind_share: float,
               version: str, name: str, progress: Say, show: Show) -> None:
    """``train stfpm-kind``: the STFPM scorer of ``source`` with the kind term ``uncertainty`` weighted so that its
    benign spread is ``kind_share`` times the student-teacher score's."""
    if uncertainty not in sc.UNCERTAINTIES:
        raise RecipeOptionError(f"--uncertainty must be one of {', '.join(sc.UNCERTAINTIES)}")
    model = torch_from_bundle(source)
    if not isinstance(model, sc.StfpmScorer) or model.teacher.fc is None:
        raise RecipeOptionError(f"{source}: not an STFPM scorer with a kind-classifying teacher")
    was = f"{model.uncertainty} x {model.kind_weight:.4f}"
    bundle = load_bundle(source)
    channels = sc.channels_of(bundle.contract)
    va = load_crops(val)
    model.uncertainty = uncertainty
    model.kind_weight = kind_share * sc.kind_weight_for(
        model, sc.crop_inputs(va.select(sc.benign_training_mask(va)), channels))
    progress(f"kind term {was} -> {uncertainty} x {model.kind_weight:.4f} (share {kind_share})")
    m = bundle.manifest
    finish_scorer(model, name or m.name, val, test, out, version,
                  training_data=f"the networks of {m.name} {m.version} ({m.training_data}); kind term re-weighted "
                                f"on the benign crops of {val.name}: {uncertainty} x {model.kind_weight:.4f} "
                                f"(share {kind_share}); threshold = 95th percentile of those crops",
                  notes=f"STFPM student-teacher plus the teacher's kind {uncertainty} on every map pixel (re-packed "
                        f"from {m.name} {m.version} by `train stfpm-kind`); raw map/score normalised 'logistic' "
                        "so the threshold maps to 0.5; see docs/models.md",
                  progress=progress, show=show, int8=False, channels=channels)


def _networks(scorer: Path, insert: Path) -> tuple[sc.StfpmScorer, sc.ThreatClassifier, str]:
    """The two rebuilt networks and the crop input they share (else the command stops)."""
    try:
        stfpm, classifier = torch_from_bundle(scorer), torch_from_bundle(insert)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise RecipeInputError(str(exc)) from exc
    if not isinstance(stfpm, sc.StfpmScorer) or not isinstance(classifier, sc.ThreatClassifier):
        wrong = (f"{scorer}: not an STFPM scorer" if not isinstance(stfpm, sc.StfpmScorer)
                 else f"{insert}: not a two-class crop classifier")
        raise RecipeInputError(f"{wrong} bundle")
    contract = load_bundle(scorer).contract
    if load_bundle(insert).contract != contract:
        raise RecipeInputError(f"{scorer} and {insert} read different inputs; one graph needs one")
    return stfpm, classifier, sc.channels_of(contract)


def fuse_bundles(scorer: Path, insert: Path, val: Path, out: Path | None, test: Path | None, *, share: float,
                 rule: str, name: str, version: str, progress: Say, show: Show) -> None:
    """``train fuse``: one scorer running the STFPM map of ``scorer`` fused by ``rule`` with the anomaly log-odds
    of the insert classifier ``insert``, the insert term scaled by ``share`` on the benign crops of ``val``."""
    stfpm, classifier, channels = _networks(scorer, insert)
    va = load_crops(val)
    try:  # fuse() refuses a negative share and an unknown rule
        model = fuse(stfpm, classifier, sc.crop_inputs(va.select(sc.benign_training_mask(va)), channels), share, rule)
    except ValueError as exc:
        raise RecipeInputError(f"--{exc}") from exc
    term = f"{float(model.insert_offset):.4f} + {float(model.insert_weight):.4f} x log-odds"
    progress(f"insert term {term} (rule {rule}, share {share})")
    ms, mi = load_bundle(scorer).manifest, load_bundle(insert).manifest
    finish_scorer(model, name, val, test, out, version,
                  training_data=f"the networks of {ms.name} {ms.version} ({ms.training_data}) and of {mi.name} "
                                f"{mi.version} ({mi.training_data}); insert term {term} (rule {rule}, share "
                                f"{share}) and threshold (95th percentile) from the benign crops of {val.name}",
                  notes=f"{ms.name} map fused ({rule}) with {mi.name}'s anomaly log-odds on every map pixel "
                        "(`train fuse`, export/recipes/fused.py); benign-only if both are; raw map/score "
                        "normalised 'logistic' so the threshold maps to 0.5; see docs/models.md",
                  progress=progress, show=show, int8=False, channels=channels)
