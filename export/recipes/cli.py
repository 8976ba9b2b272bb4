"""``edge-export train …``: simulate the training cache, train the reference models, evaluate, pack bundles; or
train on a site's own labelled images (``--data DATASET``: :mod:`export.recipes.owndata`, ``owntrain``,
``owncrops``, ``owneval``).

Thin typer wiring over :mod:`export.recipes.simdata`, :mod:`export.recipes.detector`,
:mod:`export.recipes.refiner_training`, :mod:`export.recipes.scorer`, :mod:`export.recipes.evaluate` and
:mod:`export.recipes.pack`. Long work prints progress to stderr; checkpoints make training resumable (run the same
command again). A whole retrain::

    edge-export train simulate --out /tmp/xray-recipes/sim-train --items 1000 --first 0
    edge-export train detector --data /tmp/xray-recipes/sim-train --ckpt /tmp/xray-recipes/det.pt --steps 1500
    edge-export train pack-detector --ckpt /tmp/xray-recipes/det.pt --calib /tmp/xray-recipes/sim-val \
        -o models/detector-agnostic
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from export.recipes.detector import Geometry

app = typer.Typer(name="train", help="Train the reference detector and scorers on the virtual scanner, or on your own "
                                    "labelled images (--data DATASET), and pack them.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _fail(why: object) -> NoReturn:
    """Stop a command with ``edge-export: error: <why>`` on stderr and exit status 1 (bad input, not a crash)."""
    typer.echo(f"edge-export: error: {why}", err=True)
    raise typer.Exit(1)


def _say(msg: str) -> None:
    typer.echo(f"train: {msg}", err=True)


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", "-o", help="cache folder for det_*.npz / crops_*.npz shards"),
    items: int = typer.Option(..., help="number of items to simulate"),
    first: int = typer.Option(0, help="global index of the first item (item i always uses seed (7, i))"),
    threat_rate: float = typer.Option(0.3, help="probability that an item carries a threat"),
    shard_size: int = typer.Option(50, help="items per shard (a shard is the unit of resumption)"),
    workers: int = typer.Option(2, help="parallel simulation processes"),
) -> None:
    """Simulate, condition and compose items into a resumable cache (existing shards are kept).

    Example: edge-export train simulate --out /tmp/xray-recipes/sim-train --items 1000 --first 0
    """
    from export.recipes.simdata import generate

    generate(out, items, first, threat_rate, shard_size, workers, progress=_say)


@app.command()
def detcrops(
    out: Path = typer.Option(..., "--out", "-o", help="cache folder for crops_*.npz shards (CropSet layout)"),
    items: int = typer.Option(..., help="number of items to simulate"),
    detector: Path = typer.Option(..., help="detector bundle whose boxes are cropped (the one the service runs)"),
    first: int = typer.Option(0, help="global index of the first item (item i always uses seed (7, i))"),
    threat_rate: float = typer.Option(0.3, help="probability that an item carries a threat"),
    max_objects: int = typer.Option(32, help="detections kept per item (models.max_objects)"),
    shard_size: int = typer.Option(50, help="items per shard (a shard is the unit of resumption)"),
    workers: int = typer.Option(2, help="parallel simulation processes"),
) -> None:
    """Crops at a detector bundle's boxes (what the score stage really sees), labelled from the ground truth.

    Use the folder as --data / --val / --test of `train scorer`, `padim` and `classifier`, alone or beside a
    ground-truth cache (symlink both folders' shards into one).

    Example: edge-export train detcrops -o /tmp/xray-recipes/dc-train --items 1000 --detector
    models/detector-agnostic
    """
    from export.recipes.detcrops import generate

    generate(out, items, first, threat_rate, detector, max_objects, shard_size, workers, progress=_say)


def _geometry(scale: str, aspect: float) -> Geometry:
    """The detector trainers' ``--scale MIN,MAX`` and ``--aspect`` as a :class:`export.recipes.detector.Geometry`."""
    from export.recipes.detector import Geometry

    try:
        lo, hi = (float(v) for v in scale.split(","))
        return Geometry(lo, hi, aspect)
    except ValueError as e:
        raise typer.BadParameter(f"--scale {scale!r} / --aspect {aspect}: {e} (e.g. --scale 0.5,2 --aspect 1.3)") \
            from e


SCALE_HELP = ("item scale range drawn in training (log-uniform), MIN,MAX; the v1.0–v1.2 recipes used 0.6,1.35")
ASPECT_HELP = ("largest stretch of one axis against the other (another scanner's pixel pitches; log-uniform in "
               "[1/A, A]); 1 = none")


@app.command()
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

    if is_dataset(data):
        _own_detector(data, ckpt, steps=steps, batch=batch, lr=lr, size=size, channels=channels, seed=seed,
                      init=init, threads=threads, width=width, fpn=fpn, context=context, until=until, scale=scale,
                      aspect=aspect, val=val, val_split=val_split, layout=layout, classes=classes,
                      agnostic=agnostic, threat=threat, augment=augment, skip_bad=skip_bad, config=config, out=out,
                      name=name, version=version, int8=int8)
        return
    from export.recipes.detector import TrainConfig, train
    from export.recipes.simdata import load_det

    _say(f"loading {data} …")
    try:
        ds = load_det(data)
    except FileNotFoundError as exc:
        _fail(f"{exc}; or give a labelled dataset (COCO json, VOC, YOLO or GDXray csv folder)")
    _say(f"{len(ds.images)} items, {sum(len(b) for b in ds.boxes)} boxes")
    train(ds, ckpt, TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, channels=channels, size=size,
                                width=width, fpn=fpn, init=init, threads=threads, context=context,
                                geometry=_geometry(scale or "0.6,1.35", aspect)),
          progress=_say,
          until=until or None)


