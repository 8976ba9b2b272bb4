"""The models that screen items: loaded from verified bundles, warmed, and swapped atomically on reload.

Stages read ``ModelHolder.current`` once per item, so a SIGHUP reload that swaps the holder's ``ModelSet``
never mixes an old detector with a new scorer inside one item. A new set is loaded and warmed completely
before the swap; if that fails the old set stays in service.

Every load (start and reload) goes through :func:`edge.bundles.signing.verify_bundle`: each bundle is read once
into memory, its hashes and its signature by a key of ``models.trusted_keys`` are checked on those bytes, and the
backends compile those same bytes, so a bundle changed on disk afterwards changes nothing until the next reload,
which verifies again. With ``models.allow_unsigned`` an unsigned bundle runs, and the set reports degraded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from edge.backends import BundleSession, open_backend
from edge.bundles.loader import Bundle
from edge.bundles.manifest import Precision
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY, Role
from edge.bundles.runtimes import installed_version, untested_runtime
from edge.bundles.signing import TrustedKey, load_trusted_keys, verify_bundle
from edge.config.models import CropModelEntry, ModelEntry, ModelsConfig
from edge.errors import BackendError, BundleError
from edge.records import ModelRef

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A bundle and the compiled session that runs it; ``unsigned`` says why it runs without a valid trusted
    signature (``models.allow_unsigned``), None when a trusted key signed it."""

    bundle: Bundle
    session: BundleSession
    backend: str
    operating_point: str = "item"
    unsigned: str | None = None
    threshold_override: float | None = None
    """The config's threshold for this model in its combination (``models.<slot>.threshold``), if any."""

    @property
    def threshold(self) -> float:
        """The decision threshold: the config's for this combination when set, else the bundle's, set on benign
        validation data: ``thresholds.item`` at the item operating point when the bundle has one, else
        ``thresholds.score`` (detectors have only the latter).

        A benign/anomaly classifier without one decides by its argmax, i.e. anomaly probability >= 0.5.
        """
        if self.threshold_override is not None:
            return self.threshold_override
        thresholds = self.bundle.manifest.thresholds
        if self.operating_point == "item" and ITEM_THRESHOLD_KEY in thresholds:
            return float(thresholds[ITEM_THRESHOLD_KEY])
        if DECISION_THRESHOLD_KEY in thresholds:
            return float(thresholds[DECISION_THRESHOLD_KEY])
        if self.bundle.role is Role.CLASSIFIER:
            return 0.5
        raise BundleError(f"bundle {self.bundle.manifest.name} has no 'score' threshold")


@dataclass(frozen=True, slots=True)
class ModelSet:
    """The detector, the (optional) classifier and anomaly scorer in service, and the detector's threat classes
    (bundle's merged with ``models.threat_classes``), with the refs every decision cites."""

    detector: LoadedModel
    scorer: LoadedModel | None
    degraded: str | None = None
    classifier: LoadedModel | None = None
    threat_classes: Mapping[str, float] = field(default_factory=dict)

    @property
    def crop_models(self) -> tuple[LoadedModel, ...]:
        """The models that score object crops: classifier, then scorer (those present)."""
        return tuple(m for m in (self.classifier, self.scorer) if m is not None)

    @property
    def can_alarm(self) -> bool:
        """Some signal can raise an ALARM: a threat class, a classifier or a scorer."""
        return bool(self.threat_classes) or bool(self.crop_models)

    @property
    def refs(self) -> tuple[ModelRef, ...]:
        return tuple(m.bundle.model_ref for m in (self.detector, *self.crop_models))

    def close(self) -> None:
        for model in (self.detector, *self.crop_models):
            model.session.close()


def effective_threat_classes(detector: Bundle, overrides: Mapping[str, float | None]) -> dict[str, float]:
    """The detector bundle's ``threat_classes`` with ``models.threat_classes`` merged over them (None removes).

    Raises:
        BundleError: an override names a class the detector does not have.
    """
    classes = detector.manifest.classes
    unknown = sorted(set(overrides) - set(classes))
    if unknown:
        raise BundleError(f"models.threat_classes: {', '.join(map(repr, unknown))} not a class of detector "
                          f"{detector.manifest.name} ({', '.join(classes) or 'no classes'})")
    merged: dict[str, float] = dict(detector.manifest.threat_classes)
    for name, threshold in overrides.items():
        if threshold is None:
            merged.pop(name, None)
        else:
            merged[name] = float(threshold)
    return merged


