"""Offline runner: the service's own pipeline over a labelled dataset, split across worker processes.

Where it sits: between the dataset readers and the metrics. Each worker process loads the config file, the
bundles and the calibrations exactly as ``edge run`` does (``edge.runtime.build_stages``, ``load_models``,
``load_conditioner``) and pushes chunks of items through ``edge.pipeline.Pipeline`` with back-pressure (offline
replay: nothing moves on a belt, so intake waits instead of declaring overload). Every item comes back as an
``ItemOutcome``: its decision, or UNSCREENED with the pipeline's reason when it could not be screened.

Two things differ from the live service, on purpose: the item deadline is ``RunSettings.deadline_s`` counted from
when a worker reads the item (default generous: an evaluation measures screening, not the box's speed under N
parallel workers), and no camera, MQTT or audit sink is attached (decisions go to a ``MemorySink``).

Must not: import torch, change how any stage works, or drop an item.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from edge.config import EdgeConfig, load_config
from edge.config.models import CropModelEntry
from edge.pipeline import Pipeline, Stage
from edge.records import Decision, RawItem
from edge.runtime import build_stages, load_conditioner
from edge.screening import ModelHolder, ModelSet, load_models
from edge.sinks.memory import MemorySink
from edge.sources.item_meta import file_item_meta
from edge.stages.decide import object_signals
from edge_tools.eval.datasets import load_raw_item
from edge_tools.eval.records import DatasetItem, ItemOutcome, ObjectOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How to build each worker's runtime.

    Attributes:
        config: the service's config file (bundles, calibrations, backend, thresholds are read from it).
        scorer: a scorer bundle that replaces the config's (``--compare``); None keeps the config's.
        detector_only: run without any crop model, scorer or classifier (detector metrics on images a crop model
            cannot read, e.g. ``pc``-only real images with an ``hlz`` scorer); threat classes still alarm.
        deadline_s: per-item deadline in seconds, from when the item is read.
        grey_as_colour: hand grey images on as R = G = B pseudo-colour (see ``load_raw_item``).
        log_level: log level inside the workers (the pipeline logs every UNSCREENED item; the report and
            items-K.jsonl carry each reason and detail instead).
    """

    config: Path
    scorer: Path | None = None
    detector_only: bool = False
    deadline_s: float = 600.0
    grey_as_colour: bool = True
    log_level: str = "CRITICAL"


def effective_config(settings: RunSettings) -> EdgeConfig:
    """The config file with the evaluation's overrides (scorer swapped or removed).

    Raises:
        ConfigError: the file is invalid.
    """
    cfg = load_config(settings.config)
    if settings.detector_only:
        models = cfg.models.model_copy(update={"scorer": None, "classifier": None})
    elif settings.scorer is not None:
        models = cfg.models.model_copy(update={"scorer": CropModelEntry(bundle=settings.scorer)})
    else:
        return cfg
    return cfg.model_copy(update={"models": models})


class DatasetSource:
    """A finite ``FrameSource`` over dataset items; reads pixels lazily, one item per ``next_item``."""

    def __init__(self, items: Sequence[DatasetItem], scanner_id: str, deadline_s: float,
                 grey_as_colour: bool) -> None:
        self._items = list(items)
        self._scanner = scanner_id
        self._deadline = deadline_s
        self._grey = grey_as_colour
        self._next = 0
        self.exhausted = False
        self.keys: dict[str, str] = {}
        """item_id → dataset key of every item handed out."""

    def next_item(self, timeout_s: float) -> RawItem | None:
        if self._next >= len(self._items):
            self.exhausted = True
            return None
        item = self._items[self._next]
        meta = file_item_meta(self._scanner, self._next, f"eval-{self._next:06d}-{item.key}", self._deadline)
        self._next += 1
        self.keys[meta.item_id] = item.key
        return load_raw_item(item, meta, self._grey)

    def acknowledge(self, source_ref: str) -> None:
        """Nothing to let go: evaluation reads a labelled set and leaves it where it is."""
        return None

    def close(self) -> None:
        self.exhausted = True


def outcome_of(key: str, decision: Decision) -> ItemOutcome:
    """Reduce a decision to what the metrics need."""
    objects = tuple(
        ObjectOutcome((o.box.x1, o.box.y1, o.box.x2, o.box.y2), o.label, float(o.detector_score),
                      None if o.anomaly_score is None else float(o.anomaly_score),
                      None if o.threshold is None else float(o.threshold), bool(o.anomalous),
                      object_signals(o), tuple(r.code for r in o.reasons),
                      None if o.classifier_score is None else float(o.classifier_score))
        for o in decision.objects)
    return ItemOutcome(key, str(decision.verdict), None if decision.reason is None else str(decision.reason),
                       decision.detail, objects, float(decision.latency_ms), decision.reason_codes)