def _sim_only(data: Path, command: str) -> None:
    """Stop a virtual-scanner-cache command given a labelled dataset (or nothing) with a clear error, not a
    FileNotFoundError traceback."""
    from export.recipes.owndata import is_dataset

    if is_dataset(data):
        _fail(f"{data} is a labelled dataset; `train {command}` reads virtual-scanner caches (`train simulate`): "
              "train on a dataset with `train detector --data DATASET` (class-aware by default)")
    if not any(data.glob("det_*.npz")):
        _fail(f"{data}: no det_*.npz shards (run `edge-export train simulate` first), and not a labelled dataset")


def _conditioner(config: Path | None) -> object | None:
    """The site's conditioner (flat-field and energy calibrations of the service config), for raw datasets."""
    if config is None:
        return None
    from edge.condition.conditioner import Conditioner
    from edge.config import load_config
    from edge.errors import EdgeError

    try:
        return Conditioner.from_config(load_config(config).condition)
    except EdgeError as exc:
        _fail(exc)


def _crops(path: Path, channels: str = "hlz", skip_bad: bool = False) -> object:
    """A crop cache folder (``train simulate`` / ``detcrops``), or the crops of a labelled dataset
    (:func:`export.recipes.owncrops.dataset_crops`: labelled boxes plus benign background windows)."""
    from export.recipes.owndata import is_dataset
    from export.recipes.simdata import load_crops

    if not is_dataset(path):
        try:
            return load_crops(path)
        except FileNotFoundError as exc:
            _fail(f"{exc}; or give a labelled dataset (COCO json, VOC, YOLO or GDXray csv folder)")
    from edge_tools.eval.records import DatasetError
    from export.recipes.owncrops import dataset_crops

    try:
        crops, skipped = dataset_crops(path, channels, skip_bad=skip_bad)
    except DatasetError as exc:
        _fail(exc)
    _say(f"{path}: {len(crops.crops)} crops ({int(crops.threat.sum())} threats), {len(skipped)} bad labels skipped")
    return crops


def _own_detector(data: Path, ckpt: Path, *, steps: int, batch: int, lr: float, size: int, channels: str,
                  seed: int, init: str, threads: int, width: int, fpn: int, context: bool, until: int, scale: str,
                  aspect: float, val: Path | None, val_split: float, layout: str, classes: str, agnostic: bool,
                  threat: list[str], augment: str, skip_bad: bool, config: Path | None, out: Path | None, name: str,
                  version: str, int8: bool) -> None:
    """``train detector --data DATASET``: read, train (resumable), validate, and pack with ``--out``."""
    import json
    import time

    import torch

    from edge_tools.eval.records import DatasetError
    from export.recipes import owntrain as ot
    from export.recipes.owndata import load_labelled, split

    torch.set_num_threads(threads)
    cond = _conditioner(config)
    wanted = tuple(c.strip() for c in classes.split(",") if c.strip()) or None
    try:
        loaded = load_labelled(data, channels, size, classes=wanted, skip_bad=skip_bad, layout=layout,
                               conditioner=cond)
        names = loaded.data.classes
        if val is not None:
            held = load_labelled(val, channels, size, classes=names, skip_bad=skip_bad, layout=layout,
                                 conditioner=cond)
            train_set, val_set, skipped = loaded.data, held.data, loaded.skipped + held.skipped
        else:
            tr_idx, va_idx = split(len(loaded.data), val_split, seed)
            train_set, val_set, skipped = loaded.data.subset(tr_idx), loaded.data.subset(va_idx), loaded.skipped
        threats = ot.threat_map(threat, names)
        if threats and agnostic:
            raise ValueError("--threat needs a class-aware detector (its classes are the threats); drop --agnostic")
    except (DatasetError, ValueError) as exc:
        _fail(exc)
    for why in skipped[:10]:
        _say(f"skipped: {why}")
    counts = {c: int(sum((lab == k).sum() for lab in train_set.labels)) for k, c in enumerate(names)}
    _say(f"{len(train_set)} training images ({', '.join(f'{c} {n}' for c, n in counts.items())}), "
         f"{len(val_set)} validation images, {len(skipped)} bad labels skipped; layout {loaded.layout}")
    from export.recipes.detector import Geometry

    geometry = _geometry(scale, aspect) if scale else Geometry(ot.REAL_GEOMETRY.scale_min,
                                                               ot.REAL_GEOMETRY.scale_max, aspect)
    cfg = ot.OwnConfig(steps=steps, batch=batch, lr=lr, seed=seed, channels=channels, size=size, init=init,
                       threads=threads, width=width, fpn=fpn, context=context, geometry=geometry, classes=names,
                       threats=threats, agnostic=agnostic, augment=augment, data=str(data),
                       val=str(val) if val is not None else f"{val_split} of data")
    started = time.monotonic()
    try:
        model = ot.train(train_set, ckpt, cfg, progress=_say, until=until or None)
    except ValueError as exc:
        _fail(exc)
    _say(f"training took {time.monotonic() - started:.0f} s wall")
    report = ot.validate(model, val_set)
    typer.echo(json.dumps({"checkpoint": str(ckpt), "validation": report}, indent=1))
    if out is not None:
        _, stored, step = ot.from_checkpoint(ckpt)
        bundle = ot.pack_own(model, stored, step, train_set, val_set, out, name, version, int8=int8, progress=_say)
        _say(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version}; classes {list(bundle.manifest.classes)}"
             f", threat_classes {dict(bundle.manifest.threat_classes)})")


@app.command()
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
    from export.recipes.refiner_training import RefineConfig, train_refiner
    from export.recipes.simdata import load_det

    _sim_only(data, "refiner")
    _say(f"loading {data} …")
    ds = load_det(data)
    _say(f"{len(ds.images)} items, {sum(len(b) for b in ds.boxes)} boxes")
    try:
        cfg = RefineConfig(steps=steps, batch=batch, lr=lr, seed=seed, init=detector, threads=threads, top=top,
                           crop=crop, iterations=iterations, per_image=per_image, min_iou=min_iou)
        train_refiner(ds, ckpt, cfg, progress=_say, until=until or None)
    except (ValueError, OSError) as e:
        _say(f"error: {e}")
        raise typer.Exit(2) from e


