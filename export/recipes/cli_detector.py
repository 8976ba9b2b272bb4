"""``edge-export train`` commands for the detectors: train on a virtual-scanner cache or a labelled dataset, the
box refiner, the class-aware detector, their evaluation and their packing.

Declarations only: each command's options and help, and one call into the job that does the work
(:mod:`export.recipes.owndetector`, :mod:`export.recipes.detector_eval`, :mod:`export.recipes.detector_pack`,
the trainers of :mod:`export.recipes.detector`, ``refiner_training`` and ``detector_classes``). The commands are
registered, in help order, by :mod:`export.recipes.cli`. Jobs are imported inside the commands so that
``edge-export --help`` loads no torch.
"""

from __future__ import annotations

from pathlib import Path

import typer

from export.recipes.cli_io import reported, say, show

SCALE_HELP = ("item scale range drawn in training (log-uniform), MIN,MAX; the v1.0–v1.2 recipes used 0.6,1.35")
ASPECT_HELP = ("largest stretch of one axis against the other (another scanner's pixel pitches; log-uniform in "
               "[1/A, A]); 1 = none")
PACK_VOTE_IOU = 0.6
"""Box voting IoU the detector packs write (measured on sim-val with detector-agnostic v1.1: docs/models.md)."""
ITERATIONS = typer.Option(0, help="refinement passes of a refiner checkpoint (0 = as trained)")
TRAINING_ITEMS = typer.Option("the sim-train cache (items 0..999, threat rate 0.3)",
                              help="what the checkpoint was trained on, for the manifest's training_data")


def detector(
    data: Path = typer.Option(..., help="training data: a virtual-scanner cache (from `train simulate`), or a "
                                        "labelled dataset (COCO json, Pascal VOC, YOLO txt or GDXray csv folder; "
                                        "the readers `edge eval` uses)"),
    ckpt: Path = typer.Option(..., help="checkpoint file; training resumes from it when it exists"),
    steps: int = typer.Option(1500, help="optimiser steps"),
    batch: int = typer.Option(8, help="images per step"),
    lr: float = typer.Option(2e-3, help="peak learning rate (one-cycle)"),
    size: int = typer.Option(320, help="model input size (square, letterboxed)"),
    channels: str = typer.Option("pc", help="input channels: pc (pseudo-colour) or h (high-energy grey)"),
    seed: int = typer.Option(0, help="random seed"),
    init: str = typer.Option("", help="checkpoint or detector bundle folder to start from (fine-tuning), used "
                                      "only without --ckpt file; a bundle sets width/FPN and freezes batch norms; "
                                      "with a dataset also a class-aware bundle (e.g. models/detector-classes: "
                                      "its class head is kept when the class count matches)"),
    threads: int = typer.Option(1, help="torch threads"),
    context: bool = typer.Option(False, "--context", help="add pyramid pooling + image mean on C5 (v1.2 on; "
                                                          "starts as identity, so fine-tuning keeps the boxes)"),
    width: int = typer.Option(16, help="backbone base width (stages width/2, width, 2x, 3x, 4x); stored in the "
                                       "checkpoint, so eval/pack build the same size"),
    fpn: int = typer.Option(32, help="FPN and head channels (stored in the checkpoint)"),
    until: int = typer.Option(0, help="pause after this step (checkpoint kept; rerun to continue); 0 = run to the "
                                      "end"),
    scale: str = typer.Option("", help=SCALE_HELP + "; default 0.6,1.35 (virtual scanner) or 0.75,1.3 (dataset)"),
    aspect: float = typer.Option(1.0, help=ASPECT_HELP),
    val: Path | None = typer.Option(None, help="dataset: a labelled validation folder (else --val-split of --data)"),
    val_split: float = typer.Option(0.1, help="dataset without --val: share of --data held out for validation"),
    layout: str = typer.Option("auto", help="dataset layout: auto, coco, voc, yolo or gdxray"),
    classes: str = typer.Option("", help="dataset: comma-separated classes in bundle order (default: every class "
                                         "the data annotate, sorted); a box of another class is a bad label"),
    agnostic: bool = typer.Option(False, "--agnostic", help="dataset: train a class-agnostic detector (boxes "
                                                            "only) instead of a class-aware one"),
    threat: list[str] = typer.Option([], help="dataset: a threat class, CLASS or CLASS=SCORE (repeat; 'all' = "
                                              "every class; without SCORE, the lowest score reaching 0.6 precision on "
                                              "the validation images): written as the bundle's "
                                              "threat_classes"),
    augment: str = typer.Option("real", help="dataset: real (flips, scale jitter, contrast/brightness/gamma, no "
                                             "hue change of the pseudo-colour) or none"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="dataset: leave items with bad labels (box outside "
                                                            "the image, unknown class, unreadable image) out and "
                                                            "count them, instead of stopping"),
    config: Path | None = typer.Option(None, help="dataset of raw dual-energy counts: the service config whose "
                                                  "calibrations condition them"),
    out: Path | None = typer.Option(None, "--out", "-o", help="dataset: also pack the trained detector into this "
                                                              "bundle folder (validation images calibrate INT8 and "
                                                              "check parity)"),
    name: str = typer.Option("detector-own", help="dataset: bundle name (with --out)"),
    version: str = typer.Option("1.0", help="dataset: bundle version (with --out)"),
    int8: bool = typer.Option(True, help="dataset: try OpenVINO INT8 when packing"),
) -> None:
    """Train the OLN-style detector: class-agnostic on a virtual-scanner cache, or on a labelled dataset
    (class-aware unless --agnostic), from scratch or fine-tuned from a shipped bundle (--init).

    Example: edge-export train detector --data /tmp/xray-recipes/sim-train --ckpt /tmp/xray-recipes/det.pt
    --steps 1500

    Example: edge-export train detector --data site/train --val site/val --init models/detector-agnostic
    --threat knife --threat gun=0.4 --ckpt /tmp/own.pt --steps 2000 -o /tmp/detector-site
    """
    from export.recipes.owndata import is_dataset

    with reported():
        if is_dataset(data):
            from export.recipes.owndetector import train_own_detector

            train_own_detector(data, ckpt, steps=steps, batch=batch, lr=lr, size=size, channels=channels, seed=seed,
                               init=init, threads=threads, width=width, fpn=fpn, context=context, until=until,
                               scale=scale, aspect=aspect, val=val, val_split=val_split, layout=layout,
                               classes=classes, agnostic=agnostic, threat=threat, augment=augment,
                               skip_bad=skip_bad, config=config, out=out, name=name, version=version, int8=int8,
                               progress=say, show=show)
            return
        from export.recipes.detector import TrainConfig, train
        from export.recipes.inputs import det_cache, geometry

        ds = det_cache(data, say)
        train(ds, ckpt, TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, channels=channels, size=size,
                                    width=width, fpn=fpn, init=init, threads=threads, context=context,
                                    geometry=geometry(scale or "0.6,1.35", aspect)),
              progress=say, until=until or None)


