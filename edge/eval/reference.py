"""Regenerate ``docs/results.md``: the reference bundles on a virtual-scanner benchmark and on the real images.

Run::

    .venv/bin/python -m edge.eval.reference --work /tmp/xray-bench --n 200

Steps: generate the benchmark set with the virtual scanner (seed 101, threat rate 0.5, parcels; the reference
models were trained on scanner/item seed 7, so no item is shared) unless ``--work`` already holds it; calibrate
that scanner as a commissioning engineer would (flat-field from its dark/air lines, effective Z from its step
wedge); write a service config naming the detector and the first scorer in ``--models``; run ``edge eval
--compare`` over every scorer/classifier bundle found there; run the detector alone on the real GDXray and SIXray
images; write the Markdown. Must not: train anything, or copy third-party images anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

from edge.eval.cli import evaluate
from edge.eval.datasets import read_dataset
from edge.eval.report import EvalReport, markdown_report
from edge.eval.runner import RunSettings

REPO = Path(__file__).resolve().parents[2]
REALDATA = REPO.parent / "shared" / "realdata" / "xray"
BENCH_SEED = 101
BENCH_THREAT_RATE = 0.5


def reference_bundles(models: Path) -> tuple[Path, list[Path]]:
    """The detector (``detector-agnostic`` if present) and every scorer/classifier bundle under ``models``."""
    from edge.bundles.loader import load_bundle

    detectors: list[Path] = []
    scorers: list[Path] = []
    for folder in sorted(p for p in models.iterdir() if (p / "bundle.yaml").is_file()):
        role = str(load_bundle(folder, verify_hashes=False).role)
        (detectors if role == "detector" else scorers).append(folder)
    if not detectors:
        raise SystemExit(f"no detector bundle under {models}")
    preferred = [d for d in detectors if d.name == "detector-agnostic"]
    return (preferred or detectors)[0], scorers


def calibrate_scanner(seed: int, out: Path) -> tuple[Path, Path]:
    """Flat-field and effective-Z calibration of virtual scanner ``seed`` (what ``edge calibrate flatfield|energy
    --from-sim --seed`` write)."""
    from calib.energy import DEFAULT_FIT_MATERIALS, calibrate_from_sim, save_energy_calibration
    from calib.flatfield import capture_from_sim, compute_flatfield, save_flatfield
    from sim.wedge import DEFAULT_WEDGE_MATERIALS

    flat, energy = out / "flatfield.npz", out / "energy.yaml"
    if not flat.is_file():
        dark, air = capture_from_sim(seed, 256)
        save_flatfield(compute_flatfield(dark, air, f"sim seed={seed}"), flat, (256, 256))
    if not energy.is_file():
        materials = list(dict.fromkeys([*DEFAULT_WEDGE_MATERIALS, *DEFAULT_FIT_MATERIALS]))
        cal, report = calibrate_from_sim(seed, materials, DEFAULT_FIT_MATERIALS)
        save_energy_calibration(cal, energy, report)
    return flat, energy


def write_config(path: Path, detector: Path, scorer: Path | None, flat: Path, energy: Path, state: Path) -> Path:
    """A service config for offline evaluation (no MQTT; sim source named only because a source is required)."""
    scorer_line = f"  scorer: {scorer}\n" if scorer is not None else ""
    path.write_text(f"""site:
  site_id: benchmark
  scanner_id: bench
condition:
  flatfield_file: {flat}
  energy_file: {energy}
models:
  detector: {detector}
{scorer_line}  backend: openvino
  threads: 1
decide:
  deadline_s: 30
audit:
  directory: {state / "audit"}
mqtt:
  enabled: false
  outbox:
    path: {state / "outbox.sqlite3"}
service:
  status_file: {state / "status.json"}
