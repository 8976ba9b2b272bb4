"""The combined operating point: one item threshold per signal, so that the *union* meets the false-alarm target.

Why: the service alarms on three signals at once (issue 32): a detection of a detector threat class at its class
threshold, the supervised classifier, the benign-only anomaly scorer. Each bundle's own ``thresholds.item`` lets
5% of benign items alarm; three of them side by side let up to ~15% alarm. This module measures every signal of
every item through the service's own pipeline (``collect``), then picks the classifier's and the scorer's item
thresholds on the benign items of *validation* scanners so that the share of benign items on which any signal
alarms is at most the target (``choose``), and finally reads the benchmark scanners with that point (``table``).

How the budget is split: the detector's threat classes keep their thresholds (the bundle's, set on validation
data, or ``models.threat_classes``); the classifier gets a share ``s`` of the remaining per-signal benign rate and
the scorer ``1 - s``, scaled up together until the union reaches the target. ``s`` is the one that alarms on most
threat items of validation scanners when such items are given, else 0.5. Never the benchmark's items: every step
that chooses refuses items of ``edge_tools.eval.scanners.BENCHMARK_SEEDS``.

Combined score (for AUROC_M): each signal's item score is mapped to its benign-validation CDF (the share of benign
validation items scoring lower), and the item's score is the highest of them; thresholding it at one level is the
equal-share rule, so its ROC is the combination's.

Run (signals are kept as JSON lines, one file per scanner and configuration)::

    python -m edge_tools.fit.combined collect --work /tmp/w32/val --seeds 102,301,302,303 --n 100 --benign \\
        --classifier models/classifier-threat --scorer models/scorer-stfpm --out /tmp/w32/signals
    python -m edge_tools.fit.combined choose /tmp/w32/signals/val-*.jsonl --threats /tmp/w32/signals/vt-*.jsonl

Must not: train anything, or choose anything on a benchmark scanner.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_tools.eval import scanners
from edge_tools.eval.scanners import benchmark_seeds_among

SIGNALS = ("classifier", "anomaly")
"""The crop-model signals whose item thresholds are chosen here (threat classes keep theirs)."""


@dataclass(frozen=True, slots=True)
class ItemSignals:
    """Every signal of one item: the highest score of each, over its objects (-inf: no object scored).

    ``known`` holds, per detector label, the highest detector score among that label's detections, so any
    threat-class threshold can be applied afterwards. ``kinds`` are the threat kinds the item really holds.
    """

    key: str
    seed: int
    threat: bool
    kinds: tuple[str, ...]
    unscreened: bool
    known: Mapping[str, float]
    classifier: float
    anomaly: float

    def score(self, signal: str) -> float:
        return float(getattr(self, signal))


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Item thresholds of a combination and what they do on the benign validation items."""

    classifier: float | None
    anomaly: float | None
    known: Mapping[str, float]
    target: float
    share: float
    benign_items: int
    benign_fpr: float
    signal_fpr: Mapping[str, float] = field(default_factory=dict)
    threat_recall: float | None = None
    seeds: tuple[int, ...] = ()


class BenchmarkItems(ValueError):
    """A choice was asked of items from a benchmark scanner."""


def refuse_benchmark(items: Sequence[ItemSignals], what: str) -> None:
    """Raise :class:`BenchmarkItems` when any of ``items`` comes from a benchmark scanner."""
    reserved = benchmark_seeds_among(sorted({i.seed for i in items}))
    if reserved:
        raise BenchmarkItems(f"{what}: {reserved}; the operating point is chosen on validation scanners only")


# ---------------------------------------------------------------- alarms and thresholds
def known_alarms(items: Sequence[ItemSignals], known: Mapping[str, float]) -> NDArray[np.bool_]:
    """Items on which a detection of a threat class reaches its class threshold."""
    return np.asarray([any(i.known.get(c, -math.inf) >= t for c, t in known.items()) for i in items], bool)


def scores(items: Sequence[ItemSignals], signal: str) -> NDArray[np.float64]:
    return np.asarray([i.score(signal) for i in items], np.float64)


def alarms(items: Sequence[ItemSignals], point: OperatingPoint) -> NDArray[np.bool_]:
    """The service's decision for each item at ``point`` (UNSCREENED counts as an alarm)."""
    out = known_alarms(items, point.known) | np.asarray([i.unscreened for i in items], bool)
    for signal in SIGNALS:
        threshold = getattr(point, signal)
        if threshold is not None:
            out |= scores(items, signal) >= threshold
    return out