def _agnostic_checkpoint(ckpt: Path, iterations: int) -> tuple[object, object]:
    """(model, config) of a detector or refiner checkpoint; ``iterations`` > 0 overrides a refiner's passes."""
    import torch

    from export.recipes import detector as det
    from export.recipes.refiner import RefinerShape

    cfg = torch.load(ckpt, weights_only=False)["config"]
    shape: RefinerShape | None = getattr(cfg, "shape", None)
    if iterations < 0 or (iterations and shape is None):
        raise typer.BadParameter(f"--iterations {iterations}: give 0 (as trained), or a positive number of passes "
                                 "for a refiner checkpoint (train refiner)")
    if shape is not None and iterations > 0:
        shape = RefinerShape(shape.top, shape.crop, iterations)
    return det.build(ckpt, 3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, getattr(cfg, "context", False),
                     shape), cfg


ITERATIONS = typer.Option(0, help="refinement passes of a refiner checkpoint (0 = as trained)")


def _detector_fn(model: object) -> object:
    import numpy as np
    import torch

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            b, s = model(torch.from_numpy(x))  # type: ignore[operator]
        return b.numpy(), s.numpy()
    return run


PACK_VOTE_IOU = 0.6
"""Box voting IoU the detector packs write (measured on sim-val with detector-agnostic v1.1: docs/models.md)."""


def _detector_thresholds(score: float, nms_iou: float, vote_iou: float) -> dict[str, float]:
    from edge.bundles.outputs import DECISION_THRESHOLD_KEY, NMS_IOU_KEY, VOTE_IOU_KEY

    return {DECISION_THRESHOLD_KEY: score, NMS_IOU_KEY: nms_iou, **({VOTE_IOU_KEY: vote_iou} if vote_iou > 0 else {})}


@app.command("eval-detector")
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
    import json

    import torch

    from export.recipes import detector as det
    from export.recipes.detector_eval import agnostic_report

    if (ckpt is None) == (bundle is None):
        raise typer.BadParameter("give exactly one of --ckpt and --bundle")
    if bundle is not None and iterations:
        raise typer.BadParameter("--iterations applies to a refiner checkpoint (--ckpt), not to a bundle")
    if ckpt is not None:
        built, loaded = _agnostic_checkpoint(ckpt, iterations)
        model: torch.nn.Module = built  # type: ignore[assignment]
        cfg: det.TrainConfig = loaded  # type: ignore[assignment]
    elif bundle is not None:
        from edge.bundles import load_bundle

        model = det.agnostic_from_bundle(bundle)
        contract = load_bundle(bundle, verify_hashes=False).contract
        width, fpn = det.size_of(model)
        cfg = det.TrainConfig(channels=",".join(str(c) for c in contract.channels), size=contract.width,
                              width=width, fpn=fpn, context=det.has_context(model))
        if vote_iou is None:
            from edge.bundles.outputs import VOTE_IOU_KEY

            vote_iou = float(load_bundle(bundle, verify_hashes=False).manifest.thresholds.get(VOTE_IOU_KEY, 0.0))
    vote_iou = PACK_VOTE_IOU if vote_iou is None else vote_iou
    torch.set_num_threads(1)
    out = agnostic_report(_detector_fn(model), cfg.channels, cfg.size, data, threshold,  # type: ignore[arg-type]
                          nms_iou, real_threshold, vote_iou)
    typer.echo(json.dumps(out, indent=1))


TRAINING_ITEMS = typer.Option("the sim-train cache (items 0..999, threat rate 0.3)",
                              help="what the checkpoint was trained on, for the manifest's training_data")


@app.command("pack-own")
def pack_own_command(
    ckpt: Path = typer.Option(..., help="own-data detector checkpoint (train detector --data DATASET)"),
    data: Path = typer.Option(..., help="labelled dataset whose images calibrate INT8 (the training images)"),
    val: Path = typer.Option(..., help="labelled dataset whose images check parity (the validation images)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle folder (replaced)"),
    name: str = typer.Option("detector-own", help="bundle name"),
    version: str = typer.Option("1.0", help="bundle version"),
    size: int = typer.Option(0, help="input size of the bundle (0 = as trained; the network is convolutional, so "
                                     "another size runs the same weights on a finer or coarser picture)"),
    int8: bool = typer.Option(True, help="try OpenVINO INT8"),
    config: Path | None = typer.Option(None, help="service config whose calibrations condition raw counts"),
    threshold: float | None = typer.Option(None, help="bundle thresholds.score, the detect stage's candidate "
                                                      "threshold (default 0.05 class-aware, 0.2 agnostic)"),
    threat: list[str] = typer.Option([], help="threat classes as in `train detector --threat` (replace the "
                                              "checkpoint's; without SCORE chosen on --val)"),
) -> None:
    """Pack an own-data checkpoint (one paused with --until, or resumed) into a bundle.

    Example: edge-export train pack-own --ckpt /tmp/own.pt --data site/train --val site/val -o /tmp/detector-site
    """
    from dataclasses import replace

    from edge_tools.eval.records import DatasetError
    from export.recipes import owntrain as ot
    from export.recipes.owndata import load_labelled

    try:
        model, cfg, step = ot.from_checkpoint(ckpt)
        if size:
            cfg = replace(cfg, size=size)
        if threat:
            cfg = replace(cfg, threats=ot.threat_map(threat, cfg.classes))
        cond = _conditioner(config)
        cal = load_labelled(data, cfg.channels, cfg.size, classes=cfg.classes, skip_bad=True, conditioner=cond).data
        par = load_labelled(val, cfg.channels, cfg.size, classes=cfg.classes, skip_bad=True, conditioner=cond).data
    except (DatasetError, ValueError) as exc:
        _fail(exc)
    bundle = ot.pack_own(model, cfg, step, cal, par, out, name, version, int8=int8, progress=_say,
                         threshold=threshold)
    _say(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version}, {cfg.size} px, step {step})")


