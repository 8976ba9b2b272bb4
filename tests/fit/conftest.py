"""Session fixture: a real audit store made by the service on virtual-scanner items with ``save_inputs`` on.

The scanner's calibrations come from the commissioning commands, the detector is the reference
``models/detector-agnostic`` and the config is the service tests' (``write_config``). The collecting config has
no scorer, so every screened item is CLEAR (decide: ALARM needs an anomalous object); tests that need other
verdicts edit copies of the records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calib.cli import calibrate_app
from edge.config import load_config
from edge.runtime import build_runtime, build_source
from edge.sinks.memory import MemorySink
from tests.service.service_helpers import write_config

REPO = Path(__file__).resolve().parents[2]
DETECTOR = REPO / "models" / "detector-agnostic"
PADIM = REPO / "models" / "scorer-padim"
SEED = 5
ITEMS = 16


@dataclass(frozen=True)
class FitAssets:
    config: Path
    audit: Path
    item_ids: tuple[str, ...]


@pytest.fixture(scope="session")
def fit_assets(tmp_path_factory: pytest.TempPathFactory) -> FitAssets:
    work = tmp_path_factory.mktemp("fit-assets")
    flat, energy = work / "flatfield.npz", work / "energy.yaml"
    runner = CliRunner()
    for args in (["flatfield", "--from-sim", "--seed", str(SEED), "-o", str(flat)],
                 ["energy", "--from-sim", "--seed", str(SEED), "-o", str(energy)]):
        result = runner.invoke(calibrate_app, args)
        assert result.exit_code == 0, result.output
    config = write_config(work / "edge.yaml", detector=DETECTOR, scorer=None, flat=flat, energy=energy,
                          state=work, items=ITEMS, per_minute=6000.0, extra="")
    text = config.read_text().replace("  seed: 0\n", f"  seed: {SEED}\n").replace("threat_rate: 0.5",
                                                                                  "threat_rate: 0.0")
    text = text.replace("  max_objects: 6\n", "  max_objects: 8\n")
    config.write_text(text.replace(f"  directory: {work / 'audit'}\n",
                                   f"  directory: {work / 'audit'}\n  save_inputs: true\n"))
    cfg = load_config(config)
    assert cfg.audit.save_inputs
    memory = MemorySink()
    # The service itself keeps the inputs (build_runtime's pipeline hands each accepted item to the audit store).
    runtime = build_runtime(cfg, source=build_source(cfg), extra_sinks=[memory])
    runtime.pipeline.start()
    try:
        assert memory.wait_for(ITEMS, timeout_s=120)
    finally:
        runtime.pipeline.stop(5.0)
        runtime.models.current.close()
    # The fit config names the PaDiM bundle as the service's scorer, as on a box that runs it.
    config.write_text(config.read_text().replace(f"  detector: {DETECTOR}\n",
                                                 f"  detector: {DETECTOR}\n  scorer: {PADIM}\n"))
    return FitAssets(config, work / "audit", tuple(d.item_id for d in memory.decisions))
