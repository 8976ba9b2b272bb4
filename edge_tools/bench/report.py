"""Bench record → target checks and Markdown tables (for ``docs/performance.md`` and the terminal).

Where it sits: the last step of ``edge bench`` and ``benchmarks/bench_pipeline.py``. Works on the JSON record
(``xray-edge/bench``), so a stored result can be re-rendered without re-measuring. PyTorch-eager entries
(``eager_runs``) and paired rounds (``paired``), added by ``benchmarks/``, are rendered when present.

Must not: import torch; measure anything.
"""

from __future__ import annotations

import statistics
from typing import Any

TARGET_SPEEDUP = 5.0
TARGET_P99_MS = 500.0
TARGET_RSS_MB = 1536.0
TARGET_READY_S = 5.0

Record = dict[str, Any]


def _best(configs: list[Record]) -> Record | None:
    return max(configs, key=lambda c: c["throughput"]["items_per_s"], default=None)


def eager_runs(result: Record) -> list[Record]:
    """The eager records of a result (older records carry a single ``eager``)."""
    runs: list[Record] = result.get("eager_runs") or ([result["eager"]] if result.get("eager") else [])
    return runs


def _speedup_targets(result: Record, configs: list[Record]) -> list[Record]:
    out: list[Record] = []
    best = _best(configs)
    for eager in eager_runs(result):
        if best is None:
            break
        e_tput = eager["throughput"]["items_per_s"]
        ratio = best["throughput"]["items_per_s"] / e_tput
        out.append({"target": f"items/s >= {TARGET_SPEEDUP:g}x PyTorch eager (t{eager['threads']})",
                    "measured": f"{ratio:.2f}x: best configuration {best['label']} "
                                f"{best['throughput']['items_per_s']:.2f} vs eager {e_tput:.2f} items/s "
                                "(separate moments, wall clock)",
                    "met": ratio >= TARGET_SPEEDUP})
    paired = result.get("paired")
    for comparison in (paired or {}).get("comparisons", []):
        wall, cpu = comparison["median_ratio_wall"], comparison["median_ratio_cpu"]
        out.append({"target": f"items/s >= {TARGET_SPEEDUP:g}x PyTorch eager, paired",
                    "measured": f"{wall:.2f}x wall clock, {cpu:.2f}x CPU time per item: {comparison['runtime']} vs "
                                f"{comparison['eager']} (median of {len(comparison['ratios_wall'])} back-to-back "
                                "rounds)",
                    "met": wall >= TARGET_SPEEDUP})
    return out


def targets(result: Record) -> list[Record]:
    """The issue's targets, each with what was measured and whether it is met."""
    configs: list[Record] = result.get("configs", [])
    out = _speedup_targets(result, configs)
    if configs:
        worst = max(configs, key=lambda c: c["latency"]["item_latency"]["p99_ms"])
        best_p99 = min(configs, key=lambda c: c["latency"]["item_latency"]["p99_ms"])
        within = sum(1 for c in configs if c["latency"]["item_latency"]["p99_ms"] <= TARGET_P99_MS)
        out.append({"target": f"p99 item latency <= {TARGET_P99_MS:g} ms",
                    "measured": f"{within} of {len(configs)} configurations; best {best_p99['label']} "
                                f"{best_p99['latency']['item_latency']['p99_ms']:.0f} ms, worst {worst['label']} "
                                f"{worst['latency']['item_latency']['p99_ms']:.0f} ms",
                    "met": best_p99["latency"]["item_latency"]["p99_ms"] <= TARGET_P99_MS})
        rss = max(configs, key=lambda c: c["rss_steady_max_mb"])
        out.append({"target": f"steady-state RSS <= {TARGET_RSS_MB:g} MiB",
                    "measured": f"max {rss['rss_steady_max_mb']:.0f} MiB ({rss['label']})",
                    "met": rss["rss_steady_max_mb"] <= TARGET_RSS_MB})
    cold = [c for c in result.get("cold_start", []) if not c["cached"]]
    if cold:
        slowest = max(max(c["ready_s"]) for c in cold)
        out.append({"target": f"cold start to READY <= {TARGET_READY_S:g} s",
                    "measured": f"median {cold[0]['median_s']:.2f} s, slowest {slowest:.2f} s (empty compile cache)",
                    "met": slowest <= TARGET_READY_S})
    return out


