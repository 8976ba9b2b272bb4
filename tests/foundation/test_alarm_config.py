"""The ``models`` section of issue 32: three slots, each a path or a mapping, threat classes from the detector
bundle (overridable), and a config that can never ALARM refused with file, line and key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.bundles.loader import load_bundle
from edge.bundles.writer import rewrite_manifest
from edge.config import load_config
from edge.config.preflight import preflight, refuse_if_never_alarms, run_refusals
from edge.errors import BundleError, ConfigError
from edge.screening import effective_threat_classes

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


def _config(tmp_path: Path, models: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text("site:\n  site_id: hub\n  scanner_id: lane-1\nmodels:\n" + textwrap.indent(
        textwrap.dedent(models), "  ") + "  allow_unsigned: true\n", encoding="utf-8")
    return path


def _line(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def classes_without_threats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``detector-classes`` with its threat classes removed (as every detector bundle before issue 31/32)."""
    bundle = load_bundle(MODELS / "detector-classes")
    out = tmp_path_factory.mktemp("det") / "detector-classes-none"
    m = bundle.manifest
    return rewrite_manifest(bundle, out, thresholds=m.thresholds, version=m.version, notes=m.notes,
                            threat_classes={}).root


def test_old_path_form_still_loads_and_the_mapping_form_sets_precision_per_model(tmp_path: Path) -> None:
    old = load_config(_config(tmp_path, f"detector: {MODELS}/detector-agnostic\nscorer: {MODELS}/scorer-stfpm\n"))
    assert old.models.detector.bundle == MODELS / "detector-agnostic" and old.models.classifier is None
    assert old.models.precision_of(old.models.detector) == "fp32"
    new = load_config(_config(tmp_path, f"""\
        detector: {{bundle: {MODELS}/detector-classes, precision: int8, backend: onnxruntime}}
        classifier:
          bundle: {MODELS}/classifier-threat
          threshold: 0.97
        scorer: {MODELS}/scorer-stfpm
        threat_classes: {{cutter: 0.4}}
        """))
    m = new.models
    assert m.precision_of(m.detector) == "int8" and m.backend_of(m.detector) == "onnxruntime"
    assert m.classifier is not None and m.classifier.threshold == 0.97 and m.precision_of(m.classifier) == "fp32"
    assert m.threat_classes == {"cutter": 0.4}


def test_a_mistake_in_a_model_mapping_names_file_line_and_key(tmp_path: Path) -> None:
    path = _config(tmp_path, f"""\
        detector: {MODELS}/detector-classes
        classifier:
          bundle: {MODELS}/classifier-threat
          precison: int8
        threat_classes: {{cutter: 1.5}}
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert any(p.startswith(f"{path}:{_line(path, 'precison')}: models.classifier.precison:") for p in problems)
    assert any(p.startswith(f"{path}:{_line(path, 'threat_classes')}: models.threat_classes:") and "[0, 1]" in p
               for p in problems), problems


def test_a_config_that_can_never_alarm_is_refused_naming_file_line_and_key(tmp_path: Path,
                                                                          classes_without_threats: Path) -> None:
    for detector in (MODELS / "detector-agnostic", classes_without_threats):
        path = _config(tmp_path, f"detector: {detector}\n")
        with pytest.raises(ConfigError) as info:
            refuse_if_never_alarms(load_config(path), path)
        (problem,) = info.value.problems
        assert problem.startswith(f"{path}:{_line(path, 'models:')}: models.scorer: absent, so no item can ever "
                                  "ALARM") and "threat_classes" in problem and "models.classifier" in problem
    # the bundle's threat class removed in the config: refused too
    path = _config(tmp_path, f"detector: {MODELS}/detector-classes\nthreat_classes: {{cutter: null}}\n")
    assert run_refusals(load_config(path), path)


@pytest.mark.parametrize("models", [
    "detector: {det}\nthreat_classes: {{cutter: 0.5}}\n",  # a threat class from the config
    "detector: {det}\nclassifier: " + f"{MODELS}/classifier-threat\n",
    "detector: {det}\nscorer: " + f"{MODELS}/scorer-stfpm\n",
])
def test_any_one_signal_is_enough_to_start(tmp_path: Path, classes_without_threats: Path, models: str) -> None:
    path = _config(tmp_path, models.format(det=classes_without_threats))
    assert run_refusals(load_config(path), path) == []


def test_the_shipped_class_detector_alarms_on_its_own_threat_classes(tmp_path: Path) -> None:
    manifest = load_bundle(MODELS / "detector-classes").manifest
    assert set(manifest.threat_classes) == {"cutter"} and 0.0 < manifest.threat_classes["cutter"] < 1.0
    path = _config(tmp_path, f"detector: {MODELS}/detector-classes\n")
    assert run_refusals(load_config(path), path) == []


def test_a_threat_class_the_detector_does_not_have_is_an_error(tmp_path: Path) -> None:
    path = _config(tmp_path, f"detector: {MODELS}/detector-classes\nthreat_classes: {{pistol: 0.5}}\n"
                             f"scorer: {MODELS}/scorer-stfpm\n")
    found = [str(p) for p in preflight(load_config(path), path)]
    assert any(p.startswith(f"{path}:{_line(path, 'threat_classes')}: models.threat_classes.pistol: 'pistol' is "
                            "not a class of detector") for p in found), found
    with pytest.raises(BundleError, match="pistol"):
        effective_threat_classes(load_bundle(MODELS / "detector-classes"), {"pistol": 0.5})
    merged = effective_threat_classes(load_bundle(MODELS / "detector-classes"), {"cutter": None, "bottle": 0.9})
    assert merged == {"bottle": 0.9}


def test_a_bundle_whose_threat_class_is_not_one_of_its_classes_does_not_load(tmp_path: Path) -> None:
    bundle = load_bundle(MODELS / "detector-classes")
    m = bundle.manifest
    with pytest.raises(BundleError, match="threat_classes: 'pistol' not in classes"):
        rewrite_manifest(bundle, tmp_path / "bad", thresholds=m.thresholds, version=m.version, notes=m.notes,
                         threat_classes={"pistol": 0.5})


def test_edge_check_refuses_a_config_that_can_never_alarm(tmp_path: Path) -> None:
    path = _config(tmp_path, f"detector: {MODELS}/detector-agnostic\n")
    result = subprocess.run([sys.executable, "-m", "edge", "check", "-c", str(path)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert f"{path}:{_line(path, 'models:')}: models.scorer: absent, so no item can ever ALARM" in (
        result.stdout + result.stderr)
