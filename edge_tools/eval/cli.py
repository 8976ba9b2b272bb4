"""``edge eval``: the papers' metrics for the service's whole pipeline on a labelled dataset.

Where it sits: a thin typer layer (mounted by ``edge/cli.py`` as ``app.command("eval")(eval_command)``) over
the readers (``edge_tools.eval.datasets``), the offline runner (``edge_tools.eval.runner``), the report
(``edge_tools.eval.report``) and the optional plots. Arguments in, work run with a tqdm bar, reports written.
Must not: hold metric or pipeline logic.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import typer

from edge.bundles.manifest import Precision
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY
from edge.config import DEFAULT_CONFIG_PATH, EdgeConfig
from edge.errors import ConfigError, EdgeError
from edge_tools.eval.datasets import LAYOUTS, read_dataset
from edge_tools.eval.records import Dataset, ItemOutcome
from edge_tools.eval.report import EvalReport, build_report, item_rows, markdown_report, report_json, scorer_family
from edge_tools.eval.runner import RunSettings, effective_config, run_dataset


def _bundle_identity(path: Path | None) -> tuple[str | None, str, str]:
    """(name@version, notes, role) of a bundle, read from its manifest without compiling it."""
    if path is None:
        return None, "", ""
    from edge.bundles.loader import load_bundle

    bundle = load_bundle(path, verify_hashes=False)
    m = bundle.manifest
    return f"{m.name}@{m.version}", f"{m.training_data} {m.notes}", str(m.role)


def _threat_classes(cfg: EdgeConfig) -> dict[str, float]:
    """The detector's threat classes in effect (the bundle's with ``models.threat_classes`` merged over them)."""
    from edge.bundles.loader import load_bundle
    from edge.screening import effective_threat_classes

    detector = load_bundle(cfg.models.detector.bundle, verify_hashes=False)
    return effective_threat_classes(detector, cfg.models.threat_classes)


def evaluate(dataset: Dataset, settings: RunSettings, workers: int,
             progress_desc: str = "edge eval") -> tuple[EvalReport, list[ItemOutcome]]:
    """Run one (detector, scorer) configuration over ``dataset`` and build its report (with a progress bar)."""
    from tqdm import tqdm

    cfg = effective_config(settings)
    detector, _, _ = _bundle_identity(cfg.models.detector.bundle)
    scorer, notes, role = _bundle_identity(cfg.models.scorer.bundle if cfg.models.scorer is not None else None)
    classifier, _, _ = _bundle_identity(cfg.models.classifier.bundle if cfg.models.classifier is not None else None)
    started = time.monotonic()
    with tqdm(total=len(dataset.items), unit="item", desc=progress_desc, disable=None) as bar:
        outcomes = run_dataset(dataset.items, settings, workers, progress=bar.update)
    report = build_report(dataset, outcomes, detector=detector or str(cfg.models.detector.bundle), scorer=scorer,
                          family=scorer_family(scorer, notes, role), seconds=time.monotonic() - started,
                          workers=workers, classifier=classifier, threat_classes=_threat_classes(cfg))
    return report, outcomes


def _write_item_thresholds(reports: list[EvalReport], variants: list[RunSettings], folder: Path,
                           version: str | None) -> None:
    """One re-thresholded copy per evaluated scorer bundle (``edge_tools.eval.operating_point``)."""
    from edge.bundles.loader import load_bundle
    from edge_tools.eval.operating_point import write_item_threshold

    for report, settings in zip(reports, variants, strict=True):
        entry = effective_config(settings).models.scorer
        if entry is None:
            typer.echo("--write-item-threshold: the config names no scorer", err=True)
            raise typer.Exit(code=1)
        scorer = entry.bundle
        try:
            detector = load_bundle(effective_config(settings).models.detector.bundle, verify_hashes=False).manifest
            bundle = write_item_threshold(report, scorer, folder / scorer.name, version, overwrite=True,
                                          detector_sha256=detector.content_sha256)
        except EdgeError as exc:
            typer.echo(f"edge eval: {scorer}: {exc}", err=True)
            raise typer.Exit(code=1) from None
        m = bundle.manifest
        typer.echo(f"wrote {bundle.root} ({m.name}@{m.version}): thresholds.item "
                   f"{m.thresholds[ITEM_THRESHOLD_KEY]:.6g}, object threshold "
                   f"{m.thresholds.get(DECISION_THRESHOLD_KEY, float('nan')):.6g}; unsigned: sign it "
                   f"(edge-export sign {bundle.root} --key KEYFILE) before a box will run it")
        if any(e.precision is Precision.INT8 for e in m.models):
            typer.echo(f"edge eval: {m.name}'s INT8 model was judged at the previous item threshold: re-run "
                       f"`edge-export add-int8 {bundle.root} --data … -o {bundle.root} --version …`", err=True)


def eval_command(
    data: Path = typer.Argument(..., help="labelled dataset: a virtual-scanner output folder or COCO .json, a "
                                "GDXray-style folder (boxes_xyxy.csv) or a SIXray VOC folder (annotations_voc/)"),
    scorers: list[Path] | None = typer.Argument(None, help="with --compare: the scorer bundles to compare",
                                                show_default=False),
    config: Path = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c", help="the service's config file "
                                "(bundles, calibrations, backend)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for eval.json, eval.md, items-*.jsonl and "
                                    "plots (default: print the tables only)"),
    compare: bool = typer.Option(False, "--compare", help="run each scorer bundle given after DATA on the same "
                                 "data (same detector) into one table"),
    layout: str = typer.Option("auto", "--layout", help=f"dataset layout: {', '.join(LAYOUTS)}"),
    modality: str = typer.Option("auto", "--modality", help="auto (raw high/low when the COCO image names "
                                 "them) or image (the image file: pseudo-colour or grey)"),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", "-j", min=1,
                                help="worker processes, each with its own runtime built from the config"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="evaluate only the first N items"),
    detector_only: bool = typer.Option(False, "--detector-only", help="run without the scorer and the "
                                       "classifier (detector metrics on images they cannot read)"),
    threat_kinds: str = typer.Option("", "--threat-kinds", help="comma-separated kinds that are threats when an "
                                     "annotation has no 'threat' flag (default: every annotated object)"),
    exclude_groups: str = typer.Option("container", "--exclude-groups", help="comma-separated COCO 'group' "
                                       "values that are not detector ground truth"),
    grey_as: str = typer.Option("colour", "--grey-as", help="grey images enter as 'colour' (R=G=B pseudo-colour, "
                                "for pc detectors) or 'grey' (h channel only)"),
    deadline_s: float = typer.Option(600.0, "--deadline-s", min=0.1, help="per-item deadline offline (s)"),
    plots: bool = typer.Option(False, "--plots", help="also write PNG plots to --out (needs matplotlib)"),
    write_item_threshold: Path | None = typer.Option(
        None, "--write-item-threshold", help="folder: write a copy of each evaluated scorer bundle there (as "
        "FOLDER/<bundle name>, replaced if present) with thresholds.item = this dataset's 95%-benign item "
        "threshold; run it on validation items, never on the test set"),
    bundle_version: str | None = typer.Option(None, "--bundle-version", help="with --write-item-threshold: the "
                                              "copies' version; {version} stands for each bundle's own (default "
                                              "{version}-op.<date>)"),
) -> None:
    """Evaluate the service's pipeline (same config, same bundles) on a labelled dataset.

    Prints seed-000-style tables (recall, FPR, accuracy, AUROC_M/AUROC_A at the bundles' thresholds and at the
    95%-benign threshold), detector COCO mAP/AR and per-threat-kind recall; UNSCREENED items count as alarms.

    Examples:
      edge sim generate --n 200 --seed 101 --threat-rate 0.5 --no-camera --out /data/bench
      edge eval /data/bench -c edge.yaml --out /tmp/eval --workers 2
      edge eval /data/bench -c edge.yaml --compare models/scorer-stfpm models/scorer-padim
      edge eval ../shared/realdata/xray/gdxray -c edge.yaml --detector-only
      edge eval /data/val -c edge.yaml --write-item-threshold /data/bundles-op
    """
    if scorers and not compare:
        typer.echo("extra arguments after DATA are scorer bundles: add --compare to compare them", err=True)
        raise typer.Exit(code=2)
    if compare and not scorers:
        typer.echo("--compare needs at least one scorer bundle after DATA", err=True)
        raise typer.Exit(code=2)
    if compare and detector_only:
        typer.echo("--compare and --detector-only exclude each other", err=True)
        raise typer.Exit(code=2)
    if write_item_threshold is not None and detector_only:
        typer.echo("--write-item-threshold needs a scorer: drop --detector-only", err=True)
        raise typer.Exit(code=2)
    if grey_as not in ("colour", "grey"):
        typer.echo(f"--grey-as {grey_as!r} is not valid; expected colour or grey", err=True)
        raise typer.Exit(code=2)
    kinds = {k.strip().lower() for k in threat_kinds.split(",") if k.strip()}
    groups = {g.strip() for g in exclude_groups.split(",") if g.strip()}
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.CRITICAL)  # per-item failures are in the report and items-K.jsonl
    try:
        dataset = read_dataset(data, layout, modality=modality, threat_kinds=kinds,
                               exclude_groups=groups).limited(limit)
    except EdgeError as exc:
        typer.echo(f"edge eval: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if not dataset.items:
        typer.echo(f"{data}: the dataset has no items", err=True)
        raise typer.Exit(code=1)
    try:
        base = RunSettings(config, None, detector_only, deadline_s, grey_as == "colour")
        variants = [RunSettings(config, s, False, deadline_s, grey_as == "colour") for s in scorers or []] \
            if compare else [base]
        reports: list[EvalReport] = []
        runs: list[tuple[Dataset, list[ItemOutcome]]] = []
        for n, settings in enumerate(variants):
            desc = f"edge eval {n + 1}/{len(variants)}" if len(variants) > 1 else "edge eval"
            report, outcomes = evaluate(dataset, settings, workers, desc)
            reports.append(report)
            runs.append((dataset, outcomes))
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=1) from None
    except (EdgeError, RuntimeError) as exc:
        typer.echo(f"edge eval: {exc}", err=True)
        raise typer.Exit(code=1) from None
    markdown = markdown_report(reports)
    typer.echo(markdown)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(report_json(reports), encoding="utf-8")
        (out / "eval.md").write_text(markdown, encoding="utf-8")
        for n, (ds, outcomes) in enumerate(runs):
            with (out / f"items-{n + 1}.jsonl").open("w", encoding="utf-8") as fh:
                for row in item_rows(ds, outcomes):
                    fh.write(json.dumps(row) + "\n")
        typer.echo(f"wrote {out / 'eval.json'}, {out / 'eval.md'} and {len(runs)} items-*.jsonl")
        if plots:
            from edge_tools.eval.plots import PlotsUnavailable, write_plots

            try:
                files = write_plots(reports, runs, out / "plots")
                typer.echo(f"wrote {len(files)} plots to {out / 'plots'}")
            except PlotsUnavailable as exc:
                typer.echo(f"plots skipped: {exc}", err=True)
    elif plots:
        typer.echo("--plots needs --out", err=True)
    if write_item_threshold is not None:
        _write_item_thresholds(reports, variants, write_item_threshold, bundle_version)
    for r in reports:
        if r.unscreened:
            typer.echo(f"{r.scorer or 'detector only'}: {r.unscreened} of {r.items} items UNSCREENED "
                       f"({', '.join(f'{k}: {v}' for k, v in r.unscreened_reasons.items())}); counted as alarms",
                       err=True)