@app.command("eval-own")
def eval_own_command(
    data: Path = typer.Argument(..., help="labelled dataset (COCO json, VOC, YOLO or GDXray csv folder)"),
    config: Path = typer.Option(..., "--config", "-c", help="service config naming the detector bundle (its "
                                                            "models.max_objects caps the boxes per image)"),
    workers: int = typer.Option(1, "--workers", "-j", help="edge eval worker processes"),
    rename: list[str] = typer.Option([], help="DETECTOR=DATASET class name (repeat), e.g. gun=handgun"),
    limit: int | None = typer.Option(None, help="only the first N items"),
) -> None:
    """`edge eval --detector-only` on a labelled dataset, with the per-class AP its report leaves out (the
    figures of docs/models.md's real-data table), as JSON.

    Example: edge-export train eval-own ../shared/realdata/xray/sixray-labelled/val -c /tmp/own/edge.yaml
    """
    import json

    from export.recipes.owneval import eval_own

    pairs = dict(r.split("=", 1) for r in rename if "=" in r)
    typer.echo(json.dumps(eval_own(data, config, workers, pairs, limit), indent=1))


@app.command("image-hits")
def image_hits_command(
    folder: Path = typer.Argument(..., help="folder of images that each hold a LABEL object (no boxes: OPIXray)"),
    bundle: Path = typer.Option(..., help="class-aware detector bundle"),
    label: str = typer.Option(..., help="the class every image holds"),
    threshold: float | None = typer.Option(None, help="score at which a box counts (default: the bundle's "
                                                      "threat_classes entry, else its score threshold)"),
) -> None:
    """In how many images of FOLDER does the detector report LABEL (for real sets without boxes), as JSON.

    Example: edge-export train image-hits ../shared/realdata/xray/opixray --bundle /tmp/own/bundle --label knife
    """
    import json

    from export.recipes.owneval import image_hits

    try:
        typer.echo(json.dumps(image_hits(folder, bundle, label, threshold), indent=1))
    except ValueError as exc:
        _fail(exc)


@app.command("pack-detector")
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
    import numpy as np
    import torch

    from edge.bundles.manifest import ScoreNormalisation
    from edge.bundles.outputs import Role
    from export.recipes import detector as det
    from export.recipes.pack import pack
    from export.recipes.simdata import load_det

    built, loaded = _agnostic_checkpoint(ckpt, iterations)
    model: torch.nn.Module = built  # type: ignore[assignment]
    cfg: det.TrainConfig = loaded  # type: ignore[assignment]
    ds = load_det(calib, limit=150)
    x = np.stack([det.plain(im, cfg.channels, cfg.size) for im in ds.images[:150]])
    frozen = " (frozen batch norms)" if cfg.init and Path(cfg.init).is_dir() else ""
    start = f", fine-tuned from {cfg.init}{frozen}" if cfg.init else ""
    context = ", context on C5" if getattr(cfg, "context", False) else ""
    shape = getattr(model.refine, "shape", None)
    if shape is not None:  # a refiner checkpoint: its steps trained the refiner only, on the frozen detector
        start = (f", box refiner (top {shape.top}, crop {shape.crop} px, {shape.iterations} passes) trained on the "
                 f"frozen detector {cfg.init}")
    bundle = pack(model, Role.DETECTOR, det.contract(cfg.channels, cfg.size),
                  _detector_thresholds(threshold, nms_iou, vote_iou),
                  ScoreNormalisation(), x[:110], x[110:150], out, name, version,
                  training_data=f"virtual scanner (sim/), scanner seed 7, {cfg.steps} steps x {cfg.batch} items "
                                f"from {training_items}, seed {cfg.seed}, width {cfg.width}, FPN {cfg.fpn}"
                                f"{context}{start}; palette/contrast/noise/scale/flip augmentation; no real images",
                  notes=notes or "class-agnostic OLN-style detector (centerness x IoU quality, no classes); "
                                 "see docs/models.md", progress=_say, fp32_rtol=fp32_rtol,
                  int8_max_drop=int8_max_drop)
    _say(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version})")


@app.command("detector-classes")
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
    import numpy as np

    from export.recipes import detector_classes as dc

    _sim_only(data, "detector-classes")
    _say(f"loading {data} …")
    ds = dc.load_class_det(data)
    counts = np.bincount(np.concatenate(ds.labels).clip(min=-1) + 1, minlength=len(dc.CLASSES) + 1)
    _say(f"{len(ds.images)} items, {int(counts[1:].sum())} labelled boxes ("
         + ", ".join(f"{c} {int(n)}" for c, n in zip(dc.CLASSES, counts[1:], strict=True))
         + f"), {int(counts[0])} background objects")
    dc.train(ds, ckpt, dc.ClassTrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, init=init, threads=threads,
                                           repeat_thresh=repeat_thresh,
                                           geometry=_geometry(scale, aspect)),
             progress=_say, until=until or None)


