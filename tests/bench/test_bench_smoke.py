"""``edge bench`` smoke test: a few real items through the real pipeline and backends, one configuration, and
the service's real cold start; asserts the JSON record has every field and that the figures hang together
(counts, orderings, units). Speed targets are not asserted here: they live in ``benchmarks/``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import typer
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edge_tools.bench.cli import bench_command
from edge_tools.bench.roofline import count_flops
from edge_tools.bench.stats import percentiles

REPO = Path(__file__).resolve().parents[2]
STAGES = {"condition", "detect", "score", "localise", "decide", "map"}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(bench_command)
    return app


def _ordered(p: dict[str, float]) -> bool:
    return p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"]


def test_bench_runs_one_configuration_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    n = 3
    result = CliRunner().invoke(_app(), [
        "--items", str(n), "--backends", "openvino", "--precisions", "fp32", "--batches", "4",
        "--throughput-runs", "1", "--cold-start-runs", "1", "--items-dir", str(tmp_path / "items"),
        "-o", str(out), "--markdown", str(md),
        "--detector", str(REPO / "models" / "detector-agnostic"), "--scorer", str(REPO / "models" / "scorer-stfpm"),
    ])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["schema"] == "xray-edge/bench"
    assert record["items"]["n"] == n and record["items"]["channels"] == 640
    assert record["peak"]["gflops"] > 0 and record["peak"]["threads"] == 2
    assert len(record["load_avg_end"]) == 3
    [config] = record["configs"]
    assert (config["backend"], config["precision"], config["scorer_batch"]) == ("openvino", "fp32", 4)
    for name in ("throughput", "latency", "sequential"):
        run = config[name]
        assert run["items"] == run["screened"] == n and sum(run["verdicts"].values()) == n
        # Real calibrations from the same virtual scanner: every item must be screened, none UNSCREENED.
        assert run["verdicts"].get("unscreened", 0) == 0, run["verdicts"]
        assert set(run["stages"]) == STAGES and all(s["n"] == n for s in run["stages"].values())
        assert all(_ordered(s) for s in run["stages"].values()) and _ordered(run["item_latency"])
        assert run["items_per_s"] == pytest.approx(n / run["wall_s"], rel=0.01)
        assert run["cpu_ms_per_item"] > 0
        # An item's latency covers at least the stages it went through.
        assert run["item_latency"]["max_ms"] >= max(s["max_ms"] for s in run["stages"].values())
    # The same models on the same items decide the same way whether pipelined, paced or called in sequence.
    assert config["throughput"]["verdicts"] == config["latency"]["verdicts"] == config["sequential"]["verdicts"]
    assert config["sequential"]["arrival_period_s"] is None and len(config["throughput_runs_items_per_s"]) == 1
    assert config["latency"]["arrival_period_s"] == pytest.approx(
        1.0 / (0.5 * config["throughput"]["items_per_s"]), rel=0.01)
    roles = {m["role"]: m for m in config["models"]}
    assert set(roles) == {"detector", "scorer"}
    assert roles["scorer"]["batch"] == 4 and roles["detector"]["batch"] == 1
    for m in roles.values():
        assert m["precision"] == "fp32" and m["gflops_per_input"] > 0 and m["load_s"] > 0
        assert m["infer_min_ms"] <= m["infer_median_ms"]
        expected = m["gflops_per_input"] * m["batch"] / (m["infer_median_ms"] / 1000.0)
        assert m["achieved_gflops"] == pytest.approx(expected, rel=0.02)
    assert 0 < config["rss_before_models_mb"] < config["rss_steady_max_mb"] <= config["rss_peak_mb"] + 1.0
    cold = {c["cached"]: c for c in record["cold_start"]}
    assert set(cold) == {False, True}
    for c in cold.values():
        assert len(c["ready_s"]) == 1 and 0 < c["ready_s"][0] < 120 and c["status"].startswith("online")
    table = md.read_text()
    assert "| openvino | fp32/fp32 | 4 | 2 |" in table and "### Cold start to READY=1" in table
    assert record["bundles"][0].startswith("detector-agnostic@")
    assert table in result.output


def test_bench_rejects_unknown_backend_before_measuring(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["--backends", "openvino,tensorrt", "--items-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "tensorrt not valid; expected some of openvino, onnxruntime" in result.output
    assert not any(tmp_path.iterdir())


def test_flops_counted_from_the_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], rng.standard_normal(216).astype(np.float32))
    dw = helper.make_tensor("dw", TensorProto.FLOAT, [8, 1, 3, 3], rng.standard_normal(72).astype(np.float32))
    m = helper.make_tensor("m", TensorProto.FLOAT, [8 * 8 * 8, 10], rng.standard_normal(5120).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c1", "dw"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w, dw, m])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    flops = count_flops(path)
    # stride-2 conv: 8x8 outputs x 8 channels x 27; depthwise: 8x8 x 8 x 9; matmul: 512 x 10.
    assert flops.conv_macs == 8 * 8 * 8 * 27 + 8 * 8 * 8 * 9
    assert flops.matmul_macs == 512 * 10
    assert flops.gflops == pytest.approx(2 * (flops.conv_macs + flops.matmul_macs) / 1e9)


def test_percentiles_are_nearest_rank() -> None:
    p = percentiles([float(v) for v in range(100, 0, -1)])
    assert (p.n, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.mean_ms) == (100, 50.0, 95.0, 99.0, 100.0, 50.5)
    few = percentiles([3.0, 1.0, 2.0])
    assert few.p99_ms == 3.0 and few.p50_ms == 2.0


def test_bench_measures_the_classifier_slot(tmp_path: Path) -> None:
    """``--classifier`` puts a bundle in ``models.classifier`` (issue 32's default combination); with
    ``--no-scorer`` the run is detector + classifier, and the classifier is timed alone like every model."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(_app(), [
        "--items", "2", "--backends", "openvino", "--precisions", "fp32", "--batches", "4",
        "--throughput-runs", "1", "--cold-start-runs", "0", "--items-dir", str(tmp_path / "items"), "-o", str(out),
        "--detector", str(REPO / "models" / "detector-agnostic"), "--no-scorer",
        "--classifier", str(REPO / "models" / "classifier-threat"),
    ])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    [config] = record["configs"]
    assert config["label"].endswith("/det+cls")
    assert {m["role"] for m in config["models"]} == {"detector", "classifier"}
    assert [b.split("@")[0] for b in record["bundles"]] == ["detector-agnostic", "classifier-threat"]
    # the classifier really ran in the score stage of every item
    assert config["throughput"]["stages"]["score"]["n"] == 2 and config["throughput"]["screened"] == 2
