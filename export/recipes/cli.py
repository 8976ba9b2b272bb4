"""``edge-export train …``: simulate the training cache, train the reference models, evaluate, pack bundles; or
train on a site's own labelled images (``--data DATASET``: :mod:`export.recipes.owndata`, ``owntrain``,
``owncrops``, ``owneval``).

Thin typer wiring, in four declaration modules: this one (the ``train`` app, the commands that write caches, and
the table that registers every command in help order), :mod:`export.recipes.cli_detector` (detectors),
:mod:`export.recipes.cli_own` (a site's own detector after training) and :mod:`export.recipes.cli_crops` (the
score stage's crop models); :mod:`export.recipes.cli_io` is how they all print and exit. Each command declares
its options and calls one job function (:mod:`export.recipes.simdata`, ``detcrops``, ``synthetic``,
``owndetector``, ``detector_eval``, ``detector_pack``, ``scorer_train``, ``scorer_repack``, ``scorer_pack``,
``classifier_train``, ``owneval``); no training or evaluation is written here. Long work prints progress to
stderr; checkpoints make training resumable (run the same command again). A whole retrain::

    edge-export train simulate --out /tmp/xray-recipes/sim-train --items 1000 --first 0
    edge-export train detector --data /tmp/xray-recipes/sim-train --ckpt /tmp/xray-recipes/det.pt --steps 1500
    edge-export train pack-detector --ckpt /tmp/xray-recipes/det.pt --calib /tmp/xray-recipes/sim-val \
        -o models/detector-agnostic
"""

from __future__ import annotations

from pathlib import Path

import typer

from export.recipes import cli_crops, cli_detector, cli_own
from export.recipes.cli_io import say

app = typer.Typer(name="train", help="Train the reference detector and scorers on the virtual scanner, or on your own "
                                    "labelled images (--data DATASET), and pack them.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


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

    generate(out, items, first, threat_rate, shard_size, workers, progress=say)


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

    generate(out, items, first, threat_rate, detector, max_objects, shard_size, workers, progress=say)


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
    from export.recipes.synthetic import write_cache

    total, fake = write_cache(data, out, share, seed, shapes)
    say(f"wrote {out}: {total - fake} benign and {fake} synthetic-metal crops")


COMMANDS = (
    ("simulate", simulate),
    ("detcrops", detcrops),
    ("detector", cli_detector.detector),
    ("refiner", cli_detector.refiner),
    ("eval-detector", cli_detector.eval_detector),
    ("pack-own", cli_own.pack_own_command),
    ("eval-own", cli_own.eval_own_command),
    ("image-hits", cli_own.image_hits_command),
    ("pack-detector", cli_detector.pack_detector),
    ("detector-classes", cli_detector.detector_classes),
    ("eval-detector-classes", cli_detector.eval_detector_classes),
    ("pack-detector-classes", cli_detector.pack_detector_classes),
    ("scorer", cli_crops.scorer),
    ("padim", cli_crops.padim),
    ("stfpm-kind", cli_crops.stfpm_kind),
    ("fuse", cli_crops.fuse),
    ("synthetic-cache", synthetic_cache),
    ("classifier", cli_crops.classifier),
    ("add-int8", cli_crops.add_int8_crops),
)
"""Every ``train`` command, in the order ``edge-export train --help`` lists them."""

for _name, _command in COMMANDS:
    app.command(_name)(_command)