""", encoding="utf-8")
    return path


def real_table(reports: list[tuple[str, EvalReport]]) -> str:
    """Detector recall and COCO figures on the real images, one row per source."""
    lines = ["| Source | Images | Boxes | Detections | Recall@IoU0.5 (%) | mAP50 | AR@100 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in reports:
        d = r.detector_metrics
        rec = "–" if d.recall50 is None else f"{100 * d.recall50:.1f}"
        m50 = "–" if d.agnostic.map50 is None else f"{d.agnostic.map50:.3f}"
        ar = d.agnostic.ar.get(100)
        lines.append(f"| {name} | {d.images} | {d.gt_boxes} | {d.detections} | {rec} | {m50} | "
                     f"{'–' if ar is None else f'{ar:.3f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate docs/results.md from the reference bundles.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/xray-bench"), help="work folder (kept; reused)")
    parser.add_argument("--n", type=int, default=200, help="benchmark items")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="folder of reference bundles")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    args = parser.parse_args(argv)
    from sim.dataset import GenerateConfig, generate

    work: Path = args.work
    data = work / f"sim-{BENCH_SEED}-{args.n}"
    if not (data / "annotations.json").is_file():
        generate(GenerateConfig(n=args.n, seed=BENCH_SEED, threat_rate=BENCH_THREAT_RATE, camera=False,
                                workers=args.workers), data)
    flat, energy = calibrate_scanner(BENCH_SEED, work)
    detector, scorers = reference_bundles(args.models)
    config = write_config(work / "edge.yaml", detector, scorers[0] if scorers else None, flat, energy,
                          work / "state")
    dataset = read_dataset(data)
    sim_reports = []
    for n, scorer in enumerate(scorers or [None]):
        report, _ = evaluate(dataset, RunSettings(config, scorer, scorer is None), args.workers,
                             f"benchmark {n + 1}/{max(1, len(scorers))}")
        sim_reports.append(report)
    real: list[tuple[str, EvalReport]] = []
    for name in ("gdxray", "sixray"):
        if (REALDATA / name).is_dir():
            report, _ = evaluate(read_dataset(REALDATA / name), RunSettings(config, None, True), args.workers,
                                 f"real {name}")
            real.append((name, report))
    args.out.write_text(render(sim_reports, real, args.n, detector, scorers), encoding="utf-8")
    print(f"wrote {args.out}")


def render(sim_reports: list[EvalReport], real: list[tuple[str, EvalReport]], n: int, detector: Path,
           scorers: list[Path]) -> str:
    today = dt.date.today().isoformat()
    seconds = sum(r.seconds for r in sim_reports) + sum(r.seconds for _, r in real)
    parts = [
        "# Results: reference models through the whole pipeline",
        "",
        "Generated by `edge eval` (through `python -m edge.eval.reference`); do not edit by hand. Regenerate with:",
        "",
        "```",
        f".venv/bin/python -m edge.eval.reference --work /tmp/xray-bench --n {n}",
        "```",
        "",
        f"Run on {today}, 2 CPU cores, OpenVINO FP32, {seconds:.0f} s of evaluation. Bundles: detector "
        f"`{detector.name}`, scorers {', '.join(f'`{s.name}`' for s in scorers) or 'none'} (from `models/`). "
        "Definitions of every figure: [eval.md](eval.md).",
        "",
        f"## Virtual-scanner benchmark ({n} items, seed {BENCH_SEED}, threat rate {BENCH_THREAT_RATE}, parcels)",
        "",
        "The service's own pipeline and config, offline. The scanner is calibrated by the commissioning code "
        "(flat-field, step wedge) exactly as on site. The models were trained on another scanner and item stream "
        "(seed 7), so no benchmark item was seen in training. UNSCREENED items count as alarms.",
        "",
        markdown_report(sim_reports),
        *[f"- `{r.scorer}` left {r.unscreened} of {r.items} items UNSCREENED; first: {r.unscreened_example}\n"
          for r in sim_reports if r.unscreened],
        "## Real images: detector transfer",
        "",
        "The detector alone (no scorer: an `hlz` scorer cannot read single-energy or pseudo-colour images) on "
        "third-party images it never saw in training, read from `../shared/realdata/xray` (not in the repository). "
        "GDXray is single-energy grey, handed to the `pc` detector as R = G = B; SIXray is pseudo-colour. Recall "
        "counts a ground-truth box as found if any detection overlaps it at IoU ≥ 0.5. Only 3 SIXray images "
        "have boxes (third-party VOC labels, knives only).",
        "",
        real_table(real) if real else "(real images not available on this machine)",
        "",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