def refiner(
    data: Path = typer.Option(..., help="training cache folder (from `train simulate`)"),
    ckpt: Path = typer.Option(..., help="checkpoint file; training resumes from it when it exists"),
    detector: str = typer.Option(..., help="the detector to refine (bundle folder or checkpoint); frozen"),
    steps: int = typer.Option(3000, help="optimiser steps"),
    batch: int = typer.Option(8, help="images per step"),
    per_image: int = typer.Option(32, help="candidates trained on per image"),
    lr: float = typer.Option(1e-3, help="peak learning rate (one-cycle)"),
    top: int = typer.Option(100, help="candidates the graph refines per image (its output count)"),
    crop: int = typer.Option(40, help="crop side in pixels (a multiple of 8)"),
    iterations: int = typer.Option(2, help="refinement passes (trained on each; eval/pack may use fewer)"),
    min_iou: float = typer.Option(0.3, help="a candidate trains when it overlaps an object at least this much"),
    seed: int = typer.Option(0, help="random seed"),
    threads: int = typer.Option(1, help="torch threads"),
    until: int = typer.Option(0, help="pause after this step (checkpoint kept; rerun to continue); 0 = run to the "
                                      "end"),
) -> None:
    """Train the box refiner (second stage) on a frozen class-agnostic detector.

    Example: edge-export train refiner --data /tmp/xray-recipes/det-union --detector models/detector-agnostic
    --ckpt /tmp/xray-recipes/ref.pt --steps 3000
    """
    from export.recipes.inputs import det_cache
    from export.recipes.refiner_training import RefineConfig, train_refiner

    with reported():
        ds = det_cache(data, say, sim_command="refiner")
    try:
        cfg = RefineConfig(steps=steps, batch=batch, lr=lr, seed=seed, init=detector, threads=threads, top=top,
                           crop=crop, iterations=iterations, per_image=per_image, min_iou=min_iou)
        train_refiner(ds, ckpt, cfg, progress=say, until=until or None)
    except (ValueError, OSError) as e:
        say(f"error: {e}")
        raise typer.Exit(2) from e