@app.command("eval-detector-classes")
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
    import json

    import numpy as np
    import torch

    from export.recipes import detector as det
    from export.recipes import detector_classes as dc
    from export.recipes.detector_eval import class_report

    if (ckpt is None) == (bundle is None):
        raise typer.BadParameter("give exactly one of --ckpt and --bundle")
    torch.set_num_threads(1)
    _sim_only(data, "eval-detector-classes")
    ds = dc.load_class_det(data)
    raw: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if ckpt is not None:
        state = torch.load(ckpt, weights_only=False)
        cfg: dc.ClassTrainConfig = state["config"]
        channels, size = cfg.channels, cfg.size
        source: dict[str, object] = {"checkpoint": str(ckpt), "step": int(state["step"])}
        model = dc.build(ckpt, 3 if channels == "pc" else 1, cfg.width, cfg.fpn, getattr(cfg, "context", False))
        for i in range(0, len(ds.images), 16):
            x = np.stack([det.plain(im, channels, size) for im in ds.images[i:i + 16]])
            with torch.inference_mode():
                b, s, lab = model(torch.from_numpy(x))
            raw.extend((b[k].numpy(), s[k].numpy(), lab[k].numpy()) for k in range(len(x)))
    elif bundle is not None:
        from edge.bundles import load_bundle
        from edge.bundles.outputs import VOTE_IOU_KEY
        from export.parity import Candidate, run_candidate

        loaded = load_bundle(bundle, verify_hashes=False)
        man = loaded.manifest
        if not man.classes:
            raise typer.BadParameter(f"{bundle} is not a class-aware detector (no classes)")
        if tuple(man.classes) != tuple(dc.CLASSES):
            raise typer.BadParameter(f"{bundle} has classes {list(man.classes)}, the recipes {list(dc.CLASSES)}")
        onnx = next(mm for mm in man.models if mm.format == "onnx" and mm.precision == "fp32")
        channels, size = ",".join(str(c) for c in loaded.contract.channels), loaded.contract.width
        source = {"bundle": f"{man.name}@{man.version}"}
        if vote_iou is None:
            vote_iou = float(man.thresholds.get(VOTE_IOU_KEY, 0.0))
        x = np.stack([det.plain(im, channels, size) for im in ds.images])
        got = run_candidate(Candidate("onnxruntime", onnx.precision, loaded.root / onnx.path), x, threads=1)
        raw.extend((got["boxes"][k], got["scores"][k], got["labels"][k]) for k in range(len(x)))
    vote_iou = PACK_VOTE_IOU if vote_iou is None else vote_iou
    scale = size / ds.images.shape[-1]
    gts, gls = zip(*[ds.labelled(i) for i in range(len(ds.images))], strict=True)
    heavy = {t: [ds.heavy(i, t)[ds.labels[i] >= 0] for i in range(len(ds.images))] for t in heavy_iou}
    report = class_report(raw, [g * scale for g in gts], gls, heavy, dc.CLASSES, threshold, nms_iou, vote_iou)
    out: dict[str, object] = {**source, "vote_iou": vote_iou, "items": len(gts), **report}
    typer.echo(json.dumps(out, indent=1))


@app.command("pack-detector-classes")
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
    import json

    import numpy as np
    import torch

    from edge.bundles.manifest import ScoreNormalisation
    from edge.bundles.outputs import Role
    from export.parity import Candidate, run_candidate
    from export.recipes import detector as det
    from export.recipes import detector_classes as dc
    from export.recipes.pack import pack
    from export.recipes.simdata import load_det

    state = torch.load(ckpt, weights_only=False)
    cfg: dc.ClassTrainConfig = state["config"]
    model = dc.build(ckpt, 3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, getattr(cfg, "context", False))
    ds = load_det(calib, limit=150)
    x = np.stack([det.plain(im, cfg.channels, cfg.size) for im in ds.images[:150]])
    sampling = f", LVIS repeat-factor sampling t = {cfg.repeat_thresh}" if cfg.repeat_thresh > 0 else ""
    bundle = pack(model, Role.DETECTOR, det.contract(cfg.channels, cfg.size),
                  _detector_thresholds(threshold, nms_iou, vote_iou), ScoreNormalisation(), x[:110], x[110:150],
                  out, name, version, classes=dc.CLASSES,
                  training_data=f"virtual scanner (sim/), scanner seed 7, {state['step']} steps x {cfg.batch} items "
                                f"from {training_items}, seed {cfg.seed}, initialised from {cfg.init or 'scratch'}"
                                f"{sampling}; classes from sim kinds (export.recipes.detector_classes.KIND_TO_CLASS); "
                                "no real images",
                  notes=notes or "class-aware detector (OLN-style box/quality head + 8-class focal head, score = "
                                 "p(class) x quality, labels = argmax); per-class NMS, then box voting at "
                                 "thresholds.vote_iou; see docs/models.md",
                  progress=_say, fp32_rtol=fp32_rtol, int8_max_drop=int8_max_drop, int8=int8,
                  optional_outputs=("labels",))
    with torch.inference_mode():
        _, ref_s, ref_l = model(torch.from_numpy(x[110:150]))
    sel = ref_s.numpy() >= threshold
    agreement: dict[str, float] = {}
    for m in bundle.manifest.models:
        backend = "onnxruntime" if m.format == "onnx" else "openvino"
        got = run_candidate(Candidate(backend, m.precision, bundle.root / m.path), x[110:150])
        agreement[f"{backend}/{m.precision}"] = float((got["labels"][sel] == ref_l.numpy()[sel]).mean())
    _say(f"wrote {out} ({bundle.manifest.name} {bundle.manifest.version})")
    typer.echo(json.dumps({"candidates_above_threshold": int(sel.sum()), "label_agreement": agreement}, indent=1))


@app.command()
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
    from export.recipes import scorer as sc
    from export.recipes.simdata import CropSet

    if channels not in sc.INPUTS:
        raise typer.BadParameter(f"--channels must be one of {', '.join(sc.INPUTS)}, got {channels!r}")
    cfg = sc.ScorerConfig(teacher_steps=teacher_steps, student_steps=student_steps, batch=batch, seed=seed,
                          threads=threads, teacher_init=teacher_init, channels=channels)
    try:
        sc.check_checkpoint(ckpt_dir / "teacher.pt", channels)
    except ValueError as exc:
        _fail(exc)
    tr: CropSet = _crops(data, channels)  # type: ignore[assignment]
    tr = tr.select(sc.benign_training_mask(tr))
    # Detector crops (`train detcrops`) that match no object at IoU 0.5 have no kind: benign evidence for the
    # student, nothing for the kind-classifying teacher.
    kinded = tr.kind != ""
    _say(f"{len(tr.crops)} benign training crops ({int(kinded.sum())} with a kind), "
         f"{len(set(tr.kind[kinded].tolist()))} kinds")
    x = sc.crop_inputs(tr, channels)
    weights = tuple(float(w) for w in scales.split(","))
    if len(weights) != 3 or not any(weights):
        raise typer.BadParameter(f"--scales wants three comma-separated weights, not all 0; got {scales!r}")
    teacher, names = sc.train_teacher(x[kinded], tr.kind[kinded], ckpt_dir / "teacher.pt", cfg, _say)
    trained = sc.train_student(teacher, x, ckpt_dir / "student.pt", cfg, _say)
    model = sc.StfpmScorer(trained.teacher, trained.student, topk, weights).eval()
    kind_weight = 0.0
    if kind_share > 0:
        kind_weight = kind_share * sc.kind_weight_for(model, x[:2000])
        _say(f"kind-entropy weight {kind_weight:.4f} (share {kind_share})")
        model = sc.StfpmScorer(trained.teacher, trained.student, topk, weights, kind_weight).eval()
    cont = f" from {teacher_init}" if teacher_init else ""
    name = "scorer-stfpm" if channels == "hlz" else f"scorer-stfpm-{channels}"
    _finish_scorer(model, name, val, test, out, version,
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
                   int8_max_drop=int8_max_drop, channels=channels)


