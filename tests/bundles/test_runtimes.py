"""The inference-library release a bundle's parity was proven on (``toolchain``) against the one the box runs:
outside it the models report degraded, or with ``models.require_tested_runtime`` that backend is refused.

Real reference bundles from ``models/`` (copied, their toolchain record edited and the manifest re-sealed), real
OpenVINO and ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from edge.bundles import runtimes as rt
from edge.bundles.manifest import content_digest
from edge.bundles.runtimes import installed_version, parse_range, release, series_range, untested_runtime
from edge.bundles.signing import SIGNATURE_FILE
from edge.config.models import ModelsConfig
from edge.errors import BackendError
from edge.screening import load_models
from export.versions import toolchain_versions

REPO = Path(__file__).resolve().parents[2]
DETECTOR = REPO / "models" / "detector-agnostic"


def test_release_series_and_ranges() -> None:
    assert release("2026.4.1-16000-abcdef") == (2026, 4, 1) and release("2.13.0+cpu") == (2, 13, 0)
    assert series_range("2026.4.1").text == ">=2026.4,<2026.5"
    assert series_range("1.32.0").text == ">=1.32,<1.33"
    tested = parse_range(">=1.32,<1.34")
    assert "1.32.0" in tested and "1.33.9" in tested and "1.34.0" not in tested and "1.31.9" not in tested
    assert "2026.4.0" in series_range("2026.4.1") and "2026.5.0" not in series_range("2026.4.1")
    for bad in ("1.32", ">=1.33,<1.32", "~=1.32"):
        with pytest.raises(ValueError):
            parse_range(bad)
    # An explicit range wins over the version; neither recorded: None.
    assert rt.tested_range({"openvino": "2026.4.1", "openvino.tested": ">=2026.3,<2026.5"}, "openvino") == \
        parse_range(">=2026.3,<2026.5")
    assert rt.tested_range({"openvino": "2026.4.1"}, "openvino") == series_range("2026.4.1")
    assert rt.tested_range({}, "onnxruntime") is None


def test_untested_runtime_says_which_version_and_what_range() -> None:
    toolchain = {"openvino": "2026.4.1", "onnxruntime": "1.32.0"}
    assert untested_runtime("det", toolchain, "openvino", "2026.4.3") is None
    assert untested_runtime("det", toolchain, "openvino", None) is None
    assert untested_runtime("det", toolchain, "openvino", "2027.0.0") == (
        "det runs on openvino 2027.0.0, outside the versions its parity was proven on (>=2026.4,<2026.5): "
        "re-verify it on this version (edge-export verify) or install a tested openvino")
    assert untested_runtime("det", {}, "onnxruntime", "1.32.0") == (
        "det records no onnxruntime version its parity was proven on; this box runs onnxruntime 1.32.0")
    assert "is unreadable" in (untested_runtime("det", {"openvino.tested": "new"}, "openvino", "2026.4.1") or "")


def test_export_records_the_tested_range_beside_each_runtime_version() -> None:
    versions = toolchain_versions()
    for lib in ("openvino", "onnxruntime"):
        assert versions[f"{lib}.tested"] == series_range(versions[lib]).text
        assert installed_version(lib) in rt.tested_range(versions, lib)  # type: ignore[operator]
    assert rt.tested_ranges({"numpy": "2.4.6"}) == {}
    assert toolchain_versions({"openvino.tested": ">=2026.3,<2026.5"})["openvino.tested"] == ">=2026.3,<2026.5"


def _with_toolchain(tmp_path: Path, **toolchain: str) -> Path:
    """A copy of the reference detector whose manifest records ``toolchain`` (re-sealed, unsigned)."""
    copy = tmp_path / "detector"
    shutil.copytree(DETECTOR, copy, ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    path = copy / "bundle.yaml"
    data = yaml.safe_load(path.read_text())
    data["toolchain"] = {**data["toolchain"], **toolchain}
    data["content_sha256"] = content_digest(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=110))
    return copy


def _cfg(detector: Path, **kw: object) -> ModelsConfig:
    return ModelsConfig(detector=detector, scorer=None, backend="openvino", allow_unsigned=True, **kw)


def test_the_reference_bundles_were_verified_on_the_installed_runtimes() -> None:
    # What the test environment (constraints.txt) installs is what the committed bundles were proven on.
    models = load_models(_cfg(DETECTOR))
    try:
        assert "parity was proven" not in (models.degraded or "")
    finally:
        models.close()


def test_an_untested_openvino_makes_the_models_degraded(tmp_path: Path) -> None:
    bundle = _with_toolchain(tmp_path, **{"openvino": "2020.1.0"})
    models = load_models(_cfg(bundle))
    try:
        assert models.detector.backend == "openvino"  # still screens
        assert models.degraded is not None
        assert (f"detector-agnostic runs on openvino {installed_version('openvino')}, outside the versions its "
                "parity was proven on (>=2020.1,<2020.2)") in models.degraded
    finally:
        models.close()


def test_require_tested_runtime_refuses_that_backend_and_falls_back_or_fails(tmp_path: Path) -> None:
    bundle = _with_toolchain(tmp_path, **{"openvino.tested": ">=2020.1,<2020.2"})
    models = load_models(_cfg(bundle, require_tested_runtime=True))
    try:
        assert models.detector.backend == "onnxruntime"  # the other backend, proven on this release
        assert "runs on onnxruntime/CPU because openvino/CPU: refused, detector-agnostic runs on openvino" in \
            (models.degraded or "")
    finally:
        models.close()
    both = _with_toolchain(tmp_path / "both", **{"openvino.tested": ">=2020.1,<2020.2", "onnxruntime": "1.0.0"})
    with pytest.raises(BackendError, match=r"no backend could load the model: openvino/CPU: refused, .*"
                                           r"onnxruntime/CPU: refused, .*\(models.require_tested_runtime\)"):
        load_models(_cfg(both, require_tested_runtime=True))