def eval_detector(
    ckpt: Path | None = typer.Option(None, help="detector checkpoint"),
    bundle: Path | None = typer.Option(None, help="or a class-agnostic detector bundle (rebuilt from its ONNX "
                                                  "weights; its input channels and size)"),
    data: Path = typer.Option(..., help="held-out cache folder (e.g. sim-val)"),
    threshold: float = typer.Option(0.05, help="score threshold before NMS (low for AR/mAP)"),
    nms_iou: float = typer.Option(0.5, help="NMS IoU"),
    real_threshold: float = typer.Option(0.05, help="score threshold for the real-image recall (top 20 kept)"),
    vote_iou: float | None = typer.Option(None, help="box voting IoU after NMS (0 = off); default: the bundle's "
                                                    f"thresholds.vote_iou, or {PACK_VOTE_IOU} (what pack-detector "
                                                    "writes) for a checkpoint"),
    iterations: int = ITERATIONS,
) -> None:
    """AR@100 / mAP on a held-out sim cache and recall@IoU0.5 (≤20 proposals) on real images.

    Example: edge-export train eval-detector --ckpt /tmp/xray-recipes/det.pt --data /tmp/xray-recipes/sim-val
    (or --bundle models/detector-agnostic: a shipped bundle, whose checkpoints are gone)
    """
    if (ckpt is None) == (bundle is None):
        raise typer.BadParameter("give exactly one of --ckpt and --bundle")
    if bundle is not None and iterations:
        raise typer.BadParameter("--iterations applies to a refiner checkpoint (--ckpt), not to a bundle")
    from export.recipes.detector_eval import eval_agnostic

    with reported():
        show(eval_agnostic(ckpt, bundle, data, threshold, nms_iou, real_threshold, vote_iou, iterations,
                           PACK_VOTE_IOU))


def pack_detector(
    ckpt: Path = typer.Option(..., help="detector checkpoint"),
    calib: Path = typer.Option(..., help="cache folder whose items calibrate INT8 and check parity"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder (replaced)"),
    threshold: float = typer.Option(0.3, help="bundle score threshold (runtime drops candidates below it)"),
    nms_iou: float = typer.Option(0.5, help="bundle NMS IoU"),
    vote_iou: float = typer.Option(PACK_VOTE_IOU, help="bundle box voting IoU after NMS (thresholds.vote_iou; "
                                                       "0 = off)"),
    name: str = typer.Option("detector-agnostic", help="bundle name"),
    version: str = typer.Option("1.0", help="bundle version"),
    notes: str = typer.Option("", help="notes for the manifest (e.g. measured figures)"),
    training_items: str = TRAINING_ITEMS,
    fp32_rtol: float = typer.Option(1e-3, help="FP32 parity tolerance (ONNX Runtime's convolutions differ by ~3e-4 "
                                              "on the scores)"),
    int8_max_drop: float = typer.Option(0.02, help="INT8 accepted when at most this fraction of the candidates' "
                                                   "threshold decisions differ from FP32"),
    iterations: int = ITERATIONS,
) -> None:
    """Export the detector (ONNX FP32, OpenVINO FP32 + INT8), verify parity and write the bundle.

    Example: edge-export train pack-detector --ckpt /tmp/xray-recipes/det.pt --calib /tmp/xray-recipes/sim-val
    -o models/detector-agnostic
    """
    from export.recipes.detector_pack import pack_agnostic

    with reported():
        bundle = pack_agnostic(ckpt, calib, out, threshold=threshold, nms_iou=nms_iou, vote_iou=vote_iou, name=name,
                               version=version, notes=notes, training_items=training_items, fp32_rtol=fp32_rtol,
                               int8_max_drop=int8_max_drop, iterations=iterations, progress=say)
    say(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version})")


def detector_classes(
    data: Path = typer.Option(..., help="training cache folder (from `train simulate`; boxes carry their kind)"),
    ckpt: Path = typer.Option(..., help="checkpoint file; training resumes from it when it exists"),
    steps: int = typer.Option(3000, help="optimiser steps"),
    batch: int = typer.Option(8, help="images per step"),
    lr: float = typer.Option(2e-3, help="peak learning rate (one-cycle)"),
    seed: int = typer.Option(0, help="random seed"),
    init: str = typer.Option("models/detector-agnostic", help="detector bundle folder (its ONNX weights start the "
                                                              "backbone/FPN/head) or a class-aware checkpoint; "
                                                              "used only while --ckpt does not exist; '' = scratch"),
    threads: int = typer.Option(1, help="torch threads"),
    until: int = typer.Option(0, help="pause after this step (checkpoint kept; rerun to continue); 0 = run to the "
                                      "end"),
    repeat_thresh: float = typer.Option(0.0, help="LVIS repeat-factor sampling threshold t: items with rare classes "
                                                  "are drawn max(1, sqrt(t / f_c)) times as often; 0 = uniform"),
    scale: str = typer.Option("0.6,1.35", help=SCALE_HELP),
    aspect: float = typer.Option(1.0, help=ASPECT_HELP),
) -> None:
    """Train the class-aware detector (8 classes: seed 001's six types, seed 004's cutters and liquid containers).

    Example: edge-export train detector-classes --data /tmp/xray-recipes/sim-train
    --ckpt /tmp/xray-recipes/detcls.pt --steps 6000 --init models/detector-agnostic
    """
    from export.recipes import detector_classes as dc
    from export.recipes.inputs import class_cache, geometry

    with reported():
        ds = class_cache(data, "detector-classes", say)
        dc.train(ds, ckpt, dc.ClassTrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, init=init, threads=threads,
                                               repeat_thresh=repeat_thresh, geometry=geometry(scale, aspect)),
                 progress=say, until=until or None)