def rate_threshold(benign: NDArray[np.float64], rate: float) -> float:
    """The lowest threshold at which at most ``rate`` of ``benign`` reach it (score >= threshold alarms)."""
    x = np.sort(np.asarray(benign, np.float64))[::-1]
    allowed = math.floor(rate * len(x) + 1e-9)
    if allowed >= len(x):
        return -math.inf
    return float(np.nextafter(x[allowed], math.inf))


def _bounded(threshold: float) -> float:
    """A threshold the config accepts ([0, 1]; scores of these bundles are probabilities or normalised)."""
    return float(min(1.0, max(0.0, threshold)))


def point_at(benign: Sequence[ItemSignals], known: Mapping[str, float], present: Sequence[str], share: float,
             level: float, target: float) -> OperatingPoint:
    """Thresholds giving each present signal its share of a per-signal benign rate ``level``."""
    shares = {"classifier": share, "anomaly": 1.0 - share} if len(present) == 2 else {s: 1.0 for s in present}
    thresholds = {s: _bounded(rate_threshold(scores(benign, s), level * shares[s])) for s in present}
    point = OperatingPoint(thresholds.get("classifier"), thresholds.get("anomaly"), dict(known), target, share,
                           len(benign), 0.0)
    fpr = float(alarms(benign, point).mean()) if benign else 0.0
    per = {s: float((scores(benign, s) >= t).mean()) for s, t in thresholds.items()}
    per["known"] = float(known_alarms(benign, known).mean()) if benign else 0.0
    return OperatingPoint(point.classifier, point.anomaly, dict(known), target, share, len(benign), fpr, per,
                          seeds=tuple(sorted({i.seed for i in benign})))


def choose(benign: Sequence[ItemSignals], known: Mapping[str, float], present: Sequence[str],
           target: float = 0.05, threats: Sequence[ItemSignals] = (),
           shares: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))) -> OperatingPoint:
    """The operating point whose benign-item alarm rate (any signal) is at most ``target`` on ``benign``.

    For each share the per-signal rate is raised by bisection until the union reaches the target; of the
    shares tried, the one with the highest recall on ``threats`` (validation threat items) wins, or 0.5 when
    none are given.

    Raises:
        BenchmarkItems: an item of ``benign`` or ``threats`` comes from a benchmark scanner.
        ValueError: ``benign`` holds a threat item, or the threat classes alone exceed the target.
    """
    refuse_benchmark(benign, "benign items")
    refuse_benchmark(threats, "threat items")
    if any(i.threat for i in benign):
        raise ValueError("the benign items hold threats: the operating point is set on benign items")
    base = float(known_alarms(benign, known).mean()) if benign else 0.0
    if base > target:
        raise ValueError(f"the threat classes alone alarm on {base:.1%} of benign items, above the target "
                         f"{target:.1%}: raise their thresholds (models.threat_classes) first")
    candidates = list(shares) if len(present) == 2 and (threats or len(shares) == 1) else [0.5]
    best: OperatingPoint | None = None
    for share in candidates:
        low, high = 0.0, 1.0
        for _ in range(40):
            mid = (low + high) / 2
            if point_at(benign, known, present, share, mid, target).benign_fpr <= target:
                low = mid
            else:
                high = mid
        point = point_at(benign, known, present, share, low, target)
        if threats:
            recall = float(alarms([t for t in threats if t.threat], point).mean())
            point = OperatingPoint(point.classifier, point.anomaly, point.known, target, share, point.benign_items,
                                   point.benign_fpr, point.signal_fpr, recall, point.seeds)
        if best is None or (point.threat_recall or 0.0) > (best.threat_recall or 0.0):
            best = point
    assert best is not None
    return best


