"""Builders for the eval tests: a tiny virtual-scanner dataset, its scanner's calibrations (made by the
commissioning commands), tiny real bundles exported through the toolchain, and a service config tying them up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from calib.cli import calibrate_app
from edge.bundles import Role
from sim.dataset import GenerateConfig, generate
from tests.service.service_helpers import build_bundle, write_config

SEED = 3
ITEMS = 6


@dataclass(frozen=True)
class EvalAssets:
    dataset: Path
    config: Path
    detector: Path
    scorer: Path
    scorer_b: Path


def build_eval_assets(work: Path) -> EvalAssets:
    dataset = work / "sim"
    generate(GenerateConfig(n=ITEMS, seed=SEED, threat_rate=0.5, camera=False, workers=2), dataset)
    flat, energy = work / "flatfield.npz", work / "energy.yaml"
    runner = CliRunner()
    for args in (["flatfield", "--from-sim", "--seed", str(SEED), "-o", str(flat)],
                 ["energy", "--from-sim", "--seed", str(SEED), "-o", str(energy)]):
        result = runner.invoke(calibrate_app, args)
        assert result.exit_code == 0, result.output
    detector = build_bundle(Role.DETECTOR, work, "det")
    scorer = build_bundle(Role.SCORER, work, "scorer")
    scorer_b = build_bundle(Role.SCORER, work, "scorer-b")
    # The config's sim source is the same scanner and item stream as the dataset (seed 3, threat rate 0.5), so
    # the service itself can be run on the very same items for comparison.
    config = write_config(work / "edge.yaml", detector=detector, scorer=scorer, flat=flat, energy=energy,
                          state=work / "state", items=ITEMS, per_minute=600.0)
    text = config.read_text().replace("  seed: 0\n", f"  seed: {SEED}\n")
    config.write_text(text)
    return EvalAssets(dataset, config, detector, scorer, scorer_b)
