"""Virtual scanners for offline evaluation: a set of items, its on-site calibrations, and the service config.

Why a module of its own: the published benchmark (``edge_tools.eval.reference``, docs/results.md) and the comparison
used to choose models (``edge_tools.eval.validation``) must build their scanners the same way, and must never share
one. ``BENCHMARK_SEEDS`` are reserved for the published figures; validation refuses them, so no model choice is
made on the items it is then judged on.

Must not: train anything, or read third-party data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCH_SEED = 101
"""The scanner of docs/results.md's detailed tables (per threat kind, detector COCO figures)."""
BENCHMARK_SEEDS = (BENCH_SEED, 201, 202, 203)
"""Every scanner of the published benchmark (pooled AUROC_M): one 200-item set resolves only about ±0.07."""
BENCH_THREAT_RATE = 0.5


@dataclass(frozen=True, slots=True)
class Scanner:
    """One virtual scanner ready for ``edge eval``: its items and the config naming its calibrations."""

    seed: int
    data: Path
    config: Path


def benchmark_seeds_among(seeds: list[int]) -> str | None:
    """Why ``seeds`` may not be used to choose or tune anything, or None: the benchmark scanners among them."""
    reserved = sorted(set(seeds) & set(BENCHMARK_SEEDS))
    if not reserved:
        return None
    return (f"seed(s) {', '.join(map(str, reserved))} belong to the benchmark of docs/results.md "
            f"({', '.join(map(str, BENCHMARK_SEEDS))})")


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
    --from-sim --seed`` write); kept in ``out`` and reused."""
    from calib.energy import DEFAULT_FIT_MATERIALS, calibrate_from_sim, save_energy_calibration
    from calib.flatfield import capture_from_sim, compute_flatfield, save_flatfield
    from sim.wedge import DEFAULT_WEDGE_MATERIALS

    out.mkdir(parents=True, exist_ok=True)
    flat, energy = out / "flatfield.npz", out / "energy.yaml"
    if not flat.is_file():
        dark, air = capture_from_sim(seed, 256)
        save_flatfield(compute_flatfield(dark, air, f"sim seed={seed}"), flat, (256, 256))
    if not energy.is_file():
        materials = list(dict.fromkeys([*DEFAULT_WEDGE_MATERIALS, *DEFAULT_FIT_MATERIALS]))
        cal, report = calibrate_from_sim(seed, materials, DEFAULT_FIT_MATERIALS)
        save_energy_calibration(cal, energy, report)
    return flat, energy


def simulated_set(seed: int, n: int, out: Path, workers: int, threat_rate: float = BENCH_THREAT_RATE) -> Path:
    """``n`` items of virtual scanner ``seed`` (parcels, no camera) in ``out``; generated only when ``out`` does
    not hold them yet (the sets are kept and reused)."""
    from sim.dataset import GenerateConfig, generate

    if not (out / "annotations.json").is_file():
        generate(GenerateConfig(n=n, seed=seed, threat_rate=threat_rate, camera=False, workers=workers), out)
    return out


def write_config(path: Path, detector: Path, scorer: Path | None, flat: Path, energy: Path, state: Path, *,
                 classifier: Path | None = None) -> Path:
    """A service config for offline evaluation (no MQTT; sim source named only because a source is required);
    ``classifier``/``scorer`` fill those model slots when given (the combined decision, issue 32).

    ``allow_unsigned``: evaluation runs on the workstation, on bundles (the reference ones, a fresh export) that are
    signed only when released; hashes are still checked. Trust is the box's decision (docs/bundles.md).
    """
    scorer_line = "".join(f"  {name}: {bundle}\n" for name, bundle in (("classifier", classifier), ("scorer", scorer))
                          if bundle is not None)
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
  allow_unsigned: true
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


def prepare_scanner(seed: int, n: int, work: Path, detector: Path, scorer: Path | None, workers: int,
                    threat_rate: float = BENCH_THREAT_RATE) -> Scanner:
    """Scanner ``seed`` in folder ``work``: ``n`` items (``sim-SEED-N``, or ``sim-SEED-N-benign`` at threat rate
    0), its calibrations, ``edge.yaml``."""
    if threat_rate == BENCH_THREAT_RATE:
        name = f"sim-{seed}-{n}"
    elif threat_rate == 0:
        name = f"sim-{seed}-{n}-benign"
    else:
        name = f"sim-{seed}-{n}-threats-{threat_rate:g}"
    data = simulated_set(seed, n, work / name, workers, threat_rate)
    flat, energy = calibrate_scanner(seed, work)
    return Scanner(seed, data, write_config(work / "edge.yaml", detector, scorer, flat, energy, work / "state"))
