"""``edge-export train`` commands for the crop models of the score stage: the STFPM and PaDiM scorers, the
supervised (or synthetic-insert) classifier, re-packs of shipped scorers, and INT8 added from crop caches.

Declarations only: each command's options and help, and one call into :mod:`export.recipes.scorer_train`,
:mod:`export.recipes.classifier_train`, :mod:`export.recipes.scorer_repack` or
:mod:`export.recipes.scorer_pack`. Registered, in help order, by :mod:`export.recipes.cli`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from export.recipes.cli_io import reported, say, show


def scorer(
    data: Path = typer.Option(..., help="training cache folder (benign crops are taken from it), or a labelled "
                                        "dataset (benign boxes and background windows)"),
    val: Path = typer.Option(..., help="validation cache or dataset: benign crops set the threshold"),
    ckpt_dir: Path = typer.Option(..., help="folder for teacher/student checkpoints (resumable)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="bundle folder to write (replaced)"),
    test: Path | None = typer.Option(None, help="threat test cache for the seed-000 table"),
    teacher_steps: int = typer.Option(1500, help="backbone (kind classifier) steps"),
    student_steps: int = typer.Option(2000, help="STFPM student steps"),
    batch: int = typer.Option(64, help="crops per step"),
    seed: int = typer.Option(0, help="random seed"),
    threads: int = typer.Option(1, help="torch threads"),
    version: str = typer.Option("1.0", help="bundle version"),
    int8_max_drop: float = typer.Option(0.01, help="INT8 accepted when at most this fraction of validation "
                                                   "decisions differ from FP32"),
    topk: int = typer.Option(1, help="object score = mean of the k largest anomaly-map pixels (1 = the maximum)"),
    scales: str = typer.Option("1,1,1", help="weights of the three feature scales in the anomaly map (0 = left "
                                             "out; the student still learns all three)"),
    kind_share: float = typer.Option(0.0, help="add the teacher's kind-posterior entropy to every map pixel, weighted "
                                               "so that its benign spread is this many times the student-teacher "
                                               "score's (0 = pure STFPM)"),
    teacher_init: str = typer.Option("", help="teacher checkpoint to continue from with a fresh schedule (used only "
                                              "when CKPT_DIR/teacher.pt does not exist)"),
    channels: str = typer.Option("hlz", help="crop input: hlz (dual-energy, the reference bundles) or pc "
                                             "(pseudo-colour, seed 000's input)"),
) -> None:
    """Train the from-scratch backbone and the STFPM scorer on benign crops; threshold, evaluate and pack.

    Example: edge-export train scorer --data /tmp/xray-recipes/sim-train --val /tmp/xray-recipes/sim-val
    --test /tmp/xray-recipes/sim-test --ckpt-dir /tmp/xray-recipes/scorer -o models/scorer-stfpm
    """
    from export.recipes.scorer_train import train_stfpm

    with reported():
        train_stfpm(data, val, ckpt_dir, out, test, teacher_steps=teacher_steps, student_steps=student_steps,
                    batch=batch, seed=seed, threads=threads, version=version, int8_max_drop=int8_max_drop, topk=topk,
                    scales=scales, kind_share=kind_share, teacher_init=teacher_init, channels=channels,
                    progress=say, show=show)


def padim(
    val: Path = typer.Option(..., help="validation cache: benign crops set the threshold"),
    ckpt_dir: Path = typer.Option(..., help="folder holding teacher.pt from `train scorer`"),
    data: Path = typer.Option(..., help="training cache folder (benign crops fit the Gaussian)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="bundle folder to write (replaced)"),
    test: Path | None = typer.Option(None, help="threat test cache for the seed-000 table"),
    max_crops: int = typer.Option(4000, help="benign crops used for the fit at most"),
    version: str = typer.Option("1.0", help="bundle version"),
) -> None:
    """Fit the PaDiM-style Gaussian scorer (plain numpy) on the STFPM teacher's features; threshold, pack.

    Example: edge-export train padim --data /tmp/xray-recipes/sim-train --val /tmp/xray-recipes/sim-val
    --ckpt-dir /tmp/xray-recipes/scorer --test /tmp/xray-recipes/sim-test -o models/scorer-padim
    """
    from export.recipes.scorer_train import fit_padim

    with reported():
        fit_padim(val, ckpt_dir, data, out, test, max_crops=max_crops, version=version, progress=say, show=show)


def stfpm_kind(
    source: Path = typer.Argument(..., help="a shipped scorer-stfpm bundle whose teacher has its kind head"),
    val: Path = typer.Option(..., help="validation crop cache: benign crops weigh the kind term and set the "
                                       "threshold (detector crops: train detcrops)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="bundle folder to write (replaced)"),
    test: Path | None = typer.Option(None, help="threat test cache for the seed-000 table"),
    uncertainty: str = typer.Option("energy", help="kind term: energy (-logsumexp of the kind logits) or entropy"),
    kind_share: float = typer.Option(2.0, help="kind term's benign spread as a multiple of the student-teacher "
                                                "score's"),
    version: str = typer.Option(..., help="bundle version"),
    name: str = typer.Option("", help="bundle name (default: the source bundle's)"),
) -> None:
    """Re-pack a shipped STFPM scorer with another kind-uncertainty term, without its training checkpoints.

    The teacher and student are rebuilt from the bundle's ONNX weights; only the score rule changes (the kind
    term and its weight), so no training runs; threshold and normalisation come from ``--val``. FP32 only: set
    the item threshold (``edge eval --write-item-threshold``), then try ``add-int8``, which judges INT8 there.

    Example: edge-export train stfpm-kind models/scorer-stfpm --val /tmp/xray-recipes/dc-val
    --test /tmp/xray-recipes/dc-test --uncertainty energy --kind-share 2 --version 2.1 -o /tmp/stfpm-energy
    """
    from export.recipes.scorer_repack import stfpm_kind as repack

    with reported():
        repack(source, val, out, test, uncertainty=uncertainty, kind_share=kind_share, version=version, name=name,
               progress=say, show=show)


def fuse(
    scorer: Path = typer.Argument(..., help="an STFPM scorer bundle (e.g. models/scorer-stfpm)"),
    insert: Path = typer.Argument(..., help="a classifier bundle trained on a synthetic-insert cache (benign-only: "
                                            "train synthetic-cache, then train classifier --name classifier-insert)"),
    val: Path = typer.Option(..., help="validation crop cache: benign crops weigh the insert term and set the "
                                       "threshold (detector crops: train detcrops)"),
    share: float = typer.Option(1.0, help="insert log-odds' benign spread as a multiple of the STFPM score's"),
    rule: str = typer.Option("max", help="max: the more alarmed network decides; sum: the terms add up"),
    out: Path | None = typer.Option(None, "--out", "-o", help="bundle folder to write (replaced)"),
    test: Path | None = typer.Option(None, help="threat test cache for the seed-000 table"),
    name: str = typer.Option("scorer-fused", help="bundle name"),
    version: str = typer.Option(..., help="bundle version"),
) -> None:
    """One scorer bundle running both benign-only networks: the STFPM map fused with the insert classifier's
    log-odds, per object, by ``--rule``.

    Both networks are rebuilt from their bundles' ONNX weights (no training runs); the insert term's scale,
    the threshold and the normalisation come from ``--val``. FP32 only: set the item threshold (``edge eval
    --write-item-threshold``) before the bundle is used at the item operating point (export/recipes/fused.py,
    docs/models.md).

    Example: edge-export train fuse models/scorer-stfpm /tmp/insert-bundle --val /tmp/xray-recipes/dc-val12
    --rule max --share 1 --version 1.0 -o /tmp/scorer-fused
    """
    from export.recipes.scorer_repack import fuse_bundles

    with reported():
        fuse_bundles(scorer, insert, val, out, test, share=share, rule=rule, name=name, version=version,
                     progress=say, show=show)


def classifier(
    data: Path = typer.Option(..., help="training cache folder (benign and threat crops, labelled), or a labelled "
                                        "dataset (its boxes, plus benign background windows)"),
    ckpt_dir: Path = typer.Option(..., help="folder for classifier.pt (and teacher.pt to start from, if present)"),
    test: Path | None = typer.Option(None, help="threat test cache for the seed-000 table"),
    out: Path | None = typer.Option(None, "--out", "-o", help="bundle folder to write (replaced)"),
    calib: Path | None = typer.Option(None, help="cache whose crops calibrate INT8 and check parity (e.g. sim-val)"),
    steps: int = typer.Option(600, help="optimiser steps"),
    batch: int = typer.Option(64, help="crops per step (half threats)"),
    version: str = typer.Option("1.0", help="bundle version"),
    name: str = typer.Option("classifier-threat", help="bundle name (classifier-insert for a synthetic-insert "
                                                       "cache)"),
    init_bundle: Path | None = typer.Option(None, help="start from the teacher of this STFPM scorer bundle (rebuilt "
                                                       "from its ONNX weights; batch norms frozen) instead of "
                                                       "CKPT_DIR/teacher.pt"),
    int8_max_drop: float = typer.Option(0.01, help="INT8 accepted when at most this fraction of validation "
                                                   "decisions differ from FP32"),
    channels: str = typer.Option("hlz", help="crop input: hlz (dual-energy) or pc (pseudo-colour, seed 000's; "
                                             "the one colour or grey images give)"),
    exclude_kinds: str = typer.Option("", help="threat kinds held out of training, comma-separated (the "
                                               "unseen-threat benchmark, docs/results.md): every threat crop of an "
                                               "item holding one is dropped"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="dataset: leave items with bad labels out and count "
                                                            "them, instead of stopping"),
) -> None:
    """Supervised benign/anomaly object classifier (for comparison with the benign-only scorers).

    With ``--calib`` the bundle's ``thresholds.score`` is the anomaly probability that tags 95% of the benign
    validation objects benign (as for the scorers); without it the runtime decides by argmax (0.5).

    Example: edge-export train classifier --data /tmp/xray-recipes/sim-train --ckpt-dir /tmp/xray-recipes/scorer
    --test /tmp/xray-recipes/sim-test --calib /tmp/xray-recipes/sim-val -o models/classifier-threat
    """
    from export.recipes.classifier_train import train_crop_classifier

    with reported():
        train_crop_classifier(data, ckpt_dir, test, out, calib, steps=steps, batch=batch, version=version, name=name,
                              init_bundle=init_bundle, int8_max_drop=int8_max_drop, channels=channels,
                              exclude_kinds=exclude_kinds, skip_bad=skip_bad, progress=say, show=show)


def add_int8_crops(
    bundle: Path = typer.Argument(..., help="a reference scorer or classifier bundle (hlz or pc 64x64 crops)"),
    calib: Path = typer.Option(..., help="crop cache whose crops calibrate INT8 (train simulate / detcrops)"),
    val: Path = typer.Option(..., help="another crop cache on which INT8 must agree with FP32"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder to write (may be BUNDLE itself)"),
    version: str = typer.Option(..., help="the new bundle's version"),
    max_drop: float = typer.Option(0.01, help="largest share of decisions INT8 may change, at every threshold"),
    max_flag_change: float = typer.Option(0.1, help="largest change of the objects flagged at a threshold"),
    overwrite: bool = typer.Option(False, help="replace a non-empty OUT folder that is not BUNDLE"),
) -> None:
    """``edge-export add-int8`` fed from crop caches: INT8 judged at every threshold the bundle has now.

    Example: edge-export train add-int8 models/classifier-threat --calib /tmp/xray-recipes/dc-cal
    --val /tmp/xray-recipes/dc-val -o models/classifier-threat --version 2.2
    """
    from export.recipes.scorer_pack import add_int8_crops as add_int8

    with reported():
        result = add_int8(bundle, calib, val, out, version, max_drop=max_drop, max_flag_change=max_flag_change,
                          overwrite=overwrite, progress=say)
    say(f"wrote {result.root} ({result.manifest.name}@{version}, openvino/int8 added)")