class EvalRuntime:
    """One process's screening runtime: config, models and stages built once, reused for every chunk."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.cfg = effective_config(settings)
        self.models = ModelHolder(load_models(self.cfg.models, self.cfg.decide.workers))
        conditioner, missing = load_conditioner(self.cfg)
        self.stages: list[Stage] = build_stages(self.cfg, self.models, conditioner, missing, None)

    @property
    def model_set(self) -> ModelSet:
        return self.models.current

    def decisions(self, items: Sequence[DatasetItem]) -> dict[str, Decision]:
        """Screen ``items`` through a fresh pipeline; the service's decision of each, by item key."""
        source = DatasetSource(items, self.cfg.site.scanner_id, self.settings.deadline_s,
                               self.settings.grey_as_colour)
        sink = MemorySink()
        pipeline = Pipeline(source, self.stages, [sink], queue_depth=self.cfg.decide.queue_depth,
                            source_stall_s=self.cfg.decide.source_stall_s, backpressure=True,
                            models=self.models.current.refs)
        pipeline.start()
        try:
            pipeline.wait_idle(timeout_s=self.settings.deadline_s + 30.0 * max(1, len(items)))
        finally:
            pipeline.stop(timeout_s=5.0)  # anything still open is settled UNSCREENED (shutdown), never lost
        return {source.keys.get(d.item_id, d.item_id): d for d in sink.decisions}

    def run(self, items: Sequence[DatasetItem]) -> list[ItemOutcome]:
        """Screen ``items`` through a fresh pipeline; one outcome per item, in the given order."""
        by_key = {key: outcome_of(key, d) for key, d in self.decisions(items).items()}
        return [by_key.get(item.key) or ItemOutcome(item.key, "unscreened", "internal_error",
                                                    "the pipeline returned no decision for this item", (), 0.0)
                for item in items]

    def close(self) -> None:
        self.models.current.close()


# One runtime per worker process, built by the pool initialiser: pool workers can reach per-process state only
# through the module. Set once per process and never changed while it runs chunks.
_RUNTIME: EvalRuntime | None = None
_RUNTIME_ERROR: str | None = None


def _init_worker(settings: RunSettings) -> None:
    global _RUNTIME, _RUNTIME_ERROR  # the worker's runtime, built once (loading bundles takes seconds)
    logging.basicConfig(level=settings.log_level.upper())
    try:
        _RUNTIME = EvalRuntime(settings)
    except Exception as exc:  # reported with the first chunk, where the main process can show it
        _RUNTIME_ERROR = f"{type(exc).__name__}: {exc}"


def _run_chunk(items: Sequence[DatasetItem]) -> list[ItemOutcome]:
    if _RUNTIME is None:
        raise RuntimeError(f"worker could not build the runtime: {_RUNTIME_ERROR}")
    return _RUNTIME.run(items)


def chunks(items: Sequence[DatasetItem], workers: int, max_size: int = 16) -> list[list[DatasetItem]]:
    """Split into chunks small enough for a smooth progress bar and an even load across workers."""
    size = max(1, min(max_size, math.ceil(len(items) / max(1, 4 * workers))))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def run_dataset(items: Sequence[DatasetItem], settings: RunSettings, workers: int = 2,
                progress: Callable[[int], object] | None = None) -> list[ItemOutcome]:
    """Screen every item; ``workers`` = 1 runs in this process (no pool). Outcomes come back in item order.

    Raises:
        ConfigError: the config file is invalid.
        EdgeError, RuntimeError: a worker could not build its runtime (bundle missing, backend failed).
    """
    effective_config(settings)  # fail here, with the file:line messages, before any process starts
    parts = chunks(items, workers)
    results: dict[int, list[ItemOutcome]] = {}
    if workers <= 1:
        runtime = EvalRuntime(settings)
        try:
            for n, part in enumerate(parts):
                results[n] = runtime.run(part)
                if progress is not None:
                    progress(len(part))
        finally:
            runtime.close()
    else:
        # spawn, not fork: the parent may hold threads (tqdm, OpenVINO) that a forked child would inherit broken.
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(settings,)) as pool:
            futures = {pool.submit(_run_chunk, part): n for n, part in enumerate(parts)}
            try:
                for future in as_completed(futures):
                    n = futures[future]
                    results[n] = future.result()
                    if progress is not None:
                        progress(len(parts[n]))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return [outcome for n in range(len(parts)) for outcome in results[n]]
