"""Real ONNX detectors in every foreign output layout, built with onnx.helper (no torch), whose boxes are computed
from the input: the one box is the bounding box of the pixels whose channel 0 lies below a threshold (in the
model's own units), so a letterbox, channel order, scale or mean/std the runtime got wrong moves or loses it.

Every graph returns, besides that box (class ``CLASS``, score ``SCORE``), a near-duplicate one pixel off (score
``DUP_SCORE``, same class: class-aware NMS must remove it), a box of another class elsewhere below the score
threshold, and a zero box with a tiny score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ("gun", "knife", "wrench")
CLASS = 1
SCORE = 0.9
DUP_SCORE = 0.8
LOW = (5.0, 5.0, 20.0, 20.0)
"""A candidate of class 2 at score 0.1 (below the default score threshold 0.25)."""
OPSET = 13


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value: np.ndarray | list[float] | float, dtype: type = np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: object) -> str:
        self._n += 1
        name = f"t{self._n}"
        self.nodes.append(helper.make_node(kind, inputs, [name], **attrs))
        return name


def _found_box(g: _Graph, x: str, height: int, width: int, threshold: float, chw: bool) -> str:
    """[4] float: x1, y1, x2, y2 (model pixels) of the pixels with channel 0 below ``threshold``."""
    plane = g.op("Gather", [x, g.const(0, np.int64)], axis=0 if chw else 1)  # [H, W] or [1, H, W]
    if not chw:
        plane = g.op("Squeeze", [plane, g.const([0], np.int64)])
    mask = g.op("Cast", [g.op("Less", [plane, g.const(threshold)])], to=TensorProto.FLOAT)  # [H, W]
    rows = g.op("ReduceMax", [mask], axes=[1], keepdims=0)  # [H]
    cols = g.op("ReduceMax", [mask], axes=[0], keepdims=0)  # [W]
    big = 1e6

    def lo_hi(profile: str, n: int) -> tuple[str, str]:
        idx = g.const(np.arange(n, dtype=np.float32))
        lo_vals = g.op("Add", [g.op("Mul", [profile, idx]),
                               g.op("Mul", [g.op("Sub", [g.const(1.0), profile]), g.const(big)])])
        hi_vals = g.op("Mul", [profile, g.op("Add", [idx, g.const(1.0)])])
        return (g.op("ReduceMin", [lo_vals], axes=[0], keepdims=1), g.op("ReduceMax", [hi_vals], axes=[0], keepdims=1))

    y1, y2 = lo_hi(rows, height)
    x1, x2 = lo_hi(cols, width)
    return g.op("Concat", [x1, y1, x2, y2], axis=0)


def _cxcywh(g: _Graph, box: str) -> str:
    top_left = g.op("Gather", [box, g.const([0, 1], np.int64)], axis=0)
    bottom_right = g.op("Gather", [box, g.const([2, 3], np.int64)], axis=0)
    centre = g.op("Mul", [g.op("Add", [top_left, bottom_right]), g.const(0.5)])
    return g.op("Concat", [centre, g.op("Sub", [bottom_right, top_left])], axis=0)


def _rows(g: _Graph, layout: str, box: str, nc: int, scale_xy: tuple[float, float]) -> list[str]:
    """Candidate vectors in the layout's per-candidate order (before stacking)."""
    sx, sy = scale_xy
    norm = g.const([1 / sx, 1 / sy, 1 / sx, 1 / sy])
    dup = g.op("Add", [box, g.const([1.0, 0.0, 1.0, 0.0])])
    low = g.const(list(LOW))
    zero = g.const([0.0, 0.0, 0.0, 0.0])
    geoms = [box, dup, low, zero]
    scores = [SCORE, DUP_SCORE, 0.1, 0.001]
    labels = [CLASS, CLASS, 2, 0]
    out = []
    for geom, score, label in zip(geoms, scores, labels, strict=True):
        if layout in ("yolov8", "yolov5"):
            cls = np.zeros(nc, np.float32)
            cls[label] = score
            tail = cls if layout == "yolov8" else np.concatenate([[1.0], cls]).astype(np.float32)
            out.append(g.op("Concat", [_cxcywh(g, geom), g.const(tail)], axis=0))
        elif layout == "end2end":
            out.append(g.op("Concat", [g.op("Mul", [geom, norm]), g.const([score, float(label)])], axis=0))
        else:  # dets-labels, torchvision
            out.append(g.op("Concat", [geom, g.const([score])], axis=0))
    return out


def build(layout: str, path: Path, *, height: int = 128, width: int = 128, threshold: float = 0.3,
          channels: int = 3, nc: int = len(CLASSES), normalised: bool = False,
          metadata: dict[str, str] | None = None, batch_axis: bool = True) -> Path:
    """Write a detector in ``layout`` (yolov8, yolov5, end2end, dets-labels, torchvision) to ``path``."""
    g = _Graph()
    chw = not batch_axis
    in_shape = [channels, height, width] if chw else [1, channels, height, width]
    box = _found_box(g, "images", height, width, threshold, chw)
    rows = _rows(g, layout, box, nc, (width, height) if normalised else (1.0, 1.0))
    labels = np.array([CLASS, CLASS, 2, 0], np.int64)
    outputs: list[onnx.ValueInfoProto] = []
    n = len(rows)

    def stack(vectors: list[str], axis: int) -> str:
        return g.op("Concat", [g.op("Unsqueeze", [v, g.const([axis], np.int64)]) for v in vectors], axis=axis)

    def rename(src: str, name: str) -> None:
        g.nodes.append(helper.make_node("Identity", [src], [name]))

    if layout == "yolov8":
        rename(g.op("Unsqueeze", [stack(rows, 1), g.const([0], np.int64)]), "output0")
        outputs.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, n]))
    elif layout in ("yolov5", "end2end"):
        k = 5 + nc if layout == "yolov5" else 6
        rename(g.op("Unsqueeze", [stack(rows, 0), g.const([0], np.int64)]), "output0")
        outputs.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, n, k]))
    elif layout == "dets-labels":
        rename(g.op("Unsqueeze", [stack(rows, 0), g.const([0], np.int64)]), "dets")
        rename(g.const(labels[None], np.int64), "labels")
        outputs += [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, n, 5]),
                    helper.make_tensor_value_info("labels", TensorProto.INT64, [1, n])]
    elif layout == "torchvision":
        table = stack(rows, 0)  # [K, 5]
        rename(g.op("Slice", [table, g.const([0], np.int64), g.const([4], np.int64), g.const([1], np.int64)]),
               "boxes")
        rename(g.op("Squeeze", [g.op("Slice", [table, g.const([4], np.int64), g.const([5], np.int64),
                                               g.const([1], np.int64)]), g.const([1], np.int64)]), "scores")
        rename(g.const(labels, np.int64), "labels")
        outputs += [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
                    helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"]),
                    helper.make_tensor_value_info("labels", TensorProto.INT64, ["K"])]
    else:
        raise ValueError(layout)
    graph = helper.make_graph(g.nodes, f"{layout}-test", [helper.make_tensor_value_info(
        "images", TensorProto.FLOAT, in_shape)], outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="xray-edge-tests")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def ultralytics_metadata(height: int, width: int, names: tuple[str, ...] = CLASSES) -> dict[str, str]:
    """metadata_props as ``yolo export format=onnx`` writes them (str() of Python values)."""
    return {"description": "Ultralytics YOLOv8n model", "author": "Ultralytics", "version": "8.3.0",
            "task": "detect", "stride": "32", "batch": "1", "imgsz": str([height, width]),
            "names": str(dict(enumerate(names)))}