@app.command()
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
    import numpy as np

    from export.recipes import padim as pd
    from export.recipes import scorer as sc
    from export.recipes.simdata import load_crops

    try:  # the PaDiM recipe reads hlz crops only
        sc.check_checkpoint(ckpt_dir / "teacher.pt", "hlz")
    except ValueError as exc:
        _fail(exc)
    teacher, _ = sc.train_teacher(np.zeros((0, 3, 64, 64), np.float32), np.zeros(0, str), ckpt_dir / "teacher.pt",
                                  sc.ScorerConfig(channels="hlz"), _say)
    embedder = pd.Embedder(sc.Backbone(3, 0), pd.channel_subset())
    embedder.backbone.load_state_dict(teacher.state_dict(), strict=False)
    embedder.eval()
    tr = load_crops(data)
    tr = tr.select(sc.benign_training_mask(tr))
    x = sc.crop_inputs(tr)[:max_crops]
    _say(f"embedding {len(x)} benign crops …")
    mean, inv_cov = pd.fit_gaussian(pd.embeddings(embedder, x))
    model = pd.PadimScorer(embedder, mean, inv_cov).eval()
    _finish_scorer(model, "scorer-padim", val, test, out, version,
                   training_data=f"Gaussian fitted (numpy) on {len(x)} benign object crops (hlz 64x64) from the "
                                 "sim-train cache; features = STFPM teacher stages 2+3, "
                                 f"{pd.EMBED_DIM} random channels (seed {pd.EMBED_SEED}); threshold = 95th percentile "
                                 "of benign validation objects (sim items 1000000..1000149)",
                   notes="PaDiM-style; Gaussian kept in initialisers padim_mean / padim_inv_cov so a site can refit "
                         "it in numpy (export.recipes.padim.replace_gaussian); see docs/models.md")


@app.command("stfpm-kind")
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
    from edge.bundles import load_bundle
    from export.recipes import scorer as sc
    from export.recipes.rebuild import torch_from_bundle
    from export.recipes.simdata import load_crops

    if uncertainty not in sc.UNCERTAINTIES:
        raise typer.BadParameter(f"--uncertainty must be one of {', '.join(sc.UNCERTAINTIES)}")
    model = torch_from_bundle(source)
    if not isinstance(model, sc.StfpmScorer) or model.teacher.fc is None:
        raise typer.BadParameter(f"{source}: not an STFPM scorer with a kind-classifying teacher")
    was = f"{model.uncertainty} x {model.kind_weight:.4f}"
    bundle = load_bundle(source)
    channels = sc.channels_of(bundle.contract)
    va = load_crops(val)
    model.uncertainty = uncertainty
    model.kind_weight = kind_share * sc.kind_weight_for(
        model, sc.crop_inputs(va.select(sc.benign_training_mask(va)), channels))
    _say(f"kind term {was} -> {uncertainty} x {model.kind_weight:.4f} (share {kind_share})")
    m = bundle.manifest
    _finish_scorer(model, name or m.name, val, test, out, version,
                   training_data=f"the networks of {m.name} {m.version} ({m.training_data}); kind term re-weighted "
                                 f"on the benign crops of {val.name}: {uncertainty} x {model.kind_weight:.4f} "
                                 f"(share {kind_share}); threshold = 95th percentile of those crops",
                   notes=f"STFPM student-teacher plus the teacher's kind {uncertainty} on every map pixel (re-packed "
                         f"from {m.name} {m.version} by `train stfpm-kind`); raw map/score normalised 'logistic' "
                         "so the threshold maps to 0.5; see docs/models.md",
                   int8=False, channels=channels)


@app.command()
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
    from edge.bundles import load_bundle
    from edge.errors import BundleError
    from export.recipes import scorer as sc
    from export.recipes.fused import fuse
    from export.recipes.rebuild import torch_from_bundle
    from export.recipes.simdata import load_crops

    try:
        stfpm, classifier = torch_from_bundle(scorer), torch_from_bundle(insert)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    if not isinstance(stfpm, sc.StfpmScorer) or not isinstance(classifier, sc.ThreatClassifier):
        wrong = (f"{scorer}: not an STFPM scorer" if not isinstance(stfpm, sc.StfpmScorer)
                 else f"{insert}: not a two-class crop classifier")
        _fail(f"{wrong} bundle")
    contract = load_bundle(scorer).contract
    if load_bundle(insert).contract != contract:
        _fail(f"{scorer} and {insert} read different inputs; one graph needs one")
    channels = sc.channels_of(contract)
    va = load_crops(val)
    try:  # fuse() refuses a negative share and an unknown rule
        model = fuse(stfpm, classifier, sc.crop_inputs(va.select(sc.benign_training_mask(va)), channels), share, rule)
    except ValueError as exc:
        _fail(f"--{exc}")
    term = f"{float(model.insert_offset):.4f} + {float(model.insert_weight):.4f} x log-odds"
    _say(f"insert term {term} (rule {rule}, share {share})")
    ms, mi = load_bundle(scorer).manifest, load_bundle(insert).manifest
    _finish_scorer(model, name, val, test, out, version,
                   training_data=f"the networks of {ms.name} {ms.version} ({ms.training_data}) and of {mi.name} "
                                 f"{mi.version} ({mi.training_data}); insert term {term} (rule {rule}, share "
                                 f"{share}) and threshold (95th percentile) from the benign crops of {val.name}",
                   notes=f"{ms.name} map fused ({rule}) with {mi.name}'s anomaly log-odds on every map pixel "
                         "(`train fuse`, export/recipes/fused.py); benign-only if both are; raw map/score "
                         "normalised 'logistic' so the threshold maps to 0.5; see docs/models.md",
                   int8=False, channels=channels)