def _open(entry: ModelEntry, role: set[Role], cfg: ModelsConfig, streams: int, trusted: tuple[TrustedKey, ...]
          ) -> tuple[LoadedModel, str | None]:
    """Verify a bundle (in memory) and open it on the configured backend and device; fall back to CPU rather
    than crash-loop.

    Order tried: (backend, device) as configured; the same backend on CPU; the other backend on CPU. Any
    fallback is returned as a note that makes the service report ``degraded``. Backend and precision are the
    entry's own, else the section's.
    """
    path = str(entry.bundle)
    verified = verify_bundle(path, trusted, cfg.allow_unsigned)
    bundle = verified.bundle
    if bundle.role not in role:
        raise BundleError(f"{path}: bundle role is {bundle.role}, expected {' or '.join(sorted(role))}")
    if bundle.forced:
        log.warning("bundle was built despite failing parity (forced)", extra={"bundle": path})
    precision = Precision(cfg.precision_of(entry))
    configured = cfg.backend_of(entry)
    failures: list[str] = []
    if all(m.precision != precision for m in bundle.manifest.models):
        # An INT8 deployment with a bundle that ships FP32 only (its INT8 failed the agreement rule) still
        # screens, at FP32 speed, and says so, rather than refusing to start.
        failures.append(f"the bundle has no {precision} model (runs {Precision.FP32})")
        precision = Precision.FP32
    other = "onnxruntime" if configured == "openvino" else "openvino"
    attempts: list[tuple[str, str]] = [(configured, cfg.device)]
    if cfg.device != "CPU":
        attempts.append((configured, "CPU"))
    attempts.append((other, "CPU"))
    for backend, device in attempts:
        # Parity was proven on the runtime releases the bundle records; another release screens unchecked.
        untested = untested_runtime(bundle.manifest.name, bundle.manifest.toolchain, backend,
                                    installed_version(backend))
        if untested is not None and cfg.require_tested_runtime:
            failures.append(f"{backend}/{device}: refused, {untested} (models.require_tested_runtime)")
            log.error("untested inference runtime refused", extra={"bundle": path, "backend": backend,
                                                                   "error": untested})
            continue
        try:
            session = open_backend(bundle, backend, precision, cfg.threads, cfg.cache_dir, device=device,
                                   streams=streams)
        except (BackendError, BundleError) as exc:  # BundleError: no model this backend opens (e.g. ORT + IR)
            failures.append(f"{backend}/{device}: {exc}")
            log.error("backend failed to load", extra={"bundle": path, "backend": backend, "device": device,
                                                       "error": str(exc)})
            continue
        note = None
        if failures:
            note = (f"{bundle.manifest.name} runs on {backend}/{device} because "
                    f"{'; '.join(failures)}")
        if untested is not None:
            log.warning("untested inference runtime", extra={"bundle": path, "backend": backend, "error": untested})
            note = "; ".join(n for n in (note, untested) if n)
        # The session holds what it runs (OpenVINO keeps the weights it points into, ONNX Runtime copies); the
        # bundle's other files (formats and precisions not chosen) need not stay in memory while it screens.
        running = replace(bundle, files={})
        return LoadedModel(running, session, backend, unsigned=verified.unsigned), note
    raise BackendError(f"{path}: no backend could load the model: {'; '.join(failures)}")


def _stale_item_threshold(scorer: LoadedModel, detector: LoadedModel) -> str | None:
    """A note when the scorer's item threshold was measured through another detector than the one in service.

    The item operating point depends on the detector (how many boxes per item, how tight), so after a detector
    change 95% of benign items may no longer clear: the service still screens, reports degraded and says how to
    re-measure.
    """
    measured = scorer.bundle.manifest.item_threshold_detector()
    running = f"{detector.bundle.manifest.name}@{detector.bundle.manifest.version}"
    ref, theirs = scorer.bundle.manifest.item_detector, detector.bundle.manifest.content_sha256
    if ref is not None and ref.sha256 and ref.sha256 != theirs:  # same name and version, rebuilt: stale too
        measured, running = f"{measured} (manifest {ref.sha256[:12]})", f"{running} (manifest {theirs[:12]})"
    elif measured is None or measured == running:
        return None
    note = (f"{scorer.bundle.manifest.name}'s item threshold was measured through {measured}, but the detector "
            f"is {running}: re-measure it (edge eval --write-item-threshold)")
    log.warning("stale item threshold", extra={"bundle": scorer.bundle.manifest.name, "measured_with": measured,
                                                "detector": running})
    return note


