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
from dataclasses import dataclass, replace

import numpy as np

from edge.backends import BundleSession, open_backend
from edge.bundles.loader import Bundle
from edge.bundles.manifest import Precision
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY, Role
from edge.bundles.runtimes import installed_version, untested_runtime
from edge.bundles.signing import TrustedKey, load_trusted_keys, verify_bundle
from edge.config.models import ModelsConfig
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

    @property
    def threshold(self) -> float:
        """The bundle's decision threshold, set on benign validation data: ``thresholds.item`` at the item
        operating point when the bundle has one, else ``thresholds.score`` (detectors have only the latter).

        A benign/anomaly classifier without one decides by its argmax, i.e. anomaly probability >= 0.5.
        """
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
    """The detector and (optionally) the scorer in service, with the refs every decision cites."""

    detector: LoadedModel
    scorer: LoadedModel | None
    degraded: str | None = None

    @property
    def refs(self) -> tuple[ModelRef, ...]:
        models = [self.detector] + ([self.scorer] if self.scorer is not None else [])
        return tuple(m.bundle.model_ref for m in models)

    def close(self) -> None:
        self.detector.session.close()
        if self.scorer is not None:
            self.scorer.session.close()


def _open(path: str, role: set[Role], cfg: ModelsConfig, streams: int, trusted: tuple[TrustedKey, ...]
          ) -> tuple[LoadedModel, str | None]:
    """Verify a bundle (in memory) and open it on the configured backend and device; fall back to CPU rather
    than crash-loop.

    Order tried: (backend, device) as configured; the same backend on CPU; the other backend on CPU. Any
    fallback is returned as a note that makes the service report ``degraded``.
    """
    verified = verify_bundle(path, trusted, cfg.allow_unsigned)
    bundle = verified.bundle
    if bundle.role not in role:
        raise BundleError(f"{path}: bundle role is {bundle.role}, expected {' or '.join(sorted(role))}")
    if bundle.forced:
        log.warning("bundle was built despite failing parity (forced)", extra={"bundle": path})
    precision = Precision(cfg.precision)
    failures: list[str] = []
    if all(m.precision != precision for m in bundle.manifest.models):
        # An INT8 deployment with a bundle that ships FP32 only (its INT8 failed the agreement rule) still
        # screens, at FP32 speed, and says so, rather than refusing to start.
        failures.append(f"the bundle has no {precision} model (runs {Precision.FP32})")
        precision = Precision.FP32
    other = "onnxruntime" if cfg.backend == "openvino" else "openvino"
    attempts: list[tuple[str, str]] = [(cfg.backend, cfg.device)]
    if cfg.device != "CPU":
        attempts.append((cfg.backend, "CPU"))
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
    detector, note_d = _open(str(cfg.detector), {Role.DETECTOR}, cfg, streams, trusted)
    scorer = None
    note_s = None
    if cfg.scorer is not None:
        scorer, note_s = _open(str(cfg.scorer), {Role.SCORER, Role.CLASSIFIER}, cfg, streams, trusted)
        scorer = replace(scorer, operating_point=cfg.operating_point)
        has_item = ITEM_THRESHOLD_KEY in scorer.bundle.manifest.thresholds
        if cfg.operating_point == "item" and not has_item:
            log.warning("the scorer bundle has no item threshold: objects decide at the object threshold, so "
                        "items of many objects alarm more often (set thresholds.item with edge eval "
                        "--write-item-threshold)", extra={"bundle": scorer.bundle.manifest.name})
        log.info("scorer operating point", extra={
            "bundle": scorer.bundle.manifest.name, "operating_point": cfg.operating_point if has_item else "object",
            "threshold": scorer.threshold})
        if cfg.operating_point == "item" and has_item:
            note_s = "; ".join(n for n in (note_s, _stale_item_threshold(scorer, detector)) if n) or None
    for model in (detector, scorer):
        if model is not None:
            seconds = warm(model)
            log.info("model warmed", extra={"bundle": model.bundle.manifest.name, "backend": model.backend,
                                            "seconds": round(seconds, 3)})
    notes = "; ".join(n for n in (_unsigned_note(detector, scorer), note_d, note_s) if n)
    return ModelSet(detector, scorer, notes or None)


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
