"""The service end to end, in process: virtual scanner → real conditioning → real OpenVINO bundles → decisions
in the audit store, on a real MQTT broker, and in the status file."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_config
from edge.records import Decision, UnscreenedReason, Verdict
from edge.runtime import build_runtime
from edge.service import Service
from edge.sinks.memory import MemorySink
from tests.service.conftest import Assets
from tests.service.service_helpers import write_config


def _run_until_idle(service: Service, timeout_s: float = 90.0) -> None:
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert service.runtime.pipeline.wait_idle(timeout_s), "pipeline did not finish its items in time"
        time.sleep(1.2)  # one more status-file round
    finally:
        service.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _audit_records(state: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((state / "audit").rglob("*.json"))]


def test_every_item_gets_one_decision_on_every_sink(tmp_path: Path, assets: Assets) -> None:
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    received: list[dict[str, object]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: received.append(json.loads(m.payload)) if m.topic.endswith("/items") else None
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(f"{prefix}/#", qos=1)
    sub.loop_start()
    try:
        cfg_path = write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=assets.scorer,
                                flat=assets.flat, energy=assets.energy, state=tmp_path, items=4,
                                mqtt=f"host: 127.0.0.1\n  port: 1883\n  topic_prefix: {prefix}")
        memory = MemorySink()
        runtime = build_runtime(load_config(cfg_path), extra_sinks=[memory])
        _run_until_idle(Service(cfg_path, runtime))
        deadline = time.monotonic() + 10
        while len(received) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sub.loop_stop()
        sub.disconnect()
    decisions: list[Decision] = memory.decisions
    assert [d.item_id for d in decisions] == [f"lane1-{n}" for n in range(1, 5)]
    for d in decisions:
        assert d.verdict in (Verdict.ALARM, Verdict.CLEAR), (d.verdict, d.detail)
        assert {m.role for m in d.models} == {"detector", "scorer"}
        assert d.overlay_jpeg is not None and d.overlay_jpeg[:2] == b"\xff\xd8"
        assert all(o.anomaly_score is not None and o.threshold is not None for o in d.objects)
        assert all((o.anomaly_score >= o.threshold) == o.anomalous for o in d.objects)  # type: ignore[operator]
        assert (d.verdict is Verdict.ALARM) == any(o.anomalous for o in d.objects)
    assert sorted(r["item_id"] for r in _audit_records(tmp_path)) == sorted(d.item_id for d in decisions)
    assert sorted(str(r["item_id"]) for r in received) == sorted(d.item_id for d in decisions)
    status = json.loads((tmp_path / "status.json").read_text())
    assert sum(status["decisions"].values()) == 4 and status["in_flight"] == 0
    assert status["state"] == "online"


def test_scorer_failing_at_run_time_gives_model_error(tmp_path: Path, assets: Assets) -> None:
    cfg_path = write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=assets.fragile_scorer,
                            flat=assets.flat, energy=assets.energy, state=tmp_path, items=4)
    memory = MemorySink()
    runtime = build_runtime(load_config(cfg_path), extra_sinks=[memory])
    _run_until_idle(Service(cfg_path, runtime))
    decisions = memory.decisions
    assert len(decisions) == 4
    failed = [d for d in decisions if d.verdict is Verdict.UNSCREENED]
    assert failed, "a scorer that cannot take a batch of several objects must fail those items"
    for d in failed:
        assert d.reason is UnscreenedReason.MODEL_ERROR and "score:" in d.detail and "batch" in d.detail
    for d in decisions:
        if d.verdict is not Verdict.UNSCREENED:
            assert len(d.objects) <= 1, "items with several objects cannot have been scored"


def test_missing_calibration_unscreens_and_degrades(tmp_path: Path, assets: Assets) -> None:
    cfg_path = write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=assets.scorer,
                            flat=assets.flat, energy=tmp_path / "absent-energy.yaml", state=tmp_path, items=2)
    memory = MemorySink()
    runtime = build_runtime(load_config(cfg_path), extra_sinks=[memory])
    service = Service(cfg_path, runtime)
    _run_until_idle(service)
    assert Counter(d.reason for d in memory.decisions) == {UnscreenedReason.MISSING_CALIBRATION: 2}
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "degraded" and "absent-energy.yaml" in status["reason"]


def test_broken_bundle_refuses_to_start(tmp_path: Path, assets: Assets) -> None:
    import shutil

    from edge.errors import BundleError

    broken = tmp_path / "det"
    shutil.copytree(assets.detector, broken)
    onnx_file = next(broken.rglob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10] + b"0123456789")
    cfg_path = write_config(tmp_path / "edge.yaml", detector=broken, scorer=assets.scorer, flat=assets.flat,
                            energy=assets.energy, state=tmp_path)
    with pytest.raises(BundleError, match="sha256"):
        build_runtime(load_config(cfg_path))


def test_unavailable_accelerator_falls_back_to_cpu_and_degrades(tmp_path: Path, assets: Assets) -> None:
    cfg_path = write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=assets.scorer,
                            flat=assets.flat, energy=assets.energy, state=tmp_path, items=1)
    text = cfg_path.read_text().replace("  backend: openvino\n", "  backend: openvino\n  device: NPU\n")
    cfg_path.write_text(text)
    memory = MemorySink()
    runtime = build_runtime(load_config(cfg_path), extra_sinks=[memory])
    assert runtime.models.current.detector.backend == "openvino"
    assert any("runs on openvino/CPU because openvino/NPU" in p for p in runtime.problems), runtime.problems
    service = Service(cfg_path, runtime)
    _run_until_idle(service)
    assert [d.verdict for d in memory.decisions] != [Verdict.UNSCREENED]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "degraded" and "NPU" in status["reason"]


def test_missing_camera_never_blocks_decisions(tmp_path: Path, assets: Assets) -> None:
    extra = (f"camera:\n  device: {tmp_path / 'no-such-camera.mp4'}\n"
             f"  calibration_file: {tmp_path / 'no-camera-calibration.yaml'}\n")
    cfg_path = write_config(tmp_path / "edge.yaml", detector=assets.detector, scorer=assets.scorer,
                            flat=assets.flat, energy=assets.energy, state=tmp_path, items=2, extra=extra)
    memory = MemorySink()
    runtime = build_runtime(load_config(cfg_path), extra_sinks=[memory])
    _run_until_idle(Service(cfg_path, runtime))
    decisions = memory.decisions
    assert len(decisions) == 2 and all(d.verdict is not Verdict.UNSCREENED for d in decisions)
    for d in decisions:
        assert d.overlay_jpeg is not None, "the X-ray overlay stands in for the camera's"
        assert d.overlay_note is not None and "no belt position" in d.overlay_note
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "degraded" and "not calibrated" in status["reason"]


def test_int8_deployment_runs_a_bundle_without_int8_at_fp32_and_says_so(tmp_path: Path, assets: Assets) -> None:
    models = Path(__file__).resolve().parents[2] / "models"
    cfg_path = write_config(tmp_path / "edge.yaml", detector=models / "detector-agnostic",
                            scorer=models / "scorer-padim", flat=assets.flat, energy=assets.energy,
                            state=tmp_path, items=1)
    cfg_path.write_text(cfg_path.read_text().replace("  backend: openvino\n",
                                                     "  backend: openvino\n  precision: int8\n"))
    memory = MemorySink()
    runtime = build_runtime(load_config(cfg_path), extra_sinks=[memory])
    current = runtime.models.current
    assert str(current.detector.session.precision) == "int8"
    assert current.scorer is not None and str(current.scorer.session.precision) == "fp32"
    assert any("no int8 model" in p for p in runtime.problems), runtime.problems
    _run_until_idle(Service(cfg_path, runtime))
    assert [d.verdict for d in memory.decisions] != [Verdict.UNSCREENED]
