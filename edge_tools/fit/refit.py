"""``edge fit``: refit the PaDiM scorer's Gaussian on the box from benign items collected on site.

Each scanner and site differs (tube, detector, belt, what people carry), so a scorer fitted on simulated items
flags too much of a real site's benign traffic. The PaDiM-style bundle keeps its Gaussian in two ONNX
initialisers and its fit is plain numpy, so the box can refit it without torch:

1. select CLEAR audit records in the date range that have saved raw inputs (:mod:`edge_tools.fit.records`);
2. re-run the service's own condition and detect stages with the service's config (calibrations, detector,
   ``max_objects``) and compose each object's crop with the scorer's contract, exactly as the score stage does;
3. split by item: ``holdout`` of the items (seeded) are kept aside; the rest's object crops go through the
   bundle's backbone (the ONNX graph cut at the embedding, :mod:`edge_tools.fit.padim_graph`) into the Gaussian
   accumulator (:mod:`edge_tools.fit.gaussian`);
4. score the held-out objects with the refitted Gaussian and set the threshold and normalisation by the
   convention of the bundles ``export/recipes`` writes: raw threshold ``t`` = 95th percentile of the held-out
   benign scores, ``low`` = their minimum, ``high = low + 2 (t - low)``, ``centre = t``, with the starting
   bundle's normalisation kind (``centred`` or ``logistic``; both map ``t`` to 0.5, the bundle threshold);
5. convert to OpenVINO FP32, check both backends against a numpy reference on held-out crops (parity), and
   write a new bundle with its own version and provenance (:mod:`edge.bundles.writer`).

Must not: overwrite the bundle it starts from, write a bundle whose parity failed, learn from anything but
CLEAR items. Never imports torch or ``export/``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

from edge.backends import SessionOptions, open_model
from edge.bundles.loader import Bundle, load_bundle, sha256_file
from edge.bundles.manifest import (
    MANIFEST_FILE,
    BundleManifest,
    DetectorRef,
    ModelFormat,
    NormalisationKind,
    ParityEntry,
    ParityReport,
    Precision,
    ScoreNormalisation,
)
from edge.bundles.outputs import (
    DECISION_THRESHOLD_KEY,
    ITEM_THRESHOLD_KEY,
    Role,
    item_threshold_note,
    without_item_threshold_note,
)
from edge.bundles.writer import BundleContent, BundleModel, package_versions, write_bundle
from edge.condition.composer import compose
from edge.condition.conditioner import Conditioner
from edge.config import load_config
from edge.config.root import EdgeConfig
from edge.contracts import InputContract
from edge.errors import BackendError, BundleError, CalibrationError, FrameError
from edge.records import ItemMeta, RawItem
from edge.screening import ModelHolder, ModelSet, load_models
from edge.stages.condition import ConditionStage
from edge.stages.detect import DetectStage
from edge_tools.eval.metrics import MIN_BENIGN_ITEMS, benign_rate_threshold
from edge_tools.fit import padim_graph
from edge_tools.fit.errors import FitError
from edge_tools.fit.gaussian import DEFAULT_EPS, GaussianAccumulator, mahalanobis_maps
from edge_tools.fit.records import AuditRecord, Selection, select_records

log = logging.getLogger(__name__)

BENIGN_QUANTILE = 0.95
"""The threshold tags this fraction of held-out benign objects benign (the reference bundles' convention)."""
PARITY_RTOL = 1e-4
PARITY_MIN_AGREEMENT = 0.99
IR_META_PATH = ["xray_edge", "meta"]
"""Where the export toolchain keeps its metadata in an IR's rt_info (``export.meta.RT_INFO_PATH``)."""


@dataclass(frozen=True, slots=True)
class FitSettings:
    """What to fit from and where to write; defaults are the documented ones (docs/fit.md)."""

    audit_dir: Path
    since: dt.datetime
    config: Path
    out: Path
    until: dt.datetime | None = None
    bundle: Path | None = None
    holdout: float = 0.2
    min_objects: int = 50
    min_holdout: int = 10
    seed: int = 0
    threads: int = 2
    eps: float = DEFAULT_EPS
    batch: int = 64
    parity_samples: int = 128
    version: str | None = None
    force: bool = False


@dataclass(frozen=True, slots=True)
class FitResult:
    """The bundle written and the figures behind it (printed as JSON by the CLI)."""

    bundle: Bundle
    base: str
    records: int
    items_fit: int
    items_holdout: int
    objects_fit: int
    objects_holdout: int
    raw_threshold: float
    holdout_below: float
    holdout_items: tuple[str, ...] = ()
    item_threshold: float | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        m = self.bundle.manifest
        return {"bundle": str(self.bundle.root), "name": m.name, "version": m.version, "base": self.base,
                "records": self.records, "items_fit": self.items_fit, "items_holdout": self.items_holdout,
                "objects_fit": self.objects_fit, "objects_holdout": self.objects_holdout,
                "raw_threshold": self.raw_threshold, "holdout_below_threshold": self.holdout_below,
                "item_threshold": self.item_threshold,
                "normalisation": {"kind": str(m.normalisation.kind), "low": m.normalisation.low,
                                  "high": m.normalisation.high, "centre": m.normalisation.centre},
                "parity_passed": bool(m.parity is not None and m.parity.passed),
                "holdout_items": list(self.holdout_items), "skipped": dict(self.skipped),
                "seconds": dict(self.seconds)}


def _item_threshold(scores: NDArray[np.float32], per_item: list[int]) -> float | None:
    """The item operating point on the held-out items (max rule over each item's objects, normalised scale),
    or None with too few items to place a 95% point, or when over 5% of them sit at the scale's top (1.0, a
    clipped normalisation): that threshold could never be reached. The base bundle's item threshold never
    carries over, since it belongs to the old Gaussian."""
    if len(per_item) < MIN_BENIGN_ITEMS:
        return None
    item_max = [float(part.max()) for part in np.split(scores, np.cumsum(per_item)[:-1])]
    threshold = benign_rate_threshold(item_max, BENIGN_QUANTILE)
    return threshold if threshold <= 1.0 else None


def _check_out(settings: FitSettings, base: Path) -> None:
    out = settings.out.resolve()
    if out == base.resolve() or base.resolve().is_relative_to(out):
        raise FitError(f"{settings.out}: that is (or holds) the bundle being refitted, {base}; write the new "
                       "bundle to another folder (edge fit never overwrites its starting bundle)")
    if settings.out.exists() and not settings.force:
        raise FitError(f"{settings.out}: already exists; choose a new folder or pass --force to replace it")
    if settings.out.exists() and not (settings.out / MANIFEST_FILE).is_file() and any(settings.out.iterdir()):
        raise FitError(f"{settings.out}: exists and is not a bundle folder; --force replaces only a bundle")


def _base_bundle(settings: FitSettings, cfg_scorer: Path | None) -> tuple[Bundle, Path, onnx.ModelProto]:
    path = settings.bundle if settings.bundle is not None else cfg_scorer
    if path is None:
        raise FitError(f"{settings.config}: models.scorer is not set and no --bundle was given: which PaDiM "
                       "bundle should be refitted?")
    bundle = load_bundle(path)
    if bundle.role is not Role.SCORER:
        raise FitError(f"{path}: a {bundle.role} bundle; edge fit refits a PaDiM-style scorer bundle")
    try:
        onnx_path = bundle.model_path(ModelFormat.ONNX, Precision.FP32)
    except BundleError as exc:
        raise FitError(f"{path}: edge fit needs the bundle's ONNX FP32 model: {exc}") from exc
    model = onnx.load(str(onnx_path))
    padim_graph.gaussian_shapes(model, str(onnx_path))
    return bundle, onnx_path, model


def _split(records: tuple[AuditRecord, ...], holdout: float, seed: int) -> set[str]:
    """Item ids held out for the threshold: a seeded ``holdout`` fraction of the items, at least one."""
    if not 0.0 < holdout < 1.0:
        raise FitError(f"--holdout {holdout}: must be between 0 and 1 (a fraction of the items)")
    n = len(records)
    k = min(max(1, round(n * holdout)), max(n - 1, 1))
    order = np.random.default_rng(seed).permutation(n)
    return {records[int(i)].item_id for i in order[:k]}


def _load_inputs(record: AuditRecord) -> RawItem:
    try:
        with np.load(record.inputs) as data:
            high, low = np.asarray(data["high"]), np.asarray(data["low"])
    except (OSError, ValueError, KeyError) as exc:
        raise FrameError(f"{record.inputs}: unreadable saved inputs ({exc})") from exc
    if high.dtype != np.uint16 or low.dtype != np.uint16:
        raise FrameError(f"{record.inputs}: raw frames must be uint16, got {high.dtype}/{low.dtype}")
    meta = ItemMeta(item_id=record.item_id, scanner_id="", seq=0, scan_start_wall=record.decided_wall,
                    scan_end_wall=record.decided_wall, scan_start_mono=0.0, scan_end_mono=0.0,
                    deadline_mono=float("inf"))
    return RawItem(meta=meta, high=high, low=low)


class _Embedder:
    """The bundle's backbone (graph cut at the embedding) on ONNX Runtime, fed in batches."""

    def __init__(self, model: onnx.ModelProto, source: str, workdir: Path, threads: int) -> None:
        path = workdir / "embedding.onnx"
        onnx.save(padim_graph.embedding_model(model, source), str(path))
        self._session = open_model(path, "onnxruntime", SessionOptions(threads=threads))

    def __call__(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self._session.run(crops)
        return np.asarray(out[padim_graph.EMBEDDING], dtype=np.float32)

    def close(self) -> None:
        self._session.close()


def _run_model(path: Path, backend: str, crops: NDArray[np.float32], threads: int,
               batch: int) -> dict[str, NDArray[np.float32]]:
    session = open_model(path, backend, SessionOptions(threads=threads))
    try:
        parts: dict[str, list[NDArray[np.float32]]] = {}
        for i in range(0, len(crops), batch):
            for name, value in session.run(crops[i:i + batch]).items():
                parts.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
        return {k: np.concatenate(v) for k, v in parts.items()}
    finally:
        session.close()


def _parity(reference: dict[str, NDArray[np.float32]], candidates: list[tuple[str, Path]],
            crops: NDArray[np.float32], norm: ScoreNormalisation, threshold: float, threads: int,
            batch: int) -> ParityReport:
    """Each backend's raw outputs against the numpy reference: max errors and equal decisions."""
    ref_decisions = norm.apply(reference["score"]) >= threshold
    entries = []
    for backend, path in candidates:
        got = _run_model(path, backend, crops, threads, batch)
        max_abs = max_rel = 0.0
        for name, ref in reference.items():
            g = got.get(name)
            if g is None or g.shape != ref.shape:
                max_abs = max_rel = float("inf")
                break
            diff = float(np.max(np.abs(g.astype(np.float64) - ref)))
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / max(float(np.max(np.abs(ref))), 1e-12))
        agree = (float(np.mean((norm.apply(got["score"]) >= threshold) == ref_decisions))
                 if "score" in got and got["score"].shape == ref_decisions.shape else 0.0)
        entries.append(ParityEntry(backend=backend, precision=Precision.FP32, max_abs=max_abs, max_rel=max_rel,
                                   decision_agreement=agree, rtol=PARITY_RTOL, min_agreement=PARITY_MIN_AGREEMENT,
                                   passed=max_rel <= PARITY_RTOL and agree >= PARITY_MIN_AGREEMENT,
                                   sha256=sha256_file(path)))
    return ParityReport(passed=all(e.passed for e in entries), samples=len(crops), entries=tuple(entries),
                        reference="numpy (refitted Gaussian on onnxruntime backbone embeddings)")


def _to_openvino(onnx_path: Path, xml: Path, meta_json: str | None) -> None:
    import openvino as ov

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpenVINO raises its own types; say which file
        raise FitError(f"{onnx_path}: OpenVINO cannot convert the refitted model: {exc}") from exc
    if meta_json is not None:
        model.set_rt_info(meta_json, IR_META_PATH)
    ov.save_model(model, str(xml), compress_to_fp16=False)  # an FP32 IR must really hold FP32 weights


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d")


def _iso(wall: float | None) -> str:
    if wall is None:
        return "-"
    return dt.datetime.fromtimestamp(wall, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class _Sources:
    """Step 1's result: the service's config, the bundle refitted (and its ONNX graph), the records and the
    items held out of the fit."""

    cfg: EdgeConfig
    base: Bundle
    base_onnx: Path
    model: onnx.ModelProto
    selection: Selection
    holdout_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Embedded:
    """Step 2's result: the Gaussian accumulated from the fit items, the held-out items' crops (one array per
    item, in record order), how many items fed the fit and why others were skipped."""

    accumulator: GaussianAccumulator
    held: tuple[NDArray[np.float32], ...]
    held_ids: tuple[str, ...]
    items_fit: int
    skipped: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Fitted:
    """Step 3's result: the Gaussian (``size`` x ``size`` positions) and the held-out crops and embeddings."""

    mean: NDArray[np.float32]
    inv_cov: NDArray[np.float32]
    size: int
    held_crops: NDArray[np.float32]
    held_emb: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Calibration:
    """Step 4's result: the held-out reference maps and scores, and the thresholds and normalisation set on them."""

    ref_maps: NDArray[np.float32]
    ref_scores: NDArray[np.float32]
    raw_threshold: float
    norm: ScoreNormalisation
    item_threshold: float | None
    thresholds: dict[str, float]


def _gather(settings: FitSettings, progress: Callable[[str], None]) -> _Sources:
    """Step 1: the config, the starting bundle, the CLEAR records with saved inputs and the held-out split."""
    cfg = load_config(settings.config)
    base, base_onnx, model = _base_bundle(settings, cfg.models.scorer.bundle if cfg.models.scorer else None)
    _check_out(settings, base.root)
    selection: Selection = select_records(settings.audit_dir, settings.since, settings.until)
    holdout_ids = _split(selection.records, settings.holdout, settings.seed)
    progress(f"{len(selection.records)} CLEAR records with saved inputs ({selection.in_range} decided in range, "
             f"{selection.clear} CLEAR); {len(holdout_ids)} items held out for the threshold")
    return _Sources(cfg, base, base_onnx, model, selection, frozenset(holdout_ids))


def _stages(settings: FitSettings, cfg: EdgeConfig) -> tuple[ConditionStage, DetectStage, ModelSet]:
    """The service's own condition and detect stages (its calibrations, its detector, ``max_objects``)."""
    try:
        conditioner = Conditioner.from_config(cfg.condition)
    except CalibrationError as exc:
        raise FitError(f"{settings.config}: the calibrations named in condition: cannot be used: {exc}") from exc
    models = load_models(cfg.models.model_copy(update={"scorer": None, "threads": settings.threads}))
    return ConditionStage(conditioner), DetectStage(ModelHolder(models), cfg.models.max_objects), models


def _embed(settings: FitSettings, sources: _Sources, condition: ConditionStage, detect: DetectStage,
           embedder: _Embedder, progress: Callable[[str], None]) -> _Embedded:
    """Step 2: each record through condition and detect; its object crops into the Gaussian, or kept aside when
    the item is held out."""
    records, contract = sources.selection.records, sources.base.contract
    accumulator = GaussianAccumulator()
    held: list[NDArray[np.float32]] = []
    held_ids: list[str] = []
    skipped: dict[str, int] = {}
    items_fit = 0
    pending: list[NDArray[np.float32]] = []
    for n, record in enumerate(records, 1):
        try:
            detected = detect(condition(_load_inputs(record)))
        except (FrameError, CalibrationError, BackendError) as exc:
            reason = type(exc).__name__
            skipped[reason] = skipped.get(reason, 0) + 1
            log.warning("item skipped", extra={"item_id": record.item_id, "error": str(exc)})
            continue
        if not detected.detections:
            skipped["no_objects"] = skipped.get("no_objects", 0) + 1
            continue
        crops = compose(detected.image, contract, [d.box for d in detected.detections])
        if record.item_id in sources.holdout_ids:
            held.append(crops)
            held_ids.append(record.item_id)
        else:
            pending.append(crops)
            items_fit += 1
            if sum(len(p) for p in pending) >= settings.batch:
                accumulator.add(embedder(np.concatenate(pending)))
                pending.clear()
        if n % 50 == 0:
            progress(f"{n}/{len(records)} items: {accumulator.count} objects embedded")
    if pending:
        accumulator.add(embedder(np.concatenate(pending)))
    return _Embedded(accumulator, tuple(held), tuple(held_ids), items_fit, skipped)


def _fit(settings: FitSettings, embedded: _Embedded, embedder: _Embedder, contract: InputContract,
         base_onnx: Path) -> _Fitted:
    """Step 3: enough objects on both sides, the Gaussian, the held-out crops embedded."""
    shape = (0, contract.tensor_channels, contract.height, contract.width)
    held_crops = np.concatenate(embedded.held) if embedded.held else np.zeros(shape, np.float32)
    count = embedded.accumulator.count
    if count < settings.min_objects:
        raise FitError(f"only {count} benign objects for the fit (from {embedded.items_fit} items; "
                       f"{len(held_crops)} more held out), at least {settings.min_objects} are needed: "
                       "collect more CLEAR items with saved inputs, widen --since, or lower --min-objects")
    if len(held_crops) < settings.min_holdout:
        raise FitError(f"only {len(held_crops)} held-out benign objects (from {len(embedded.held_ids)} items), at "
                       f"least {settings.min_holdout} are needed to set the threshold: collect more items "
                       "or raise --holdout")
    mean, inv_cov = embedded.accumulator.result(settings.eps)
    held_emb = np.concatenate([embedder(held_crops[i:i + settings.batch])
                               for i in range(0, len(held_crops), settings.batch)])
    size = math.isqrt(mean.shape[0])
    if size * size != mean.shape[0]:
        raise FitError(f"{base_onnx}: {mean.shape[0]} Gaussian positions do not form a square map")
    return _Fitted(mean, inv_cov, size, held_crops, held_emb)


def _calibrate(base: Bundle, fitted: _Fitted, held: tuple[NDArray[np.float32], ...]) -> _Calibration:
    """Step 4: the held-out objects scored by the new Gaussian set the raw threshold, the normalisation (the
    starting bundle's kind) and, with enough items, the item threshold."""
    ref_maps, ref_scores = mahalanobis_maps(fitted.held_emb, fitted.mean, fitted.inv_cov, fitted.size)
    raw_threshold = float(np.quantile(ref_scores, BENIGN_QUANTILE))
    low = float(ref_scores.min())
    if not raw_threshold > low:
        raise FitError(f"the {len(ref_scores)} held-out objects all score {low:.4g}: cannot set a threshold "
                       "(are the saved items all the same?)")
    base_kind = base.manifest.normalisation.kind
    plain = base_kind in (NormalisationKind.NONE, NormalisationKind.MINMAX)
    kind = NormalisationKind.CENTRED if plain else base_kind
    norm = ScoreNormalisation(kind, low, low + 2 * (raw_threshold - low), raw_threshold)
    item_threshold = _item_threshold(norm.apply(ref_scores), [len(h) for h in held])
    thresholds = {k: v for k, v in base.manifest.thresholds.items() if k != ITEM_THRESHOLD_KEY}
    thresholds[DECISION_THRESHOLD_KEY] = 0.5
    if item_threshold is not None:
        thresholds[ITEM_THRESHOLD_KEY] = item_threshold
    return _Calibration(ref_maps, ref_scores, raw_threshold, norm, item_threshold, thresholds)


def _export(sources: _Sources, fitted: _Fitted, cal: _Calibration, work: Path) -> tuple[Path, Path]:
    """Step 5a: the refitted ONNX (Gaussian and metadata) and its OpenVINO FP32 IR, in ``work``."""
    model, name = sources.model, sources.base.manifest.name
    norm = cal.norm
    padim_graph.set_gaussian(model, fitted.mean, fitted.inv_cov, str(sources.base_onnx))
    padim_graph.set_meta(model, cal.thresholds, {"kind": str(norm.kind), "low": norm.low, "high": norm.high,
                                                 "centre": norm.centre})
    onnx_path, xml = work / f"{name}.onnx", work / f"{name}_fp32.xml"
    onnx.save(model, str(onnx_path))
    meta = padim_graph.read_meta(model)
    if meta is not None:
        meta = {**meta, "precision": "fp32"}
    _to_openvino(onnx_path, xml, None if meta is None else json.dumps(meta, sort_keys=True))
    return onnx_path, xml


def _verify(settings: FitSettings, fitted: _Fitted, cal: _Calibration, onnx_path: Path, xml: Path) -> ParityReport:
    """Step 5b: both backends against the numpy reference on held-out crops; no bundle when they disagree."""
    k = min(settings.parity_samples, len(fitted.held_crops))
    reference = {"anomaly_map": cal.ref_maps[:k], "score": cal.ref_scores[:k]}
    report = _parity(reference, [("onnxruntime", onnx_path), ("openvino", xml)], fitted.held_crops[:k], cal.norm,
                     0.5, settings.threads, settings.batch)
    if not report.passed:
        lines = "; ".join(f"{e.backend}: max_rel {e.max_rel:.3g}, agreement {e.decision_agreement}"
                          for e in report.entries)
        raise FitError(f"the refitted models disagree with the numpy reference ({lines}); no bundle written")
    return report


def _content(settings: FitSettings, sources: _Sources, embedded: _Embedded, cal: _Calibration,
             detector: BundleManifest) -> BundleContent:
    """Step 5c: the new bundle's manifest content: version, provenance (what it learnt from), notes."""
    base, selection = sources.base.manifest, sources.selection
    name, item_threshold = base.name, cal.item_threshold
    version = settings.version or f"{base.version}-site.{_today()}"
    span = f"{_iso(selection.first_wall)} .. {_iso(selection.last_wall)}"
    training = (f"Gaussian refitted on site by `edge fit` on {embedded.accumulator.count} benign object crops from "
                f"{embedded.items_fit} CLEAR items (audit store {settings.audit_dir.resolve()}, decided {span}, "
                f"--since {settings.since.isoformat()}"
                + ("" if settings.until is None else f" --until {settings.until.isoformat()}")
                + f"); objects from the service's detector "
                f"{detector.name}@{detector.version}; "
                f"threshold = {BENIGN_QUANTILE:.0%} of {len(cal.ref_scores)} held-out benign objects from "
                f"{len(embedded.held_ids)} other items (seed {settings.seed}); "
                + ("no item threshold (fewer than "
                   f"{MIN_BENIGN_ITEMS} held-out items)" if item_threshold is None else
                   f"item threshold {item_threshold:.6g} = {BENIGN_QUANTILE:.0%} of those items clear")
                + "; backbone from "
                f"{name}@{base.version} ({base.content_sha256[:12]})")
    item_note = "" if item_threshold is None else item_threshold_note(
        item_threshold, f"{BENIGN_QUANTILE:.0%} of {len(embedded.held_ids)} held-out items clear, edge fit {_today()}",
        f"{detector.name}@{detector.version}")
    notes = (item_note + f"site refit of {name}@{base.version} (edge fit); "
             f"raw threshold {cal.raw_threshold:.6g}; " + without_item_threshold_note(base.notes))
    return BundleContent(name=name, version=version, role=Role.SCORER, contract=sources.base.contract,
                         outputs=base.outputs, thresholds=cal.thresholds, normalisation=cal.norm,
                         classes=base.classes, training_data=training, notes=notes,
                         item_detector=None if item_threshold is None else DetectorRef.of(detector))


def run_fit(settings: FitSettings, progress: Callable[[str], None] = lambda _: None) -> FitResult:
    """Refit and write the bundle; the steps are the module docstring's, one function each.

    Raises:
        FitError: nothing usable in the audit store, too few objects, a bundle that is not PaDiM-style, an
            output folder that exists (without ``force``) or is the starting bundle, failed parity.
        ConfigError, BundleError, BackendError, CalibrationError: the service's config, bundles or
            calibrations cannot be used (the same errors ``edge run`` would give).
    """
    started = time.monotonic()
    seconds: dict[str, float] = {}
    sources = _gather(settings, progress)
    condition, detect, models = _stages(settings, sources.cfg)
    detector = models.detector.bundle.manifest
    seconds["setup"] = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="edge-fit-") as tmp:
        work = Path(tmp)
        embedder = _Embedder(sources.model, str(sources.base_onnx), work, settings.threads)
        try:
            t0 = time.monotonic()
            embedded = _embed(settings, sources, condition, detect, embedder, progress)
            seconds["condition_detect_embed"] = time.monotonic() - t0
            t0 = time.monotonic()
            fitted = _fit(settings, embedded, embedder, sources.base.contract, sources.base_onnx)
            seconds["fit"] = time.monotonic() - t0
        finally:
            embedder.close()
            models.close()
        cal = _calibrate(sources.base, fitted, embedded.held)
        t0 = time.monotonic()
        onnx_path, xml = _export(sources, fitted, cal, work)
        seconds["export"] = time.monotonic() - t0
        t0 = time.monotonic()
        report = _verify(settings, fitted, cal, onnx_path, xml)
        seconds["parity"] = time.monotonic() - t0
        content = _content(settings, sources, embedded, cal, detector)
        t0 = time.monotonic()
        bundle = write_bundle(settings.out, content,
                              [BundleModel(ModelFormat.ONNX, Precision.FP32, onnx_path),
                               BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)],
                              report, package_versions(), overwrite=settings.force)
        seconds["write"] = time.monotonic() - t0
    seconds["total"] = time.monotonic() - started
    base = sources.base.manifest
    below = float(np.mean(cal.norm.apply(cal.ref_scores) < 0.5))
    return FitResult(bundle=bundle, base=f"{base.name}@{base.version}", records=len(sources.selection.records),
                     items_fit=embedded.items_fit, items_holdout=len(embedded.held_ids),
                     objects_fit=embedded.accumulator.count, objects_holdout=len(cal.ref_scores),
                     raw_threshold=cal.raw_threshold, holdout_below=below,
                     holdout_items=embedded.held_ids, item_threshold=cal.item_threshold, skipped=embedded.skipped,
                     seconds={k: round(v, 2) for k, v in seconds.items()})