def eval_detector_classes(
    data: Path = typer.Option(..., help="held-out cache folder (e.g. sim-test)"),
    ckpt: Path | None = typer.Option(None, help="class-aware detector checkpoint"),
    bundle: Path | None = typer.Option(None, help="or a packed class-aware bundle: its ONNX FP32 model runs under "
                                                  "ONNX Runtime, voting at its thresholds.vote_iou"),
    threshold: float = typer.Option(0.01, help="score threshold before NMS (low for mAP)"),
    nms_iou: float = typer.Option(0.5, help="per-class NMS IoU"),
    heavy_iou: list[float] = typer.Option([0.5, 0.3], help="heavy-overlap subsets: objects whose box overlaps "
                                                           "another object's box at IoU >= this"),
    vote_iou: float | None = typer.Option(None, help="box voting IoU after per-class NMS (0 = off; default: "
                                                      "the bundle's thresholds.vote_iou, or what packs write)"),
) -> None:
    """Per-class COCO mAP@[.5:.95] / mAP50 / mAP75 overall and on heavy-overlap subsets, plus a
    threshold sweep (class-correct recall at IoU 0.5 and precision) for the bundle's operating point.

    ``--bundle`` measures what ships (its checkpoint may be long gone) on the same cache as a new checkpoint.

    Example: edge-export train eval-detector-classes --ckpt /tmp/xray-recipes/detcls.pt
    --data /tmp/xray-recipes/sim-test
    """
    if (ckpt is None) == (bundle is None):
        raise typer.BadParameter("give exactly one of --ckpt and --bundle")
    from export.recipes.detector_eval import eval_classes

    with reported():
        show(eval_classes(data, ckpt, bundle, threshold, nms_iou, heavy_iou, vote_iou, PACK_VOTE_IOU))


def pack_detector_classes(
    ckpt: Path = typer.Option(..., help="class-aware detector checkpoint"),
    calib: Path = typer.Option(..., help="cache folder whose items calibrate INT8 and check parity"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder (replaced)"),
    threshold: float = typer.Option(0.2, help="bundle score threshold (runtime drops candidates below it)"),
    nms_iou: float = typer.Option(0.5, help="bundle per-class NMS IoU"),
    vote_iou: float = typer.Option(PACK_VOTE_IOU, help="bundle box voting IoU after per-class NMS (0 = off)"),
    name: str = typer.Option("detector-classes", help="bundle name"),
    version: str = typer.Option("1.0", help="bundle version"),
    notes: str = typer.Option("", help="notes for the manifest (e.g. measured figures)"),
    training_items: str = TRAINING_ITEMS,
    int8: bool = typer.Option(True, help="try OpenVINO INT8 (kept only within --int8-max-drop)"),
    fp32_rtol: float = typer.Option(1e-3, help="FP32 parity tolerance"),
    int8_max_drop: float = typer.Option(0.02, help="INT8 accepted when at most this fraction of the candidates' "
                                                   "threshold decisions differ from FP32"),
) -> None:
    """Export the class-aware detector (boxes, scores, labels; ONNX FP32, OpenVINO FP32 + INT8), verify parity,
    write the bundle with its classes, and report how often each backend's labels agree with PyTorch's on the
    candidates above the threshold (the parity report checks scores, not labels).

    Example: edge-export train pack-detector-classes --ckpt /tmp/xray-recipes/detcls.pt
    --calib /tmp/xray-recipes/sim-val -o models/detector-classes
    """
    from export.recipes.detector_pack import pack_classes

    bundle, agreement = pack_classes(ckpt, calib, out, threshold=threshold, nms_iou=nms_iou, vote_iou=vote_iou,
                                     name=name, version=version, notes=notes, training_items=training_items,
                                     int8=int8, fp32_rtol=fp32_rtol, int8_max_drop=int8_max_drop, progress=say)
    say(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version})")
    show(agreement)