def combined_scores(items: Sequence[ItemSignals], benign: Sequence[ItemSignals], known: Mapping[str, float],
                    present: Sequence[str]) -> NDArray[np.float64]:
    """Each item's highest benign-validation CDF over its signals (the combination's bag score; +inf when
    UNSCREENED). A threat class counts as a signal whose score is its detection score over its threshold."""
    refuse_benchmark(benign, "the benign reference")

    def known_ratio(batch: Sequence[ItemSignals]) -> NDArray[np.float64]:
        return np.asarray([max((i.known.get(c, -math.inf) / t for c, t in known.items() if t > 0),
                               default=-math.inf) for i in batch], np.float64)

    columns: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = [
        (scores(items, s), np.sort(scores(benign, s))) for s in present]
    if known:
        columns.append((known_ratio(items), np.sort(known_ratio(benign))))
    out = np.full(len(items), -math.inf)
    for values, reference in columns:
        cdf = np.searchsorted(reference, values, side="left") / max(1, len(reference))
        cdf = np.where(np.isneginf(values), -1.0, cdf + 1e-6 * np.tanh(np.nan_to_num(values)))  # ties: by score
        out = np.maximum(out, cdf)
    out[np.asarray([i.unscreened for i in items], bool)] = math.inf
    return out


# ---------------------------------------------------------------- collecting signals through the pipeline
def signals_of(key: str, seed: int, truth: object, decision: object) -> ItemSignals:
    """One decision reduced to its signals (``truth`` an ``ItemTruth``, ``decision`` a ``Decision``)."""
    from edge.records import Decision, Verdict
    from edge_tools.eval.records import ItemTruth

    assert isinstance(decision, Decision) and isinstance(truth, ItemTruth)
    known: dict[str, float] = {}
    for o in decision.objects:
        if o.label is not None:
            known[o.label] = max(known.get(o.label, -math.inf), float(o.detector_score))
    cls = [o.classifier_score for o in decision.objects if o.classifier_score is not None]
    ano = [o.anomaly_score for o in decision.objects if o.anomaly_score is not None]
    return ItemSignals(key, seed, bool(truth.threat), tuple(sorted(set(truth.threat_kinds))),
                       decision.verdict is Verdict.UNSCREENED, known, max(cls, default=-math.inf),
                       max(ano, default=-math.inf))


def write_config(path: Path, scanner_dir: Path, detector: Path, classifier: Path | None, scorer: Path | None,
                 state: Path) -> Path:
    """A service config naming the three slots, with the scanner's calibrations (``edge eval``'s own config)."""
    return scanners.write_config(path, detector, scorer, scanner_dir / "flatfield.npz", scanner_dir / "energy.yaml",
                                 state, classifier=classifier)


def collect(config: Path, data: Path, seed: int) -> list[ItemSignals]:
    """Every item of the dataset at ``data`` through the service's pipeline (config ``config``), in one process."""
    from edge_tools.eval.datasets import read_dataset
    from edge_tools.eval.runner import EvalRuntime, RunSettings

    dataset = read_dataset(data)
    runtime = EvalRuntime(RunSettings(config))  # edge eval's runtime: a 600 s deadline, grey as colour
    try:
        by_key = runtime.decisions(dataset.items)
    finally:
        runtime.close()
    return [signals_of(item.key, seed, item.truth, by_key[item.key]) for item in dataset.items]


