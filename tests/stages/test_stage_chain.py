"""The screening chain as the architecture says: stage records in records.py, the order in pipeline.py (typed),
decide before map, raw dropped after conditioning, one overlay cap applied once, outlines mapped once."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.backends import BundleSession
from edge.bundles.loader import load_bundle
from edge.camera.mapping import CameraMapper, map_outline
from edge.config import EdgeConfig
from edge.errors import BackendError
from edge.publish.images import fit_jpeg
from edge.records import BoxXyxy, ConditionedItem, DecidedItem, ItemMeta, LocalisedItem, ObjectResult, Verdict
from edge.runtime import build_stages, overlay_max_bytes
from edge.stages.decide import DecideStage
from edge.stages.map import MapStage
from sim.camera import ExitCamera
from tests.camera.camera_helpers import calibration_from_truth

REPO = Path(__file__).resolve().parents[2]


def test_no_stage_module_imports_another() -> None:
    for path in sorted((REPO / "edge" / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("edge.stages") for n in names), f"{path.name} imports {names}"


def _cfg(tmp_path: Path, **extra: object) -> EdgeConfig:
    return EdgeConfig.model_validate({
        "site": {"site_id": "s", "scanner_id": "l1"},
        "models": {"detector": str(REPO / "models" / "detector-agnostic")},
        "audit": {"directory": str(tmp_path / "audit")},
        "mqtt": {"enabled": False}, **extra})


def test_the_service_runs_the_six_steps_in_order_and_caps_overlays_once(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    stages = build_stages(cfg, None, None, "no calibration")  # type: ignore[arg-type]  # not called here
    assert [s.name for s in stages] == ["condition", "detect", "score", "localise", "decide", "map"]
    assert overlay_max_bytes(cfg) == 250_000
    both = _cfg(tmp_path, mqtt={"enabled": True, "image_max_bytes": 120_000},
                camera={"device": 0, "overlay_max_bytes": 100_000})
    assert overlay_max_bytes(both) == 100_000


def test_raw_counts_stop_at_conditioning() -> None:
    for record in (ConditionedItem, LocalisedItem, DecidedItem):
        assert "raw" not in {f.name for f in fields(record)}


def _grey_item() -> tuple[ItemMeta, object]:
    from edge.condition.degraded import from_grey

    rng = np.random.default_rng(0)
    image = from_grey(rng.integers(0, 255, (600, 640), dtype=np.uint8))  # noise: a large JPEG
    return ItemMeta("i-1", "l1", 1, 0.0, 1.0, 0.0, 1.0, 1e9), image


def test_decide_then_map_keeps_the_verdict_and_fits_the_picture_under_the_cap_once() -> None:
    class _NoModels:
        refs = ()

    meta, image = _grey_item()
    obj = ObjectResult(0, BoxXyxy(10, 10, 200, 200), "knife", 0.9, 0.95, 0.5, True,
                       ((10.0, 10.0), (200.0, 10.0), (200.0, 200.0), (10.0, 200.0)))
    decided = DecideStage()(LocalisedItem(meta, image, (obj,), _NoModels()))  # type: ignore[arg-type]
    assert decided.decision.verdict is Verdict.ALARM and decided.decision.overlay_jpeg is None
    cap = 40_000
    decision = MapStage(None, cap)(decided)
    assert decision.verdict is Verdict.ALARM and decision.item_score == decided.decision.item_score
    assert decision.overlay_jpeg is not None and len(decision.overlay_jpeg) <= cap
    assert cv2.imdecode(np.frombuffer(decision.overlay_jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    # The MQTT sink's own check then passes it as it is (no decode, no re-encode).
    fitted = fit_jpeg(decision.overlay_jpeg, cap)
    assert fitted.jpeg is decision.overlay_jpeg and fitted.note is None


def test_an_outline_is_mapped_once_and_its_vertices_are_what_mapping_them_alone_gives() -> None:
    cam = ExitCamera()
    mapper = CameraMapper(calibration_from_truth(cam))
    polygon = np.array([[20.0, 10.0], [320.0, 15.0], [330.0, 200.0], [25.0, 190.0]])
    for height in (None, 150.0):
        dense, vertices = map_outline(mapper, polygon, 800.0, height)
        assert len(dense) > len(polygon) and vertices.shape == polygon.shape
        assert np.array_equal(vertices, mapper.xray_to_camera(polygon, 800.0, height))


def test_a_bad_batch_is_still_refused_in_the_bundles_name() -> None:
    from edge.backends import open_backend

    bundle = load_bundle(REPO / "models" / "classifier-threat")
    session: BundleSession = open_backend(bundle, "onnxruntime", threads=1)
    try:
        c = bundle.contract
        with pytest.raises(BackendError, match="bundle classifier-threat: expected float32"):
            session.run(np.zeros((1, c.tensor_channels, c.height, c.width), np.float64))  # type: ignore[arg-type]
        with pytest.raises(Exception, match="input contract"):
            session.run(np.zeros((1, c.tensor_channels, c.height + 1, c.width), np.float32))
        assert session.predict(np.zeros((2, c.tensor_channels, c.height, c.width), np.float32)) is not None
    finally:
        session.close()