def _finish_scorer(model: object, name: str, val: Path, test: Path | None, out: Path | None, version: str,
                   training_data: str, notes: str, int8_max_drop: float = 0.01, int8: bool = True,
                   channels: str = "hlz") -> None:
    """Threshold on benign validation objects, seed-000 table on the test cache, pack the bundle (its input:
    ``channels`` crops)."""
    import json

    import numpy as np

    from edge.bundles.manifest import NormalisationKind, ScoreNormalisation
    from edge.bundles.outputs import Role
    from export.recipes import scorer as sc
    from export.recipes.evaluate import item_table, object_table
    from export.recipes.pack import pack
    from export.recipes.simdata import CropSet

    va: CropSet = _crops(val, channels)  # type: ignore[assignment]
    vb = va.select(sc.benign_training_mask(va))
    vs = sc.raw_scores(model, sc.crop_inputs(vb, channels))  # type: ignore[arg-type]
    thr = float(np.quantile(vs, 0.95))
    low = float(vs.min())
    # logistic, not clipped: scores above the threshold keep their order (a clip at 1.0 ties the most anomalous
    # objects, which costs AUROC and hides how sure the scorer is); same slope at the threshold as 'centred'
    norm = ScoreNormalisation(NormalisationKind.LOGISTIC, low, low + 2 * (thr - low), thr)
    report: dict[str, object] = {"bundle": name, "raw_threshold": thr, "benign_val_objects": len(vs),
                                 "normalisation": {"low": norm.low, "high": norm.high, "centre": norm.centre}}
    if test is not None:
        te: CropSet = _crops(test, channels)  # type: ignore[assignment]
        ts = norm.apply(sc.raw_scores(model, sc.crop_inputs(te, channels)))  # type: ignore[arg-type]
        labels = {int(i): bool(t) for i, t in zip(te.item, te.item_threat, strict=True)}
        report["item"] = item_table(ts, te.item, labels, 0.5)
        report["object"] = object_table(ts, te.threat, 0.5)
        # item-level threshold that tags 95% of benign items benign (seed 000's operating point)
        vi = {int(i): bool(t) for i, t in zip(va.item, va.item_threat, strict=True)}
        vall = norm.apply(sc.raw_scores(model, sc.crop_inputs(va, channels)))  # type: ignore[arg-type]
        item_max = np.array([vall[va.item == i].max() for i, t in vi.items() if not t])
        t95 = float(np.quantile(item_max, 0.95))
        report["item_threshold_95"] = t95
        report["item_at_item_threshold"] = item_table(ts, te.item, labels, t95)
    typer.echo(json.dumps(report, indent=1))
    if out is not None:
        calib = sc.crop_inputs(vb, channels)
        sel = np.random.default_rng(0).permutation(len(calib))
        # 256 calibration and 128 parity crops; a small validation set is split two to one
        n_cal = min(256, max(1, 2 * len(calib) // 3))
        pack(model, Role.SCORER, sc.contract(channels=channels), {"score": 0.5}, norm, calib[sel[:n_cal]],  # type: ignore[arg-type]
             calib[sel[n_cal:n_cal + 128]], out, name, version, training_data=training_data, notes=notes,
             progress=_say, int8_max_drop=int8_max_drop, int8=int8)


@app.command("synthetic-cache")
def synthetic_cache(
    data: list[Path] = typer.Option(..., help="crop cache folder(s) to take benign crops from (repeat --data)"),
    out: Path = typer.Option(..., "--out", "-o", help="cache folder to write (crops_*.npz shards)"),
    share: float = typer.Option(0.5, help="fraction of benign crops that also get a metal-insert copy"),
    seed: int = typer.Option(11, help="random seed"),
    shapes: int = typer.Option(6, min=1, max=6, help="insert shapes drawn from: rod, plate, ring, frame, spring, "
                                                     "parts (4: the first cache's draws)"),
) -> None:
    """Benign crops plus copies with a synthetic steel part laid over them (no threat data), as a cache that
    ``train classifier`` trains on: a benign-only anomaly classifier (export/recipes/synthetic.py).

    Example: edge-export train synthetic-cache --data /tmp/xray-recipes/sim-train --data /tmp/xray-recipes/sim-train2
    -o /tmp/xray-recipes/synth-train
    """
    import numpy as np

    from export.recipes.simdata import crop_shards, load_crops, save_crops
    from export.recipes.synthetic import synthetic_crops

    rng = np.random.default_rng(seed)
    total = fake = 0
    for n, folder in enumerate(data):
        for shard in crop_shards(folder):
            c = synthetic_crops(load_crops(folder, [shard]), share, rng, shapes)
            save_crops(c, out / f"crops_{n}{shard.name.removeprefix('crops_')}")
            total, fake = total + len(c.crops), fake + int(c.threat.sum())
    _say(f"wrote {out}: {total - fake} benign and {fake} synthetic-metal crops")


@app.command()
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
    import json

    import numpy as np
    import torch

    from edge.bundles import load_bundle
    from edge.bundles.manifest import ScoreNormalisation
    from edge.bundles.outputs import Role
    from edge.errors import BundleError
    from export.recipes import scorer as sc
    from export.recipes.evaluate import item_table, object_table
    from export.recipes.pack import pack
    from export.recipes.rebuild import torch_from_bundle
    from export.recipes.simdata import CropSet
    from export.recipes.synthetic import SYNTHETIC_GROUP

    if channels not in sc.INPUTS:
        raise typer.BadParameter(f"--channels must be one of {', '.join(sc.INPUTS)}, got {channels!r}")
    try:  # checkpoints trained on the other input (teacher.pt only matters without --init-bundle)
        for ckpt in [ckpt_dir / "classifier.pt"] + ([] if init_bundle is not None else [ckpt_dir / "teacher.pt"]):
            sc.check_checkpoint(ckpt, channels)
    except ValueError as exc:
        _fail(exc)
    tr: CropSet = _crops(data, channels, skip_bad)  # type: ignore[assignment]
    keep = tr.threat | ~tr.tainted
    held_out = sorted({k.strip() for k in exclude_kinds.split(",") if k.strip()})
    if held_out:
        # Item-level: a detector crop over a held-out threat may carry another object's kind (best IoU), so
        # every threat crop of an item that holds a held-out kind goes, not only the crops of that kind.
        hit = np.isin(tr.kind, held_out)
        items_with = np.isin(tr.item, np.unique(tr.item[hit]))
        keep &= ~hit & ~(tr.threat & items_with)
        _say(f"held out {', '.join(held_out)}: {int(hit.sum())} crops of those kinds and "
             f"{int((tr.threat & items_with & ~hit).sum())} other threat crops of their items dropped")
    tr = tr.select(keep)
    synthetic = bool(tr.threat.any()) and bool((tr.group[tr.threat] == SYNTHETIC_GROUP).all())
    if init_bundle is not None:
        try:
            rebuilt = torch_from_bundle(init_bundle)
        except (BundleError, ValueError, FileNotFoundError) as exc:
            _fail(exc)
        if not isinstance(rebuilt, sc.StfpmScorer):
            _fail(f"{init_bundle}: not an STFPM scorer bundle (--init-bundle)")
        if sc.channels_of(load_bundle(init_bundle).contract) != channels:
            _fail(f"{init_bundle} reads another input than --channels {channels}")
        init, start = rebuilt.teacher, f"the teacher of {init_bundle}"
    elif (ckpt_dir / "teacher.pt").is_file():
        init, start = sc.load_teacher(ckpt_dir / "teacher.pt", channels)[0], f"the STFPM teacher in {ckpt_dir}"
    else:
        init, start = None, "scratch"
    cfg = sc.ScorerConfig(teacher_steps=steps, batch=batch, channels=channels)
    _say(f"{int(tr.threat.sum())} threat and {int((~tr.threat).sum())} benign training crops")
    model = sc.train_classifier(sc.crop_inputs(tr, channels), tr.threat, ckpt_dir / "classifier.pt", cfg, init, _say,
                                frozen_batchnorm=init_bundle is not None)

    def anomaly_prob(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([model(torch.from_numpy(x[i:i + 256])).numpy()[:, 1] for i in range(0, len(x), 256)])

    report: dict[str, object] = {"bundle": name}
    thresholds: dict[str, float] = {}
    if calib is not None:
        va: CropSet = _crops(calib, channels)  # type: ignore[assignment]
        benign = sc.crop_inputs(va.select(sc.benign_training_mask(va)), channels)
        thresholds["score"] = float(np.quantile(anomaly_prob(benign), 0.95))
        report["threshold_95_benign_val_objects"] = thresholds["score"]
    if test is not None:
        te: CropSet = _crops(test, channels)  # type: ignore[assignment]
        p = anomaly_prob(sc.crop_inputs(te, channels))
        labels = {int(i): bool(t) for i, t in zip(te.item, te.item_threat, strict=True)}
        thr = thresholds.get("score", 0.5)
        report["item"] = item_table(p, te.item, labels, thr)
        report["object"] = object_table(p, te.threat, thr)
        report["item_argmax"] = item_table(p, te.item, labels, 0.5)
    typer.echo(json.dumps(report, indent=1))
    if out is not None and calib is not None:
        cx = sc.crop_inputs(_crops(calib, channels), channels)  # type: ignore[arg-type]
        sel = np.random.default_rng(0).permutation(len(cx))
        pack(model, Role.CLASSIFIER, sc.contract(channels=channels), thresholds, ScoreNormalisation(), cx[sel[:256]],
             cx[sel[256:384]], out, name, version, classes=("benign", "anomaly"),
             training_data=f"{len(tr.crops)} labelled object crops ({channels} 64x64; {int(tr.threat.sum())} "
                           f"threats) from {data.name}, class-balanced batches, {steps} steps from {start}"
                           + (f"; threat kinds held out: {', '.join(held_out)}" if held_out else ""),
             notes=(("benign-only: its anomalies are synthetic metal inserts on benign crops (train "
                     "synthetic-cache), no threat crop seen" if synthetic else
                     "supervised benign/anomaly classifier for comparison (seed 001 second stage); threats of the "
                     "kinds in sim/threats.py only")
                    + "; thresholds.score tags 95% of benign validation objects benign; see docs/models.md"),
             progress=_say, int8_max_drop=int8_max_drop)


@app.command("add-int8")
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
    from edge.bundles.loader import load_bundle
    from edge.errors import BundleError
    from export.add_int8 import add_int8
    from export.calibration import InputSet
    from export.errors import ExportError
    from export.recipes import scorer as sc
    from export.recipes.simdata import load_crops

    try:
        contract = load_bundle(bundle).contract
        channels = next((c for c in sc.INPUTS if contract == sc.contract(channels=c)), None)
        if channels is None:
            raise ExportError(f"{bundle}: its input is not one of the recipes' {sc.CROP_SIZE}x{sc.CROP_SIZE} crops "
                              f"({', '.join(sc.INPUTS)})")
        data = InputSet(sc.crop_inputs(load_crops(calib), channels), None, str(calib))
        check = InputSet(sc.crop_inputs(load_crops(val), channels), None, str(val))
        result = add_int8(bundle, data, out, version, validation=check, max_drop=max_drop,
                          max_flag_change=max_flag_change, overwrite=overwrite, progress=_say)
    except (ExportError, BundleError, FileNotFoundError) as exc:
        _fail(exc)
    _say(f"wrote {result.root} ({result.manifest.name}@{version}, openvino/int8 added)")