def save(items: Sequence[ItemSignals], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i in items:
            row = asdict(i)
            row["known"] = dict(i.known)
            fh.write(json.dumps(row, allow_nan=True) + "\n")


def load(paths: Sequence[Path]) -> list[ItemSignals]:
    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out.append(ItemSignals(r["key"], int(r["seed"]), bool(r["threat"]), tuple(r["kinds"]),
                                   bool(r["unscreened"]), dict(r["known"]), float(r["classifier"]),
                                   float(r["anomaly"])))
    return out


def present_signals(items: Sequence[ItemSignals]) -> list[str]:
    """The crop signals these items were collected with (a signal no item has was not configured)."""
    return [s for s in SIGNALS if np.isfinite(scores(items, s)).any()]


@dataclass(frozen=True, slots=True)
class ClassThreshold:
    """A detector class's threat threshold and what it does on validation items."""

    name: str
    threshold: float
    benign_rate: float
    recall: float | None
    threat_items: int


def class_threshold(benign: Sequence[ItemSignals], threats: Sequence[ItemSignals], name: str, kinds: Sequence[str],
                    budget: float) -> ClassThreshold:
    """The lowest detector score at which detections of ``name`` alarm on at most ``budget`` of the benign
    validation items, and the share of validation threat items holding one of ``kinds`` that it catches.

    Raises:
        BenchmarkItems: an item comes from a benchmark scanner.
    """
    refuse_benchmark(benign, "benign items")
    refuse_benchmark(threats, "threat items")
    values = np.asarray([i.known.get(name, -math.inf) for i in benign], np.float64)
    threshold = _bounded(rate_threshold(values, budget))
    rate = float((values >= threshold).mean()) if len(values) else 0.0
    holding = [i for i in threats if set(i.kinds) & set(kinds)]
    recall = (float(np.mean([i.known.get(name, -math.inf) >= threshold for i in holding])) if holding else None)
    return ClassThreshold(name, threshold, rate, recall, len(holding))


@dataclass(frozen=True, slots=True)
class Row:
    """One method on the pooled benchmark: point estimates and 95% bootstrap intervals (resampled over items)."""

    method: str
    recall_seen: tuple[float, float, float]
    recall_unseen: tuple[float, float, float]
    fpr: tuple[float, float, float]
    auroc_m: tuple[float, float, float]
    seen_items: int
    unseen_items: int
    benign_items: int


def benchmark_row(method: str, items: Sequence[ItemSignals], alarmed: NDArray[np.bool_], score: NDArray[np.float64],
                  unseen: Sequence[str], resamples: int = 2000, seed: int = 0) -> Row:
    """Recall on items whose threats are all of seen kinds, on items holding only unseen kinds, FPR and AUROC_M
    (all threat items against all benign ones), pooled, with bootstrap intervals over items. An item holding
    both seen and unseen kinds counts in neither recall (it is in the AUROC)."""
    from edge_tools.eval.metrics import auroc

    y = np.asarray([i.threat for i in items], bool)
    held = set(unseen)
    only_unseen = np.asarray([i.threat and bool(i.kinds) and set(i.kinds) <= held for i in items], bool)
    only_seen = np.asarray([i.threat and not (set(i.kinds) & held) for i in items], bool)
    rng = np.random.default_rng(seed)

    def figures(idx: NDArray[np.intp]) -> tuple[float, float, float, float]:
        a, s_, u, yy = alarmed[idx], only_seen[idx], only_unseen[idx], y[idx]
        return (float(a[s_].mean()) if s_.any() else math.nan, float(a[u].mean()) if u.any() else math.nan,
                float(a[~yy].mean()) if (~yy).any() else math.nan, auroc(score[idx], yy) or math.nan)

    point = figures(np.arange(len(items)))
    boots = np.asarray([figures(rng.integers(0, len(items), len(items))) for _ in range(resamples)])

    def cell(k: int) -> tuple[float, float, float]:
        col = boots[:, k][np.isfinite(boots[:, k])]
        return point[k], float(np.quantile(col, 0.025)), float(np.quantile(col, 0.975))

    return Row(method, cell(0), cell(1), cell(2), cell(3), int(only_seen.sum()), int(only_unseen.sum()),
               int((~y).sum()))


def markdown_rows(rows: Sequence[Row]) -> str:
    def pct(c: tuple[float, float, float]) -> str:
        return f"{100 * c[0]:.1f} ({100 * c[1]:.1f}–{100 * c[2]:.1f})"

    lines = ["| Method | ↑ Recall, seen kinds (%) | ↑ Recall, unseen kinds (%) | ↓ FPR (%) | ↑ AUROC<sub>M</sub> |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {pct(r.recall_seen)} | {pct(r.recall_unseen)} | {pct(r.fpr)} | "
                     f"{r.auroc_m[0]:.3f} ({r.auroc_m[1]:.3f}–{r.auroc_m[2]:.3f}) |")
    return "\n".join(lines)


def benchmark_table(val: Sequence[ItemSignals], val_threats: Sequence[ItemSignals], bench: Sequence[ItemSignals],
                    unseen: Sequence[str], known: Mapping[str, float], label: str = "", target: float = 0.05) -> str:
    """Classifier alone, scorer alone and their combination (with ``known`` threat classes) on ``bench``, every
    threshold chosen on ``val`` (benign) and the seen-kind items of ``val_threats``."""
    seen_threats = [i for i in val_threats if i.threat and not set(i.kinds) & set(unseen)]
    present = present_signals(val)
    rows = []
    prefix = f"{label} " if label else ""
    for signal in present:
        point = choose(val, {}, [signal], target)
        rows.append(benchmark_row(f"{prefix}{signal} alone (thr {getattr(point, signal):.4f})", bench,
                                  alarms(bench, point), scores(bench, signal), unseen))
    combined = combined_scores(bench, val, known, present)
    for how, point in (("classifier's share chosen on seen-kind validation threats",
                        choose(val, known, present, target, seen_threats)),
                       ("equal shares", choose(val, known, present, target, (), (0.5,)))):
        parts = [f"{s} {getattr(point, s):.4f}" for s in present] + [f"known:{c} {t:.3f}" for c, t in known.items()]
        rows.append(benchmark_row(f"{prefix}combination, {how} (share {point.share:.2f}: {', '.join(parts)}; "
                                  f"validation FPR {100 * point.benign_fpr:.1f}%)", bench, alarms(bench, point),
                                  combined, unseen))
    r = rows[0]
    return (f"{len(bench)} benchmark items: {r.seen_items} with threats of seen kinds only, {r.unseen_items} with "
            f"unseen kinds only ({', '.join(unseen)}), {r.benign_items} benign\n\n" + markdown_rows(rows))


def write_section(path: Path, body: str, append: bool = False) -> None:
    """Put ``body`` in the unseen-threat section of ``path`` (between the markers ``edge_tools.eval.reference``
    keeps when it regenerates the rest), replacing it, or adding to it with ``append``."""
    from edge_tools.eval.reference import UNSEEN_BEGIN, UNSEEN_END

    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    start, end = text.find(UNSEEN_BEGIN), text.find(UNSEEN_END)
    if start >= 0 and end > start:
        old = text[start + len(UNSEEN_BEGIN):end].strip("\n")
        inner = (old + "\n\n" + body) if append and old else body
        text = text[:start] + UNSEEN_BEGIN + "\n" + inner + "\n" + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + UNSEEN_BEGIN + "\n" + body + "\n" + UNSEEN_END + "\n"
    path.write_text(text, encoding="utf-8")


def snippet(point: OperatingPoint, classifier: str | None, scorer: str | None) -> str:
    """The ``models:`` lines that put ``point`` in service."""
    lines = ["models:"]
    for slot, bundle, threshold in (("classifier", classifier, point.classifier), ("scorer", scorer, point.anomaly)):
        if threshold is not None:
            lines += [f"  {slot}:", f"    bundle: {bundle or '<bundle>'}", f"    threshold: {threshold:.6g}"]
    if point.known:
        lines.append("  threat_classes: {" + ", ".join(f"{c}: {t:g}" for c, t in point.known.items()) + "}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Signals of every item, and the combination's operating point.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run the pipeline over scanners (edge_tools.eval.scanners layout)")
    c.add_argument("--work", type=Path, required=True, help="folder of seed-<N>/ scanners (generated if missing)")
    c.add_argument("--seeds", required=True)
    c.add_argument("--n", type=int, default=100)
    c.add_argument("--threat-rate", type=float, default=0.5)
    c.add_argument("--detector", type=Path, default=Path("models/detector-classes"))
    c.add_argument("--classifier", type=Path, default=None)
    c.add_argument("--scorer", type=Path, default=None)
    c.add_argument("--out", type=Path, required=True, help="JSON-lines file per seed: <out>-<seed>.jsonl")
    o = sub.add_parser("choose", help="the operating point from validation signals (never a benchmark scanner)")
    o.add_argument("benign", type=Path, nargs="+", help="signals of benign validation items")
    o.add_argument("--threats", type=Path, nargs="*", default=[], help="signals of validation threat items")
    o.add_argument("--target", type=float, default=0.05)
    o.add_argument("--known", default="", help="threat classes, e.g. cutter=0.62 (default: none)")
    o.add_argument("--classifier-bundle", default=None)
    o.add_argument("--scorer-bundle", default=None)
    o.add_argument("--json", type=Path, default=None)
    o.add_argument("--share", type=float, default=None, help="the classifier's share of the per-signal budget "
                                                              "(default: the best on --threats, else 0.5)")
    t = sub.add_parser("threat-classes", help="a detector threat class's threshold from validation signals, "
                                              "written into a copy of the detector bundle")
    t.add_argument("benign", type=Path, nargs="+")
    t.add_argument("--threats", type=Path, nargs="*", default=[])
    t.add_argument("--name", default="cutter", help="detector class")
    t.add_argument("--kinds", default="kitchen_knife,folding_knife,dagger,utility_knife",
                   help="virtual-scanner threat kinds of that class (recall is measured on them)")
    t.add_argument("--budget", type=float, default=0.01, help="share of benign items it may alarm on")
    t.add_argument("--detector", type=Path, default=None, help="detector bundle to copy with threat_classes")
    t.add_argument("--out", type=Path, default=None, help="folder of the copy (may be the bundle's own)")
    t.add_argument("--version", default=None)
    b = sub.add_parser("table", help="the unseen-threat table on the benchmark scanners, thresholds from validation")
    b.add_argument("--val", type=Path, nargs="+", required=True, help="benign validation signals")
    b.add_argument("--threats", type=Path, nargs="*", default=[], help="validation threat signals (their items of "
                                                                       "unseen kinds are not used)")
    b.add_argument("--bench", type=Path, nargs="+", required=True, help="benchmark signals (read, never chosen on)")
    b.add_argument("--unseen", default="spring,spring_pin,trigger_assembly")
    b.add_argument("--known", default="")
    b.add_argument("--label", default="")
    b.add_argument("--target", type=float, default=0.05)
    b.add_argument("--results", type=Path, default=None, help="also put the table, with --title and --intro, in this "
                                                              "file's unseen-threat section (docs/results.md)")
    b.add_argument("--title", default="")
    b.add_argument("--intro", type=Path, default=None, help="Markdown put before the table (the section's text)")
    b.add_argument("--append", action="store_true", help="add to the section instead of replacing it")
    args = parser.parse_args(argv)
    if args.command == "table":
        table = benchmark_table(load(args.val), load(args.threats), load(args.bench), args.unseen.split(","),
                                {k: float(v) for k, v in (p.split("=") for p in args.known.split(",") if p)},
                                args.label, args.target)
        print(table)
        if args.results is not None:
            intro = args.intro.read_text(encoding="utf-8").strip() + "\n\n" if args.intro is not None else ""
            write_section(args.results, (f"{args.title}\n\n" if args.title else "") + intro + table, args.append)
        return
    if args.command == "threat-classes":
        ct = class_threshold(load(args.benign), load(args.threats), args.name, args.kinds.split(","), args.budget)
        print(json.dumps(asdict(ct), indent=1))
        if args.detector is not None and args.out is not None:
            from edge.bundles.loader import load_bundle
            from edge.bundles.writer import rewrite_manifest

            bundle = load_bundle(args.detector)
            m = bundle.manifest
            how = (f"[threat_classes {args.name}: {ct.threshold:.3g}, the detector score at which {ct.benign_rate:.1%}"
                   f" of {len(load(args.benign))} benign validation items alarm (budget {args.budget:.0%}); recall "
                   f"{'n/a' if ct.recall is None else f'{ct.recall:.1%}'} of {ct.threat_items} validation items "
                   f"holding {args.kinds}; edge_tools.fit.combined threat-classes] ")
            out = rewrite_manifest(bundle, args.out, thresholds=m.thresholds, version=args.version or m.version,
                                   notes=how + m.notes, overwrite=True,
                                   threat_classes={**m.threat_classes, args.name: ct.threshold})
            print(f"wrote {out.root}: threat_classes {dict(out.manifest.threat_classes)}")
        return
    if args.command == "collect":
        from edge_tools.eval.scanners import prepare_scanner

        for seed in [int(s) for s in args.seeds.split(",")]:
            folder = args.work / f"seed-{seed}"
            scanner = prepare_scanner(seed, args.n, folder, args.detector, None, 1, args.threat_rate)
            config = write_config(folder / "combined.yaml", folder, args.detector, args.classifier, args.scorer,
                                  folder / "state")
            started = time.monotonic()
            items = collect(config, scanner.data, seed)
            save(items, Path(f"{args.out}-{seed}.jsonl"))
            print(f"seed {seed}: {len(items)} items in {time.monotonic() - started:.0f} s", flush=True)
        return
    benign = load(args.benign)
    threats = load(args.threats)
    known = {k: float(v) for k, v in (p.split("=") for p in args.known.split(",") if p)}
    try:
        shares = (args.share,) if args.share is not None else tuple(np.round(np.linspace(0.0, 1.0, 21), 2))
        point = choose(benign, known, present_signals(benign), args.target, threats if args.share is None else (),
                       shares)
    except (BenchmarkItems, ValueError) as exc:
        parser.error(str(exc))
    print(json.dumps(asdict(point), indent=1, default=float))
    print(snippet(point, args.classifier_bundle, args.scorer_bundle))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(point), indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
