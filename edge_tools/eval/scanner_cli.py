"""Command-line options shared by the tools that run bundles over several virtual scanners.

Why a module of its own: ``edge_tools.eval.validation`` (choose between bundles) and ``edge_tools.eval.item_thresholds``
(set item thresholds) take the same scanners, items, detector and workers, and must refuse the same mistakes
before minutes of generating scanners: a seed that is not an integer, a seed given twice (its items would count
twice in the pooled figures), a benchmark scanner (``edge_tools.eval.scanners.BENCHMARK_SEEDS``), a bundle that does
not load.

Must not: run anything; it only reads and checks arguments.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from edge.bundles.loader import load_bundle
from edge.errors import EdgeError
from edge_tools.eval.scanners import benchmark_seeds_among, reference_bundles


@dataclass(frozen=True, slots=True)
class ScannerRun:
    """What to run: bundles over ``seeds`` scanners of ``n`` items each, with ``detector``, kept in ``work``."""

    bundles: list[Path]
    work: Path
    seeds: list[int]
    n: int
    detector: Path
    workers: int


def add_scanner_arguments(parser: argparse.ArgumentParser, work: Path, default_seeds: tuple[int, ...],
                          bundles_help: str, n_help: str) -> None:
    """The positional bundles and ``--work --seeds --n --detector --workers``."""
    parser.add_argument("bundles", type=Path, nargs="+", help=bundles_help)
    parser.add_argument("--work", type=Path, default=work, help="work folder (kept; reused)")
    parser.add_argument("--seeds", default=",".join(map(str, default_seeds)), help="scanner seeds, comma-separated")
    parser.add_argument("--n", type=int, default=200, help=n_help)
    parser.add_argument("--detector", type=Path, default=None, help="detector bundle (default: the reference one)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))


def scanner_run(parser: argparse.ArgumentParser, args: argparse.Namespace, purpose: str) -> ScannerRun:
    """The checked options of :func:`add_scanner_arguments`; ``parser.error`` (exit 2) names what is wrong.

    ``purpose`` completes "seed(s) … belong to the benchmark …: <purpose> on other scanners".
    """
    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected integers separated by commas")
    if len(set(seeds)) != len(seeds) or not seeds:
        parser.error(f"--seeds {args.seeds!r}: give each scanner once (a repeated one would count its items twice)")
    if args.n < 1:
        parser.error(f"--n {args.n}: at least one item per scanner")
    reserved = benchmark_seeds_among(seeds)
    if reserved:
        parser.error(f"{reserved}: {purpose} on other scanners")
    for path in args.bundles:
        try:
            load_bundle(path, verify_hashes=False)
        except EdgeError as exc:
            parser.error(f"{path}: {exc}")
    detector = args.detector or reference_bundles(Path(__file__).resolve().parents[2] / "models")[0]
    return ScannerRun(list(args.bundles), args.work, seeds, args.n, detector, args.workers)
