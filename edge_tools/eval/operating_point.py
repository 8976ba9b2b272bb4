"""The item operating point: a scorer bundle's ``thresholds.item``, measured through the whole pipeline.

Why: bundles are thresholded per object (95% of benign validation *objects* below ``thresholds.score``), but the
service decides per item by the max rule over every detector box (often 15-20 per parcel), so at the object
threshold most benign items alarm. Seed 000 and the product's quality bar put the operating point on items: the
threshold that tags 95% of benign items benign. That depends on the detector (how many boxes, how tight) and on
the data, so it is measured after export by ``edge eval --write-item-threshold`` on *validation* items (not the
test set) and written into a copy of the scorer bundle; ``edge fit`` sets it from its own held-out items.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from edge.bundles.loader import Bundle, load_bundle
from edge.bundles.manifest import DetectorRef, NormalisationKind
from edge.bundles.outputs import (
    DECISION_THRESHOLD_KEY,
    ITEM_THRESHOLD_KEY,
    Role,
    item_threshold_note,
    without_item_threshold_note,
)
from edge.bundles.writer import rewrite_manifest
from edge.errors import BundleError
from edge_tools.eval.metrics import MIN_BENIGN_ITEMS, benign_rate_threshold
from edge_tools.eval.report import BENIGN_RATE, EvalReport


def item_threshold_of(report: EvalReport) -> float:
    """The report's 95%-benign item threshold, checked usable as an operating point.

    Raises:
        BundleError: no scorer, too few benign items, or a benign item the pipeline could not screen (no
            threshold can clear an UNSCREENED item).
    """
    if report.scorer is None:
        raise BundleError("an item threshold needs a scorer: the evaluation ran the detector only")
    if report.benign_items < MIN_BENIGN_ITEMS:
        raise BundleError(f"{report.benign_items} benign items in {report.dataset}: at least {MIN_BENIGN_ITEMS} "
                          "are needed to set a 95%-benign item threshold")
    point = report.at_benign95
    if point is None or point.threshold is None or not math.isfinite(point.threshold):
        raise BundleError(f"{report.dataset}: a benign item was UNSCREENED or unscored, so no item threshold "
                          f"clears 95% of benign items ({report.unscreened_example or 'see items-*.jsonl'})")
    return float(point.threshold)


def pooled_item_threshold(benign_max_scores: np.ndarray, where: str) -> float:
    """The 95%-benign item threshold over benign items pooled from several runs (``edge eval``'s rule, applied to
    the pool), checked usable as an operating point.

    Raises:
        BundleError: too few benign items, or one the pipeline could not screen (``where`` names the data).
    """
    scores = np.asarray(benign_max_scores, np.float64)
    if scores.size < MIN_BENIGN_ITEMS:
        raise BundleError(f"{scores.size} benign items in {where}: at least {MIN_BENIGN_ITEMS} are needed to set a "
                          "95%-benign item threshold")
    threshold = benign_rate_threshold(scores, BENIGN_RATE)
    if not math.isfinite(threshold):
        raise BundleError(f"{where}: {int(np.isposinf(scores).sum())} benign items were UNSCREENED, so no item "
                          "threshold clears 95% of benign items")
    return threshold


def write_item_threshold(report: EvalReport, scorer: Path, out_dir: Path, version: str | None = None,
                         overwrite: bool = False, detector_sha256: str = "") -> Bundle:
    """Copy the scorer bundle at ``scorer`` to ``out_dir`` with ``thresholds.item`` from ``report``.

    The object threshold (``thresholds.score``) and the model files stay as they are; the notes say where the
    item threshold came from (dataset, detector, benign items, date), replacing an earlier such note. ``version``
    may hold ``{version}``, the bundle's own (``"{version}.1"``); default ``<version>-op.<date>``.
    """
    threshold = item_threshold_of(report)
    source = f"{report.benign_items} benign items of {report.dataset}"
    return write_threshold(scorer, out_dir, threshold, source, report.detector, version, overwrite,
                           detector_sha256=detector_sha256)


def write_threshold(scorer: Path, out_dir: Path, threshold: float, source: str, detector: str,
                    version: str | None = None, overwrite: bool = False, measured_by: str = "edge eval",
                    detector_sha256: str = "") -> Bundle:
    """Copy the scorer bundle at ``scorer`` to ``out_dir`` with ``thresholds.item`` = ``threshold``, measured by
    ``measured_by`` as 95% of ``source`` clear through ``detector`` (``name@version``; its manifest's
    ``content_sha256`` when known), recorded as bundle.yaml's ``item_detector`` (see :func:`write_item_threshold`).

    Raises:
        BundleError: ``detector`` is not a ``name@version`` (the service could not check it), or see below.
    """
    try:
        item_detector = DetectorRef.parse(detector, detector_sha256)
    except ValueError as exc:
        raise BundleError(f"{scorer}: the item threshold's detector {exc}") from exc
    bundle = load_bundle(scorer)
    m = bundle.manifest
    bounded = m.normalisation.kind is not NormalisationKind.NONE or bundle.role is Role.CLASSIFIER
    if bounded and threshold > 1.0:
        # More than 5% of benign items reach the top of a scale that ends at 1.0: the threshold that clears
        # them could never be reached, and the scorer would never alarm.
        scale = "probabilities" if bundle.role is Role.CLASSIFIER else f"{m.normalisation.kind!s} normalisation"
        raise BundleError(f"{scorer}: over 5% of the benign items score the scale's maximum 1.0 ({scale}), so "
                          "no reachable threshold clears 95% of them; for a 'centred' bundle run "
                          "`edge-export renormalise` (logistic keeps scores above the threshold apart) first")
    object_threshold = m.thresholds.get(DECISION_THRESHOLD_KEY)
    if object_threshold is not None and threshold < float(object_threshold):
        # Max over several objects can only raise an item's score; a lower item threshold means the validation
        # items were unlike the bundle's own validation objects. Still valid, but worth saying.
        note_low = f"; below the object threshold {float(object_threshold):.4g}"
    else:
        note_low = ""
    today = dt.datetime.now(dt.UTC).date()
    how = f"95% of {source} clear, {measured_by} {today.isoformat()}" + note_low
    notes = item_threshold_note(threshold, how, detector) + without_item_threshold_note(m.notes)
    new_version = (version or "{version}-op." + today.strftime("%Y%m%d")).replace("{version}", m.version)
    return rewrite_manifest(bundle, out_dir, thresholds={**m.thresholds, ITEM_THRESHOLD_KEY: threshold},
                            version=new_version, notes=notes, overwrite=overwrite, item_detector=item_detector)
