"""``edge-export import-detector`` against what a user gets wrong or a model gets wrong: outputs named in the wrong
order (the torchvision export of docs/bring-your-own.md named labels "scores"), a model that returns NaN or inf,
an OpenVINO export whose metadata.yaml is broken, empty class names and class names holding ``=``. Each must be a
clear refusal naming the cause, never a bundle that would read garbage as scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from export.parity import errors
from tests.export.import_detector_graphs import CLASSES, build
from tests.export.test_import_detector import _import


def _swap_output_names(path: Path, a: str, b: str) -> Path:
    """Rename graph outputs ``a`` <-> ``b`` (what ``torch.onnx.export`` does with ``output_names`` in the wrong
    order: the names follow the list, the tensors follow the model's return order)."""
    model = onnx.load(str(path))
    rename = {a: b, b: a}
    for node in model.graph.node:
        for k, name in enumerate(node.output):
            if name in rename:
                node.output[k] = rename[name]
    for out in model.graph.output:
        if out.name in rename:
            out.name = rename[out.name]
    onnx.save(model, str(path))
    return path


def test_torchvision_outputs_named_in_the_wrong_order_are_refused_with_the_mapping_that_fixes_them(
        tmp_path: Path) -> None:
    """Integer class indices read as scores would pass every shape and parity check (both sides decode the same
    swap) and alarm on every box: the import refuses and names the --output mapping."""
    model = _swap_output_names(build("torchvision", tmp_path / "tv.onnx", batch_axis=False, height=96, width=96),
                               "scores", "labels")
    args = [str(model), "--layout", "torchvision", "--classes", ",".join(CLASSES), "--resize", "stretch",
            "--name", "tv", "--samples", "2"]
    code, text = _import([*args, "-o", str(tmp_path / "b")])
    assert code == 1, text
    assert "output 'scores' (int64)" in text and "must be floating point" in text
    assert "--output scores=labels --output labels=scores" in text
    assert "Traceback" not in text and not (tmp_path / "b").exists()

    code, text = _import([*args, "-o", str(tmp_path / "fixed"), "--output", "scores=labels",
                          "--output", "labels=scores"])
    assert code == 0, text
    manifest = yaml.safe_load((tmp_path / "fixed" / "bundle.yaml").read_text())
    fields = {o["name"]: o.get("field") for o in manifest["outputs"]}
    assert fields == {"boxes": "boxes", "labels": "scores", "scores": "labels"}


def _constant_yolov8(path: Path, predictions: np.ndarray) -> Path:
    """A YOLOv8-layout model whose output is ``predictions`` (plus 0 x the input's mean, so the input is used)."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["pred", "z"], ["output0"])]
    inits = [numpy_helper.from_array(np.float32(0.0), "zero"), numpy_helper.from_array(predictions, "pred")]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(predictions.shape))],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _predictions(bad: float | None, where: tuple[int, int]) -> np.ndarray:
    pred = np.zeros((1, 6, 10), np.float32)  # 2 classes, 10 candidates
    pred[0, :4, :] = np.array([[20.0], [20.0], [10.0], [10.0]])
    pred[0, 4, 0] = 0.9
    if bad is not None:
        pred[0, where[0], where[1]] = bad
    return pred


def test_a_model_that_returns_nan_or_inf_is_refused_not_bundled(tmp_path: Path) -> None:
    """The service makes every item of such a model UNSCREENED (non-finite boxes or scores); the import said
    PARITY PASSED and wrote the bundle (NaN differences vanished from the error maximum)."""
    cases = {"nan-box": (float("nan"), (0, 3)), "inf-score": (float("inf"), (4, 5)),
             "all-nan": (float("nan"), (slice(None), slice(None)))}  # type: ignore[dict-item]
    for name, (bad, where) in cases.items():
        model = _constant_yolov8(tmp_path / f"{name}.onnx", _predictions(bad, where))  # type: ignore[arg-type]
        code, text = _import([str(model), "--layout", "yolov8", "--classes", "a,b", "--name", name,
                              "--samples", "2", "-o", str(tmp_path / name)])
        assert code == 1, (name, text)
        assert "non-finite" in text and "UNSCREENED" in text, (name, text)
        assert "Traceback" not in text and not (tmp_path / name).exists(), name
    model = _constant_yolov8(tmp_path / "ok.onnx", _predictions(None, (0, 0)))
    code, text = _import([str(model), "--layout", "yolov8", "--classes", "a,b", "--name", "ok", "--samples", "2",
                          "-o", str(tmp_path / "ok")])
    assert code == 0, text


def test_parity_counts_a_nan_where_the_reference_has_a_number_as_an_error() -> None:
    ref = {"out": np.array([1.0, 2.0], np.float32)}
    assert errors(ref, {"out": np.array([1.0, np.nan], np.float32)}) == (float("inf"), float("inf"))
    assert errors(ref, {"out": np.array([1.0, np.inf], np.float32)}) == (float("inf"), float("inf"))
    same = {"out": np.array([np.nan, 2.0], np.float32)}
    assert errors(same, {"out": np.array([np.nan, 2.0], np.float32)}) == (0.0, 0.0)  # the same NaN: equal
    assert errors(ref, {"out": np.array([1.0, 2.5], np.float32)}) == (0.5, 0.25)


def test_class_indices_outside_the_named_classes_are_refused(tmp_path: Path) -> None:
    """An end-to-end head returning class 2 with two classes named: every item would be UNSCREENED."""
    model = build("end2end", tmp_path / "e.onnx")  # classes 1, 1, 2, 0
    code, text = _import([str(model), "--layout", "end2end", "--classes", "gun,knife", "--name", "e",
                          "--samples", "2", "-o", str(tmp_path / "b")])
    assert code == 1, text
    assert "class indices 0..2" in text and "2 classes are named (gun, knife)" in text
    assert not (tmp_path / "b").exists()


def test_class_names_empty_or_holding_equals_and_a_broken_metadata_yaml(tmp_path: Path) -> None:
    from export.errors import ExportError
    from export.import_detector import parse_threat_classes

    # "a=b" is a class: named alone, or with a threshold after the last "=".
    assert parse_threat_classes(["a=b"], ("a=b", "c"), 0.25) == {"a=b": 0.25}
    assert parse_threat_classes(["a=b=0.4", " c = 0.5"], ("a=b", "c"), 0.25) == {"a=b": 0.4, "c": 0.5}
    for bad, why in (("c=", "'' is not a number"), ("c=x", "'x' is not a number"), ("d", "'d' is not a class")):
        try:
            parse_threat_classes([bad], ("a=b", "c"), 0.25)
        except ExportError as exc:
            assert why in str(exc), (bad, exc)
        else:
            raise AssertionError(f"{bad!r} accepted")

    model = build("yolov8", tmp_path / "y8.onnx")
    code, text = _import([str(model), "--layout", "yolov8", "--classes", "gun,knife,", "--name", "x",
                          "-o", str(tmp_path / "b")])
    assert code == 1 and "class names must not be empty" in text, text

    import openvino as ov

    ir = tmp_path / "ir" / "model.xml"
    ov.save_model(ov.convert_model(str(model)), str(ir))
    (ir.parent / "metadata.yaml").write_text("names: [unclosed\n")
    code, text = _import([str(ir), "--layout", "yolov8", "--name", "x", "-o", str(tmp_path / "b")])
    assert code == 1 and "metadata.yaml: the exporter's metadata beside the IR is not readable YAML" in text, text
    assert "Traceback" not in text


def test_a_refused_output_lists_the_model_outputs_to_map(tmp_path: Path) -> None:
    """A YOLOv8-seg style export whose mask prototypes come first: the refusal names every output, so the user
    sees which one to give with --output."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["protos", "z"], ["output1"]),
             helper.make_node("Add", ["pred", "z"], ["output0"])]
    inits = [numpy_helper.from_array(np.float32(0.0), "zero"),
             numpy_helper.from_array(np.zeros((1, 32, 16, 16), np.float32), "protos"),
             numpy_helper.from_array(_predictions(None, (0, 0)), "pred")]
    graph = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 32, 16, 16]),
                               helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "seg.onnx"))
    args = [str(tmp_path / "seg.onnx"), "--layout", "yolov8", "--classes", "a,b", "--name", "s", "--samples", "2"]
    code, text = _import([*args, "-o", str(tmp_path / "b")])
    assert code == 1 and "output 'output1' has shape [1, 32, 16, 16]" in text, text
    assert "the model's outputs are output1 [1, 32, 16, 16] float32, output0 [1, 6, 10] float32" in text
    assert "--output FIELD=NAME" in text
    code, text = _import([*args, "-o", str(tmp_path / "ok"), "--output", "predictions=output0"])
    assert code == 0, text


def test_zero_generated_parity_inputs_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    model = build("yolov8", tmp_path / "y8.onnx")
    code, text = _import([str(model), "--layout", "yolov8", "--classes", ",".join(CLASSES), "--name", "x",
                          "--samples", "0", "-o", str(tmp_path / "b")])
    assert code == 2 and "--samples" in text, text  # click's usage error, before any conversion
    assert not (tmp_path / "b").exists()
