"""``edge eval``: the service's pipeline, offline, on labelled datasets, with the seed papers' metrics.

Modules: ``records`` (truth and outcome records), ``datasets`` (readers: virtual scanner / COCO, GDXray-style,
SIXray VOC), ``runner`` (the service's stages in worker processes), ``metrics`` (numpy: item counts, ROC/AUROC,
95%-benign threshold, COCO box AP/AR), ``report`` (report, JSON and Markdown), ``plots`` (optional, matplotlib),
``cli`` (``eval_command``), ``reference`` (regenerates ``docs/results.md``). Importing this package does no I/O.
Must not: import torch or ``export/``.
"""

from edge_tools.eval.datasets import load_raw_item, read_dataset
from edge_tools.eval.metrics import ImageBoxes, auroc, benign_rate_threshold, coco_box_metrics, item_counts, roc_curve
from edge_tools.eval.records import Dataset, DatasetError, DatasetItem, ItemOutcome, ItemTruth, TruthObject
from edge_tools.eval.report import EvalReport, build_report, markdown_report, report_json
from edge_tools.eval.runner import RunSettings, run_dataset

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetItem",
    "EvalReport",
    "ImageBoxes",
    "ItemOutcome",
    "ItemTruth",
    "RunSettings",
    "TruthObject",
    "auroc",
    "benign_rate_threshold",
    "build_report",
    "coco_box_metrics",
    "item_counts",
    "load_raw_item",
    "markdown_report",
    "read_dataset",
    "report_json",
    "roc_curve",
    "run_dataset",
]
