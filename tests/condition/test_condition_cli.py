"""``flatfield`` and ``energy`` commands through typer's CliRunner, writing real calibration files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from calib.cli_condition import condition_app
from edge.condition import Conditioner, load_energy_calibration, load_flatfield
from edge.config.condition import ConditionConfig

runner = CliRunner()


def test_help_has_examples() -> None:
    for cmd in ("flatfield", "energy"):
        result = runner.invoke(condition_app, [cmd, "--help"])
        assert result.exit_code == 0
        assert "Examples" in result.output and "--from-sim" in result.output


def test_flatfield_then_energy_from_sim(tmp_path: Path) -> None:
    ff_path = tmp_path / "flatfield.npz"
    result = runner.invoke(condition_app, ["flatfield", "--from-sim", "--seed", "3", "--lines", "64",
                                           "--out", str(ff_path)])
    assert result.exit_code == 0, result.output
    assert "residual column pattern" in result.output
    ff = load_flatfield(ff_path)
    assert ff.channels == 640 and ff.source == "sim seed=3"

    energy_path = tmp_path / "energy.yaml"
    result = runner.invoke(condition_app, ["energy", "--from-sim", "--seed", "3", "--out", str(energy_path)])
    assert result.exit_code == 0, result.output
    assert "| titanium |" not in result.output  # only the default wedge materials are scanned
    assert "| copper |" in result.output and "fit error Z rms" in result.output
    cal = load_energy_calibration(energy_path)
    assert [c.material for c in cal.curves] == ["pom", "water", "aluminium", "steel"]
    cond = Conditioner.from_config(ConditionConfig(flatfield_file=ff_path, energy_file=energy_path))
    img = cond.condition(np.full((4, 640), 30_000, np.uint16), np.full((4, 640), 30_000, np.uint16))
    assert img.zeff is not None and img.zeff.shape == (4, 640)


def test_bad_invocations(tmp_path: Path) -> None:
    result = runner.invoke(condition_app, ["flatfield", "--out", str(tmp_path / "f.npz")])
    assert result.exit_code == 2 and "--from-sim" in result.output
    missing = runner.invoke(condition_app, ["flatfield", "--dark", str(tmp_path / "no.npz"), "--air",
                                            str(tmp_path / "no.npz"), "--out", str(tmp_path / "f.npz")])
    assert missing.exit_code == 1 and "cannot read reference lines" in missing.output
    result = runner.invoke(condition_app, ["energy", "--from-sim", "--fit", "pom,unobtainium",
                                           "--out", str(tmp_path / "e.yaml")])
    assert result.exit_code == 1 and "unknown wedge material(s) ['unobtainium']" in result.output
    assert not (tmp_path / "e.yaml").exists() and not (tmp_path / "f.npz").exists()


def test_output_path_comes_from_the_config(tmp_path: Path) -> None:
    target = tmp_path / "cal" / "ff.npz"
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"site:\n  site_id: a\n  scanner_id: b\nmodels:\n  detector: /m\n"
                   f"condition:\n  flatfield_file: {target}\n")
    result = runner.invoke(condition_app, ["flatfield", "--from-sim", "--lines", "16", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert load_flatfield(target).channels == 640
    cfg.write_text("site:\n  site_id: a\n  scanner_id: b\nmodels:\n  detector: /m\ncondition:\n  palete: {}\n")
    bad = runner.invoke(condition_app, ["flatfield", "--from-sim", "--config", str(cfg)])
    assert bad.exit_code == 2
    assert f"{cfg}:7: condition.palete: unknown key 'palete' (did you mean 'palette'?)" in bad.output
