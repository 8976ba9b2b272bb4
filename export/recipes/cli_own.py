"""``edge-export train`` commands for a site's own detector after training: pack a checkpoint, evaluate a bundle
on a labelled dataset the way ``edge eval`` does, count image-level hits on a set without boxes.

Declarations only: each command's options and help, and one call into :mod:`export.recipes.owndetector` or
:mod:`export.recipes.owneval` (training itself is ``train detector --data DATASET``,
:mod:`export.recipes.cli_detector`). Registered, in help order, by :mod:`export.recipes.cli`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from export.recipes.cli_io import fail, reported, say, show


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
    from export.recipes.owndetector import pack_own_checkpoint

    with reported():
        pack_own_checkpoint(ckpt, data, val, out, name=name, version=version, size=size, int8=int8, config=config,
                            threshold=threshold, threat=threat, progress=say)


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
    from edge.errors import EdgeError
    from export.recipes.owneval import eval_own

    pairs = dict(r.split("=", 1) for r in rename if "=" in r)
    try:
        show(eval_own(data, config, workers, pairs, limit))
    except EdgeError as exc:  # not a dataset, a config that does not load: one line, not a traceback
        fail(exc)


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
    from export.recipes.owneval import image_hits

    try:
        show(image_hits(folder, bundle, label, threshold))
    except ValueError as exc:
        fail(exc)