def paired_summary(runtime: str, eager: str, rounds: list[Record]) -> Record:
    """Ratios of one runtime member to one eager member over paired rounds (each round: same moment)."""
    wall = [r[runtime]["items_per_s"] / r[eager]["items_per_s"] for r in rounds]
    cpu = [r[eager]["cpu_ms_per_item"] / r[runtime]["cpu_ms_per_item"] for r in rounds]
    return {"runtime": runtime, "eager": eager, "ratios_wall": [round(x, 2) for x in wall],
            "ratios_cpu": [round(x, 2) for x in cpu], "median_ratio_wall": round(statistics.median(wall), 2),
            "median_ratio_cpu": round(statistics.median(cpu), 2)}


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _precisions(config: Record) -> str:
    return "/".join(m["precision"] for m in config["models"])


def _f(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def _sequential(config: Record) -> list[str]:
    seq = config.get("sequential")
    if seq is None:
        return ["-", "-"]
    return [_f(seq["items_per_s"], 2), _f(seq["cpu_ms_per_item"], 0)]


def _pipeline_table(result: Record) -> list[str]:
    lines = [
        _row(["pipeline", "precision det/scorer", "scorer batch", "threads", "workers", "items/s", "CPU ms/item",
              "sequential items/s", "sequential CPU ms/item", "item p50 ms", "item p95 ms", "item p99 ms",
              "RSS steady MiB", "models load+warm s", "load avg"]),
        _row(["---"] * 15),
    ]
    for e in eager_runs(result):
        lat = e["item_latency"]
        lines.append(_row(["**PyTorch eager** (sequential)", "fp32/fp32", e["scorer_batch"], e["threads"], 1,
                           _f(e["throughput"]["items_per_s"], 2), _f(e["throughput"]["cpu_ms_per_item"], 0),
                           _f(e["throughput"]["items_per_s"], 2), _f(e["throughput"]["cpu_ms_per_item"], 0),
                           _f(lat["p50_ms"], 0), _f(lat["p95_ms"], 0), _f(lat["p99_ms"], 0),
                           _f(e["rss_steady_max_mb"], 0), _f(e["models_load_s"], 2), e["throughput"]["load_avg"][0]]))
    for c in result["configs"]:
        lat = c["latency"]["item_latency"]
        load_warm = sum(m["load_s"] + m["warm_s"] for m in c["models"])
        lines.append(_row([c["backend"], _precisions(c), c["scorer_batch"], c["threads"], c.get("workers", 2),
                           _f(c["throughput"]["items_per_s"], 2), _f(c["throughput"]["cpu_ms_per_item"], 0),
                           *_sequential(c), _f(lat["p50_ms"], 0), _f(lat["p95_ms"], 0), _f(lat["p99_ms"], 0),
                           _f(c["rss_steady_max_mb"], 0), _f(load_warm, 2), c["throughput"]["load_avg"][0]]))
    runs = result["options"].get("throughput_runs", 1)
    lines += ["", f"Items/s and CPU ms/item: best of {runs} throughput passes (items enter as fast as the pipeline "
              "takes them); sequential: the same stages called back to back in one thread, no pipeline. Item "
              "latency: hand-over to decision with items arriving at "
              f"{int(100 * result['options']['latency_load'])}% of that configuration's measured throughput; the "
              "eager pipeline is sequential, its item latency is its service time per item."]
    return lines


def _stage_table(result: Record) -> list[str]:
    stage_names = list(result["configs"][0]["latency"]["stages"]) if result["configs"] else []
    lines = [_row(["configuration", *stage_names]), _row(["---"] * (1 + len(stage_names)))]
    named = [(f"pytorch-eager/t{e['threads']}", e["stages"]) for e in eager_runs(result)]
    named += [(c["label"], c["latency"]["stages"]) for c in result["configs"]]
    for label, st in named:
        lines.append(_row([label, *(f"{_f(st[s]['p50_ms'])} / {_f(st[s]['p99_ms'])}" if s in st else "-"
                                    for s in stage_names)]))
    return lines


def _model_table(result: Record) -> list[str]:
    lines = [_row(["model", "runtime", "threads", "precision", "GFLOP/input", "batch", "median ms", "min ms",
                   "achieved GFLOP/s", "% of peak", "load s", "warm-up s"]), _row(["---"] * 12)]
    rows = [(m, e["threads"]) for e in eager_runs(result) for m in e["models"]]
    rows += [(m, c["threads"]) for c in result["configs"] for m in c["models"]]
    seen: set[tuple[str, str, str, int, int]] = set()
    for m, threads in rows:
        key = (m["name"], m["backend"], m["precision"], m["batch"], threads)
        if key in seen:
            continue
        seen.add(key)
        lines.append(_row([m["name"], m["backend"], threads, m["precision"], _f(m["gflops_per_input"], 3),
                           m["batch"], _f(m["infer_median_ms"], 2), _f(m["infer_min_ms"], 2),
                           _f(m["achieved_gflops"]), _f(m["pct_of_peak"]), _f(m["load_s"], 2), _f(m["warm_s"], 3)]))
    return lines


def _paired_table(paired: Record) -> list[str]:
    members: list[str] = list(paired["rounds"][0])
    lines = [_row(["round", *(f"{m} items/s (CPU ms/item, load)" for m in members)]),
             _row(["---"] * (1 + len(members)))]
    for index, r in enumerate(paired["rounds"], 1):
        lines.append(_row([index, *(f"{_f(r[m]['items_per_s'], 2)} ({_f(r[m]['cpu_ms_per_item'], 0)}, "
                                    f"{r[m]['load_avg'][0]})" for m in members)]))
    return lines


def render_markdown(result: Record) -> str:
    """Tables: pipeline per configuration, stages, models (roofline), cold start, paired rounds, targets."""
    peak = result["peak"]
    items = result["items"]
    lines = [
        f"Measured {result['created_utc']} on {result['machine']['cpu'] or 'unknown CPU'} "
        f"({result['machine']['affinity_cpus']} CPUs usable); {items['n']} virtual-scanner items "
        f"(seed {items['seed']}, {items['preset']}, threat rate {items['threat_rate']}, {items['channels']} "
        f"channels, {items['lines_mean']:.0f} lines on average). Peak fp32 matmul on {peak['threads']} threads: "
        f"{peak['gflops']} GFLOP/s best, {peak['median_gflops']} median. Load average at the end: "
        f"{result['load_avg_end'][0]} (the 2 cores were shared with other work).",
        "", "### Pipeline (end to end)", "", *_pipeline_table(result),
        "", "### Stages (p50 / p99 ms per item, latency pass)", "", *_stage_table(result),
        "", "### Models alone (roofline)", "", *_model_table(result),
    ]
    if result.get("cold_start"):
        lines += ["", "### Cold start to READY=1", "",
                  _row(["backend", "compile cache", "runs s", "median s", "load avg"]), _row(["---"] * 5)]
        for cs in result["cold_start"]:
            lines.append(_row([f"{cs['backend']}/{cs['precision']}", "warm" if cs["cached"] else "empty",
                               ", ".join(_f(t, 2) for t in cs["ready_s"]), _f(cs["median_s"], 2),
                               cs["load_avg"][0]]))
    if result.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"{s['backend']}/{s['precision']} ({s['why']})"
                                                  for s in result["skipped"]) + "."]
    paired = result.get("paired")
    if paired is not None and paired.get("rounds"):
        lines += ["", "### Paired rounds (each round runs its members back to back, so they share one load)", "",
                  *_paired_table(paired)]
    checks = targets(result)
    if checks:
        lines += ["", "### Targets", "", _row(["target", "measured", "met"]), _row(["---"] * 3)]
        lines += [_row([t["target"], t["measured"], "yes" if t["met"] else "**no**"]) for t in checks]
    return "\n".join(lines) + "\n"