def warm(model: LoadedModel) -> float:
    """Run one zero batch so that the first item does not pay for lazy compilation; returns seconds taken."""
    contract = model.bundle.contract
    started = time.monotonic()
    model.session.run(np.zeros((1, contract.tensor_channels, contract.height, contract.width), np.float32))
    return time.monotonic() - started


def load_models(cfg: ModelsConfig, streams: int = 1) -> ModelSet:
    """Load, verify, compile and warm the configured bundles.

    ``streams``: items in flight at once (``decide.workers``); each model serves that many calls in parallel.

    Raises:
        BundleError: a bundle is missing, tampered, of the wrong role, or (unless ``cfg.allow_unsigned``) not
            signed by a key of ``cfg.trusted_keys``; a trusted-key file is unusable.
        BackendError: no backend could run a bundle.
    """
    trusted = load_trusted_keys(cfg.trusted_keys)
    detector, note_d = _open(cfg.detector, {Role.DETECTOR}, cfg, streams, trusted)
    threat_classes = effective_threat_classes(detector.bundle, cfg.threat_classes)
    notes: list[str | None] = [note_d]
    classifier = None
    if cfg.classifier is not None:
        classifier, note_c = _crop_model(cfg.classifier, {Role.CLASSIFIER}, cfg, streams, trusted, detector)
        notes.append(note_c)
    scorer = None
    if cfg.scorer is not None:
        scorer, note_s = _crop_model(cfg.scorer, {Role.SCORER, Role.CLASSIFIER}, cfg, streams, trusted, detector)
        notes.append(note_s)
    log.info("alarm signals", extra={"threat_classes": dict(threat_classes),
                                     "classifier": classifier.bundle.manifest.name if classifier else None,
                                     "scorer": scorer.bundle.manifest.name if scorer else None})
    for model in (detector, classifier, scorer):
        if model is not None:
            seconds = warm(model)
            log.info("model warmed", extra={"bundle": model.bundle.manifest.name, "backend": model.backend,
                                            "seconds": round(seconds, 3)})
    joined = "; ".join(n for n in (_unsigned_note(detector, classifier, scorer), *notes) if n)
    return ModelSet(detector, scorer, joined or None, classifier, threat_classes)


def _crop_model(entry: CropModelEntry, roles: set[Role], cfg: ModelsConfig, streams: int,
                trusted: tuple[TrustedKey, ...], detector: LoadedModel) -> tuple[LoadedModel, str | None]:
    """A classifier or scorer at the configured operating point, and its note (fallbacks, stale item point)."""
    model, note = _open(entry, roles, cfg, streams, trusted)
    model = replace(model, operating_point=cfg.operating_point, threshold_override=entry.threshold)
    if entry.threshold is not None:
        log.info("operating point", extra={"bundle": model.bundle.manifest.name, "operating_point": "config",
                                           "threshold": model.threshold})
        return model, note
    has_item = ITEM_THRESHOLD_KEY in model.bundle.manifest.thresholds
    if cfg.operating_point == "item" and not has_item:
        log.warning("the bundle has no item threshold: objects decide at the object threshold, so items of many "
                    "objects alarm more often (set thresholds.item with edge eval --write-item-threshold)",
                    extra={"bundle": model.bundle.manifest.name})
    log.info("operating point", extra={
        "bundle": model.bundle.manifest.name, "operating_point": cfg.operating_point if has_item else "object",
        "threshold": model.threshold})
    if cfg.operating_point == "item" and has_item:
        note = "; ".join(n for n in (note, _stale_item_threshold(model, detector)) if n) or None
    return model, note


def _unsigned_note(*models: LoadedModel | None) -> str | None:
    """The degraded reason for bundles running without a valid trusted signature (``models.allow_unsigned``)."""
    unsigned = [f"{m.bundle.manifest.name} ({m.unsigned})" for m in models if m is not None and m.unsigned]
    if not unsigned:
        return None
    return "bundles unsigned (models.allow_unsigned is true): " + "; ".join(unsigned)


class ModelHolder:
    """The current ``ModelSet``; replaced as a whole (attribute assignment is atomic in CPython)."""

    def __init__(self, models: ModelSet) -> None:
        self.current = models

    def swap(self, models: ModelSet) -> ModelSet:
        """Put ``models`` in service and return the previous set (close it once in-flight items are done)."""
        old, self.current = self.current, models
        return old
