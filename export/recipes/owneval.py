"""The real-data detector figures of docs/models.md: one ``edge eval`` run (the service's own pipeline, config and
bundles) on a labelled dataset, plus the per-class AP its report does not print.

Where it sits: ``edge-export train eval-own`` (:mod:`export.recipes.cli_own`). It calls ``edge eval``'s runner
(:func:`edge_tools.eval.cli.evaluate`, detector only) and computes, from the very outcomes that report is built
from, AP and AP50 per class with the same COCO code (:func:`edge_tools.eval.metrics.coco_curves`). ``rename`` maps
a detector's class names onto the dataset's (e.g. ``gun=handgun`` for GDXray) before the class-aware figures.

Must not: train, or be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_tools.eval.metrics import ImageBoxes, coco_curves


def eval_own(data: Path, config: Path, workers: int = 1, rename: Mapping[str, str] | None = None,
             limit: int | None = None) -> dict[str, Any]:
    """Class-agnostic recall@IoU0.5 (the detect stage's boxes: at most ``models.max_objects``), mAP@[.5:.95]
    and mAP50 (agnostic and class-aware), AP and AP50 per class, and the run's seconds."""
    from edge_tools.eval.cli import evaluate
    from edge_tools.eval.datasets import read_dataset
    from edge_tools.eval.runner import RunSettings

    names = dict(rename or {})
    dataset = read_dataset(data).limited(limit)
    report, outcomes = evaluate(dataset, RunSettings(config, None, True), workers, progress_desc="eval-own")
    images = []
    for item, outcome in zip(dataset.items, outcomes, strict=True):
        objs = item.truth.objects
        images.append(ImageBoxes.of([o.box for o in objs], [o.kind for o in objs], [o.box for o in outcome.objects],
                                    [o.detector_score for o in outcome.objects],
                                    [names.get(o.label, o.label) if o.label is not None else None
                                     for o in outcome.objects]))
    dm = report.detector_metrics
    out: dict[str, Any] = {"dataset": str(data), "detector": report.detector, "images": dm.images,
                           "objects": dm.gt_boxes, "boxes_kept": dm.detections,
                           "recall50": dm.recall50, "agnostic": {"mAP": dm.agnostic.map, "mAP50": dm.agnostic.map50},
                           "unscreened": report.unscreened, "seconds": report.seconds}
    if dm.aware is not None:
        curves = coco_curves(images, class_aware=True)
        ap = {c: float(v[100].precision.mean()) for c, v in sorted(curves.items())}
        ap50 = {c: float(v[100].precision[0].mean()) for c, v in sorted(curves.items())}
        # the means over the classes with ground truth, as the report's (equal to them without ``rename``)
        out["aware"] = {"mAP": sum(ap.values()) / max(len(ap), 1), "mAP50": sum(ap50.values()) / max(len(ap50), 1),
                        "AP": ap, "AP50": ap50, "report_mAP": dm.aware.map, "report_mAP50": dm.aware.map50}
    per_kind = {k.kind: k.detected_rate for k in report.per_kind}
    out["recall50_per_class"] = per_kind
    return out


def image_hits(folder: Path, bundle: Path, label: str, threshold: float | None = None) -> dict[str, Any]:
    """For a folder of images known to hold a ``label`` object but without boxes (OPIXray): in how many does the
    class-aware ``bundle`` (ONNX FP32, the detect stage's threshold, per-class NMS and box limit of 20) report
    ``label``, and any box, at ``threshold`` (default: the bundle's ``threat_classes`` entry, else its score
    threshold)? Images are read and composed as the service does (``load_raw_item``, ``degraded_image``)."""

    from edge.bundles import load_bundle
    from edge.bundles.outputs import DECISION_THRESHOLD_KEY, NMS_IOU_KEY
    from edge.condition.composer import compose
    from edge.sources.item_meta import file_item_meta
    from edge.stages.condition import degraded_image
    from edge_tools.eval.datasets import IMAGE_SUFFIXES, load_raw_item
    from edge_tools.eval.records import DatasetItem, ItemTruth, Modality
    from export.parity import Candidate, run_candidate
    from export.recipes.evaluate import postprocess_labelled

    loaded = load_bundle(bundle, verify_hashes=False)
    man = loaded.manifest
    if label not in man.classes:
        raise ValueError(f"{bundle}: {label!r} is not one of its classes {list(man.classes)}")
    thr = threshold if threshold is not None else float(man.threat_classes.get(label,
                                                                            man.thresholds[DECISION_THRESHOLD_KEY]))
    onnx = next(m for m in man.models if m.format == "onnx" and m.precision == "fp32")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    hit = any_box = 0
    for n, path in enumerate(files):
        item = DatasetItem(path.name, Modality.IMAGE, (path,), ItemTruth(True))
        raw = load_raw_item(item, file_item_meta("hits", n, path.name, 30.0))
        assert raw.image is not None, raw.problem
        x = compose(degraded_image(raw.image), loaded.contract)
        got = run_candidate(Candidate("onnxruntime", onnx.precision, loaded.root / onnx.path), x, threads=1)
        _, s, lab = postprocess_labelled(got["boxes"][0], got["scores"][0], got["labels"][0],
                                         float(man.thresholds[DECISION_THRESHOLD_KEY]),
                                         float(man.thresholds.get(NMS_IOU_KEY, 0.5)), 20)
        want = man.classes.index(label)
        hit += int(bool(((lab == want) & (s >= thr)).any()))
        any_box += int(bool((s >= thr).any()))
    return {"folder": str(folder), "images": len(files), "label": label, "threshold": thr,
            f"images_with_{label}": hit, "images_with_any_box": any_box,
            "share": hit / max(len(files), 1)}
