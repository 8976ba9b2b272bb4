"""Bring your own detector: an ONNX or OpenVINO detector exported by another tool, made into a verified bundle.

``edge-export import-detector`` (docs/bring-your-own.md). Standard exporters (Ultralytics ``yolo export``,
torchvision + ``torch.onnx``, mmdeploy) leave their output layout as it is (:class:`~edge.bundles.manifest.
LayoutKind`) and pre-process outside the graph. This module states both in the bundle instead of wrapping the
model again: ``layout`` tells the runtime's decoder (``edge.bundles.layouts``) how to read the outputs, and the
input contract makes the runtime composer feed exactly what the exporter's pipeline fed:

* size (flag, Ultralytics ``imgsz`` metadata, or the graph's static input shape), letterbox (centred, or top-left
  as MMDetection pads), or stretch;
* channel order (``pc`` RGB / ``bgr``), or grey channels (``h``, repeated for a 3-channel grey model);
* scale and mean/std in the exporter's own units: the model value is ``(x * scale - mean) / std`` with ``x`` in
  [0, 1], which is the contract's ``(x - mean/scale) / (std/scale)``;
* the letterbox pad value in 8-bit units (Ultralytics 114), i.e. ``pad_value = pad / 255`` before normalising.

The model files are kept as given (plus the xray-edge metadata, and a leading batch axis for a ``[3, H, W]``
input as torchvision exports have); the OpenVINO IR is converted from the ONNX file with FP32 weights. Parity:
ONNX Runtime on the file as given is the reference; the bundle's ONNX and OpenVINO models run the same inputs
(a folder of images composed through the contract, or generated parcels), compared number by number and decision
by decision on the decoded candidates. INT8 is added by :func:`export.add_int8.add_int8`, the path every bundle
takes. Class names come from flags or the exporter's metadata (Ultralytics ``names``); ``--threat-class`` writes
bundle.yaml ``threat_classes`` (shared contract 1).
"""

from __future__ import annotations

import ast
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundles.layouts import LayoutError, decode
from edge.bundles.loader import Bundle
from edge.bundles.manifest import (
    LAYOUT_FIELDS,
    BoxUnits,
    DetectorLayout,
    LayoutKind,
    ModelFormat,
    OutputSpec,
    Precision,
)
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, NMS_IOU_KEY, DetectorOutputs, Role
from edge.contracts import Channel, InputContract, ResizePolicy
from edge.errors import EdgeError
from export.bundle import BundleModel, make_bundle, model_files
from export.calibration import InputSet, load_inputs
from export.errors import ExportError
from export.meta import ExportMeta, write_onnx_meta
from export.parity import Candidate, run_candidate, verify

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True, slots=True)
class InputSpec:
    """The pre-processing the exporter's pipeline applied, in its own units; None = from metadata or the graph.

    ``scale``: the model value before mean/std is the [0, 1] image value times ``scale`` (1 for Ultralytics and
    torchvision, 255 for MMDetection). ``mean``/``std`` in those units, in the model's channel order. ``pad``:
    the letterbox fill in 8-bit units (Ultralytics and RTMDet 114).
    """

    size: tuple[int, int] | None = None
    resize: ResizePolicy = ResizePolicy.LETTERBOX
    channels: tuple[Channel, ...] | None = None
    bgr: bool = False
    scale: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pad: float = 114.0


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """Everything ``edge-export import-detector`` was told."""

    model: Path
    layout: LayoutKind
    out: Path
    name: str
    version: str = "1"
    boxes: BoxUnits = BoxUnits.PIXELS
    input: InputSpec = InputSpec()
    classes: tuple[str, ...] | None = None
    threat_classes: tuple[str, ...] = ()
    """``NAME`` or ``NAME=THRESHOLD`` as given on the command line."""
    outputs: Mapping[str, str] = field(default_factory=dict)
    """Layout field -> graph output name, where the default matching (by name, then order) is wrong."""
    score_threshold: float = 0.25
    nms_iou: float = 0.7
    images: Path | None = None
    samples: int = 8
    calibration: Path | None = None
    training_data: str = ""
    force: bool = False
    overwrite: bool = False
    threads: int = 2


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the model file says about itself: its one input, its outputs and the exporter's metadata."""

    path: Path
    input_name: str
    input_shape: tuple[int | None, ...]
    outputs: tuple[tuple[str, tuple[int | None, ...], str], ...]
    metadata: Mapping[str, str]


def inspect_model(path: Path) -> ModelInfo:
    """Read input, outputs and metadata (ONNX ``metadata_props``; an IR's ``metadata.yaml`` beside it, which
    Ultralytics' OpenVINO export writes)."""
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    if path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and others on a file that is not a model
            raise ExportError(f"{path}: not a readable ONNX model: {exc}") from exc
        init = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in init]

        def dims(value: Any) -> tuple[int | None, ...]:
            return tuple(int(d.dim_value) if d.HasField("dim_value") else None
                         for d in value.type.tensor_type.shape.dim)

        outputs = tuple((o.name, dims(o), onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name)
                        for o in model.graph.output)
        meta = {p.key: p.value for p in model.metadata_props}
        if len(inputs) != 1:
            raise ExportError(f"{path}: a detector takes one image input; this model has {len(inputs)} "
                              f"({', '.join(i.name for i in inputs)})")
        return ModelInfo(path, inputs[0].name, dims(inputs[0]), outputs, meta)
    if path.suffix == ".xml":
        import openvino as ov

        try:
            model = ov.Core().read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses on a broken IR
            raise ExportError(f"{path}: not a readable OpenVINO IR: {exc}") from exc
        if len(model.inputs) != 1:
            raise ExportError(f"{path}: a detector takes one image input; this model has {len(model.inputs)}")

        def ov_dims(port: Any) -> tuple[int | None, ...]:
            shape = port.get_partial_shape()
            return tuple(int(d.get_length()) if d.is_static else None for d in shape)

        outs = tuple((o.get_any_name(), ov_dims(o), str(o.get_element_type().to_dtype())) for o in model.outputs)
        meta = _yaml_metadata(path.parent / "metadata.yaml")
        return ModelInfo(path, model.inputs[0].get_any_name(), ov_dims(model.inputs[0]), outs, meta)
    raise ExportError(f"{path}: expected an .onnx file or an OpenVINO .xml")


def _yaml_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ExportError(f"{path}: the exporter's metadata beside the IR is not readable YAML ({exc}); fix or "
                          "remove it and give --classes (and --size)") from exc
    return {str(k): repr(v) if not isinstance(v, str) else v for k, v in data.items()} if isinstance(data, dict) \
        else {}


@dataclass(frozen=True, slots=True)
class ExporterHints:
    """What an exporter's metadata said (Ultralytics writes ``names``, ``imgsz``, ``stride``)."""

    classes: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None
    stride: int | None = None
    source: str = ""


def _literal(text: str, key: str, where: Path) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ExportError(f"{where}: metadata {key!r} = {text[:80]!r} is not readable ({exc})") from exc


def exporter_hints(info: ModelInfo) -> ExporterHints:
    """Class names, input size and stride from the exporter's metadata, when it wrote them."""
    meta = info.metadata
    classes = size = stride = None
    if "names" in meta:
        names = _literal(meta["names"], "names", info.path)
        if isinstance(names, dict):
            keys = sorted(int(k) for k in names)
            if keys != list(range(len(keys))):
                raise ExportError(f"{info.path}: metadata names has indices {keys}, expected 0..{len(keys) - 1}")
            classes = tuple(str(names[k]) for k in keys)
        elif isinstance(names, (list, tuple)):
            classes = tuple(str(n) for n in names)
    if "imgsz" in meta:
        imgsz = _literal(meta["imgsz"], "imgsz", info.path)
        if isinstance(imgsz, int):
            size = (imgsz, imgsz)
        elif isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
            size = (int(imgsz[0]), int(imgsz[1]))
    if "stride" in meta:
        stride_value = _literal(meta["stride"], "stride", info.path)
        stride = int(stride_value) if isinstance(stride_value, (int, float)) else None
    source = meta.get("author", "")
    return ExporterHints(classes, size, stride, source)


def resolve_contract(info: ModelInfo, spec: InputSpec, hints: ExporterHints) -> InputContract:
    """The runtime input contract that reproduces the exporter's pre-processing."""
    shape = info.input_shape
    if len(shape) not in (3, 4):
        raise ExportError(f"{info.path}: input {info.input_name!r} has shape {_fmt(shape)}; expected [N, C, H, W] "
                          "or [C, H, W]")
    c_graph, h_graph, w_graph = shape[-3:]
    size = spec.size or hints.size or ((h_graph, w_graph) if h_graph and w_graph else None)
    if size is None:
        raise ExportError(f"{info.path}: input {info.input_name!r} has a dynamic size {_fmt(shape)} and the model "
                          "metadata names none: give --size HEIGHTxWIDTH")
    if h_graph and w_graph and (h_graph, w_graph) != size:
        raise ExportError(f"{info.path}: --size {size[0]}x{size[1]} but the graph's input is fixed at "
                          f"{h_graph}x{w_graph}")
    if hints.stride and (size[0] % hints.stride or size[1] % hints.stride):
        raise ExportError(f"{info.path}: size {size[0]}x{size[1]} is not a multiple of the model stride "
                          f"{hints.stride}")
    channels = spec.channels
    if channels is None:
        channels = (Channel.BGR if spec.bgr else Channel.PC,) if (c_graph or 3) == 3 else (Channel.H,) * (c_graph or 1)
    elif spec.bgr:
        channels = tuple(Channel.BGR if c is Channel.PC else c for c in channels)
    n = sum(c.width for c in channels)
    if c_graph and n != c_graph:
        raise ExportError(f"{info.path}: input {info.input_name!r} takes {c_graph} channels; "
                          f"--channels {','.join(map(str, channels))} gives {n}")
    if spec.scale <= 0:
        raise ExportError(f"--scale must be positive, got {spec.scale}")
    for what, values in (("--mean", spec.mean), ("--std", spec.std)):
        if values and len(values) not in (1, n):
            raise ExportError(f"{what}: {len(values)} values for {n} input channels")
    mean = tuple(spec.mean) * (n if len(spec.mean) == 1 else 1) if spec.mean else ()
    std = tuple(spec.std) * (n if len(spec.std) == 1 else 1) if spec.std else ()
    if spec.scale != 1.0 or mean or std:
        mean = tuple(m / spec.scale for m in (mean or (0.0,) * n))
        std = tuple(s / spec.scale for s in (std or (1.0,) * n))
    if not 0.0 <= spec.pad <= 255.0:
        raise ExportError(f"--pad-value is in 8-bit units (0..255), got {spec.pad}")
    try:
        return InputContract(channels=channels, height=size[0], width=size[1], resize=spec.resize, mean=mean,
                             std=std, pad_value=spec.pad / 255.0, input_name=info.input_name)
    except ValueError as exc:
        raise ExportError(f"input contract: {exc}") from exc


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def match_outputs(info: ModelInfo, layout: LayoutKind, given: Mapping[str, str]) -> tuple[OutputSpec, ...]:
    """Which graph output fills each layout field: ``given`` first, then an output named like the field, then
    the remaining outputs in graph order. Outputs the layout does not read get no field (segmentation protos)."""
    fields = LAYOUT_FIELDS[layout]
    names = [o[0] for o in info.outputs]
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ExportError(f"--output {unknown[0]}=…: the {layout} layout reads {', '.join(fields)}")
    chosen: dict[str, str] = {}
    for f, name in given.items():
        if name not in names:
            raise ExportError(f"--output {f}={name}: the model has no output {name!r} (it has {', '.join(names)})")
        chosen[f] = name
    for f in fields:
        if f not in chosen and f in names and f not in chosen.values():
            chosen[f] = f
    rest = [n for n in names if n not in chosen.values()]
    for f in fields:
        if f not in chosen:
            if not rest:
                raise ExportError(f"{info.path}: the {layout} layout reads {len(fields)} output(s) "
                                  f"({', '.join(fields)}); the model has {len(names)}: {', '.join(names)}")
            chosen[f] = rest.pop(0)
    _check_score_dtypes(info, layout, chosen)
    field_of = {name: f for f, name in chosen.items()}
    return tuple(OutputSpec(name=name, field=field_of.get(name), shape=tuple("?" if d is None else d for d in shape),
                            dtype=dtype)
                 for name, shape, dtype in info.outputs)


def _check_score_dtypes(info: ModelInfo, layout: LayoutKind, chosen: Mapping[str, str]) -> None:
    """Refuse an integer output where the layout reads boxes or scores: such a model's outputs are matched to the
    wrong fields (torchvision returns boxes, labels, scores in that order, and an export that names them boxes,
    scores, labels swaps the last two). Shapes cannot tell [K] labels from [K] scores, and parity cannot either
    (both sides decode the same swap), so without this the bundle would read class indices as scores."""
    dtypes = {name: dtype for name, _, dtype in info.outputs}
    for f, name in chosen.items():
        if f == "labels":
            continue  # class indices: integers, or floats in some exports
        try:
            integer = np.dtype(dtypes[name]).kind in "iub"
        except TypeError:
            continue  # a type numpy does not name: the shape and parity checks judge it
        if integer:
            other = chosen.get("labels")
            hint = (f"; they look swapped: --output scores={other} --output labels={name}"
                    if f == "scores" and other is not None and _is_float(dtypes[other]) else "")
            order = " (torchvision returns boxes, labels, scores in that order)" if layout is LayoutKind.TORCHVISION \
                else ""
            raise ExportError(f"{info.path}: output {name!r} ({dtypes[name]}) would be read as the {layout} "
                              f"layout's {f!r}, which must be floating point: an integer output holds class indices, "
                              f"not {f}{hint or _outputs_hint(info)}{order}")


def _is_float(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def check_layout_shapes(info: ModelInfo, outputs: Sequence[OutputSpec], layout: DetectorLayout,
                        classes: Sequence[str], contract: InputContract) -> None:
    """Decode zero arrays of the outputs' static shapes (dynamic axes as 1): a layout that cannot fit the model
    is refused here, naming the output and its shape, before anything is converted."""
    shapes = {name: shape for name, shape, _ in info.outputs}
    named = {o.field: (o.name, np.zeros([d or 1 for d in shapes[o.name]], np.float32))
             for o in outputs if o.field is not None}
    try:
        decode(layout, named, len(classes), contract.height, contract.width, str(info.path))
    except LayoutError as exc:
        raise ExportError(f"{exc}{_outputs_hint(info)}") from exc


def _outputs_hint(info: ModelInfo) -> str:
    """What to do when the model has more outputs than one: they may just be matched to the wrong fields."""
    if len(info.outputs) < 2:
        return ""
    listed = ", ".join(f"{name} {_fmt(shape)} {dtype}" for name, shape, dtype in info.outputs)
    return f"; the model's outputs are {listed}: if another one is meant, map it with --output FIELD=NAME"


def parse_threat_classes(items: Sequence[str], classes: Sequence[str], default: float) -> dict[str, float]:
    """``NAME`` or ``NAME=THRESHOLD`` (the threshold defaults to the bundle's score threshold), each NAME one
    of ``classes`` and each THRESHOLD in [0, 1]."""
    out: dict[str, float] = {}
    for item in items:
        # A class name may itself hold "=": the whole item names a class, else the last "=" starts the threshold.
        name, sep, value = (item, "", "") if item.strip() in classes else item.rpartition("=")
        if not sep:
            name = item
        name = name.strip()
        if name not in classes:
            import difflib

            close = difflib.get_close_matches(name, list(classes), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ExportError(f"--threat-class {item!r}: {name!r} is not a class of this model{hint}; its classes "
                              f"are: {', '.join(classes)}")
        try:
            threshold = float(value) if sep else default
        except ValueError:
            raise ExportError(f"--threat-class {item!r}: {value!r} is not a number") from None
        if not 0.0 <= threshold <= 1.0:
            raise ExportError(f"--threat-class {item!r}: the threshold must lie in [0, 1]")
        if name in out:
            raise ExportError(f"--threat-class {name!r} is given twice")
        out[name] = threshold
    return out


def generated_images(n: int, seed: int = 0, height: int = 480, width: int = 640) -> list[npt.NDArray[np.uint8]]:
    """Parcel-like RGB pictures for parity when no images are given: white (air) with 3 to 8 filled rectangles
    of random colour and size, so that a detector fires on some candidates and decisions really split (uniform
    noise gives a detector nothing to find)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.full((height, width, 3), 255, np.uint8)
        for _ in range(int(rng.integers(3, 9))):
            w, h = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            colour = tuple(int(v) for v in rng.integers(0, 230, 3))
            cv2.rectangle(img, (x, y), (x + w, y + h), colour, thickness=-1)
        out.append(img)
    return out


def read_images(folder: Path, limit: int | None = None) -> list[npt.NDArray[np.uint8]]:
    """Images of ``folder`` (sorted), as the service gets them: RGB colour, or grey when R = G = B."""
    import cv2

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ExportError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for p in files[:limit]:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ExportError(f"{p}: unreadable image")
        if img.dtype != np.uint8:
            img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if img.ndim == 3 and np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1],
                                                                                              img[:, :, 2]):
            img = np.ascontiguousarray(img[:, :, 0])
        elif img.ndim == 3:
            img = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        out.append(np.asarray(img, dtype=np.uint8))
    return out


def compose_images(images: Sequence[npt.NDArray[np.uint8]], contract: InputContract,
                   where: str) -> npt.NDArray[np.float32]:
    """Each image through the service's own conditioning of a picture and the runtime composer (a grey picture
    for a colour model as R = G = B)."""
    from edge.condition.composer import compose
    from edge.condition.degraded import from_grey, from_pseudo_colour

    colour = any(c in (Channel.PC, Channel.BGR) for c in contract.channels)
    batches = []
    for i, img in enumerate(images):
        if img.ndim == 2 and colour:  # a grey picture for a colour model: R = G = B, as `edge eval` hands it on
            img = np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
        try:
            image = from_pseudo_colour(img) if img.ndim == 3 else from_grey(img)
            batches.append(compose(image, contract))
        except EdgeError as exc:
            raise ExportError(f"{where}: image {i}: {exc}") from exc
    return np.concatenate(batches, axis=0)


def input_set(folder: Path | None, contract: InputContract, samples: int, seed: int = 0) -> InputSet:
    """Model inputs from a folder (images, or .npy/.npz items as ``edge-export quantize`` reads them) or
    generated parcels."""
    if folder is None:
        images = generated_images(samples, seed)
        if not any(c in (Channel.PC, Channel.BGR) for c in contract.channels):  # a grey model: grey parcels
            images = [np.ascontiguousarray(img.mean(axis=2).astype(np.uint8)) for img in images]
        return InputSet(compose_images(images, contract, "generated"), None, f"generated parcels (seed {seed})")
    if folder.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
        return load_inputs(folder, contract)
    return InputSet(compose_images(read_images(folder), contract, str(folder)), None, str(folder))


def add_batch_axis(src: Path, dst: Path) -> None:
    """Write ``src`` with a leading batch axis of 1 on its ``[C, H, W]`` input (torchvision exports take one
    image without one; the runtime feeds ``[N, C, H, W]``): the new input is squeezed into the old one."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = model.graph
    init = {i.name for i in graph.initializer}
    first = next(i for i in graph.input if i.name not in init)
    old, inner = first.name, first.name + "__chw"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = inner
    for out in graph.output:
        if out.name == old:
            raise ExportError(f"{src}: the input is also an output; cannot add a batch axis")
    dims: list[int | str] = [1]
    for d in first.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    new_input = helper.make_tensor_value_info(old, first.type.tensor_type.elem_type, dims)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        axes = helper.make_tensor(inner + "_axes", onnx.TensorProto.INT64, [1], [0])
        graph.initializer.append(axes)
        squeeze = helper.make_node("Squeeze", [old, axes.name], [inner], name=inner + "_squeeze")
    else:
        squeeze = helper.make_node("Squeeze", [old], [inner], axes=[0], name=inner + "_squeeze")
    index = list(graph.input).index(first)
    graph.input.remove(first)
    graph.input.insert(index, new_input)
    graph.node.insert(0, squeeze)
    onnx.save(model, str(dst))


def _prepare_files(info: ModelInfo, meta: ExportMeta, work: Path,
                   say: Callable[[str], None]) -> tuple[Path, list[BundleModel]]:
    """(the reference file, the bundle's model files with the xray-edge metadata)."""
    from export.onnx_to_openvino import convert_to_openvino, save_ir

    if info.path.suffix == ".onnx":
        onnx_path = work / "model.onnx"
        reference = info.path
        if len(info.input_shape) == 3:
            say(f"{info.path.name}: input {info.input_name} is [C, H, W]; adding a batch axis of 1")
            add_batch_axis(info.path, onnx_path)
            reference = onnx_path.with_name("reference.onnx")
            shutil.copy2(onnx_path, reference)
        elif len(model_files(info.path)) > 1:  # weights in external data files: inlined (a detector is < 2 GB)
            import onnx

            onnx.save(onnx.load(str(info.path)), str(onnx_path))
        else:
            shutil.copy2(info.path, onnx_path)
        write_onnx_meta(onnx_path, meta)
        xml = work / "model.xml"
        say(f"converting {info.path.name} to OpenVINO FP32 …")
        try:
            convert_to_openvino(onnx_path, xml, Precision.FP32)
        except ExportError as exc:
            raise ExportError(f"{info.path}: OpenVINO cannot convert it ({exc}); the bundle needs an OpenVINO "
                              "model (the box's backend)") from exc
        return reference, [BundleModel(ModelFormat.ONNX, Precision.FP32, onnx_path),
                           BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)]
    import openvino as ov

    if len(info.input_shape) != 4:
        raise ExportError(f"{info.path}: input {info.input_name} has shape {_fmt(info.input_shape)}; an IR must take "
                          "[N, C, H, W] (import the ONNX file instead)")
    xml = work / "model.xml"
    save_ir(ov.Core().read_model(str(info.path)), meta, xml, compress_to_fp16=False)
    return info.path, [BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)]


def _notes(req: ImportRequest, info: ModelInfo, hints: ExporterHints, contract: InputContract) -> str:
    spec = req.input
    given = (f"scale {spec.scale:g}" + (f", mean {list(spec.mean)}" if spec.mean else "")
             + (f", std {list(spec.std)}" if spec.std else ""))
    source = f" ({hints.source} metadata: names, imgsz)" if hints.source else ""
    return (f"Imported by edge-export import-detector from {info.path.name}{source}: layout {req.layout}, boxes "
            f"{req.boxes}; input {info.input_name} {contract.height}x{contract.width} {contract.resize}, channels "
            f"{','.join(map(str, contract.channels))}, {given}, pad {spec.pad:g}/255. Outputs kept as exported; "
            f"the service decodes them (edge.bundles.layouts), then thresholds, suppresses per class at "
            f"IoU {req.nms_iou:g} and keeps at most models.max_objects boxes.")


def refuse_unusable(model: Path, decoded: DetectorOutputs, classes: Sequence[str], source: str) -> None:
    """Refuse a model whose decoded boxes or scores hold NaN or inf, or whose class indices fall outside
    ``classes``, on the parity inputs: the service makes every such item UNSCREENED (``model_error``,
    ``edge.stages.detect``), so the bundle would screen nothing, and parity cannot see it (the bundle's models
    return the same values as the reference)."""
    if decoded.labels is not None and decoded.labels.size:
        low, high = int(decoded.labels.min()), int(decoded.labels.max())
        if low < 0 or high >= len(classes):
            raise ExportError(f"{model}: the model returns class indices {low}..{high} on the parity inputs "
                              f"({source}) but {len(classes)} classes are named ({', '.join(classes)}); the "
                              "service would make every such item UNSCREENED (model_error). Name every class in "
                              "index order with --classes (a NaN class becomes -1)")
    for what, values in (("boxes", decoded.boxes), ("scores", decoded.scores)):
        finite = np.asarray(np.isfinite(values).reshape(len(values), -1).all(axis=1))
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ExportError(f"{model}: the model returns non-finite {what} (NaN or inf) on {len(bad)} of "
                              f"{len(finite)} inputs ({source}; first: input {int(bad[0])}); the service would "
                              "make every such item UNSCREENED (model_error). Check the export (precision, "
                              "opset, a missing sigmoid or a division by zero) and import it again")


def import_detector(req: ImportRequest, progress: Callable[[str], None] | None = None) -> Bundle:
    """Build, verify and write the bundle (and add INT8 when ``req.calibration`` names images).

    Raises:
        ExportError: the model does not fit the layout or contract (the message names the output and its shape,
            or the flag), a class name is unknown, parity failed (unless forced), or INT8 was refused.
    """
    say = progress or (lambda _m: None)
    if req.out.exists() and (not req.out.is_dir() or any(req.out.iterdir())) and not req.overwrite:
        raise ExportError(f"{req.out}: exists and is not empty (pass --overwrite to replace it)")
    info = inspect_model(req.model)
    hints = exporter_hints(info)
    classes = req.classes or hints.classes
    if not classes:
        raise ExportError(f"{req.model}: the model's metadata names no classes; give --classes NAME,NAME,… in "
                          "the order of its class indices")
    if any(not c.strip() for c in classes):
        raise ExportError(f"class names must not be empty, got {', '.join(repr(c) for c in classes)} (a stray "
                          "comma in --classes?)")
    if len(set(classes)) != len(classes):
        raise ExportError(f"class names must be unique, got {', '.join(classes)}")
    for what, value in (("--score-threshold", req.score_threshold), ("--nms-iou", req.nms_iou)):
        if not 0.0 <= value <= 1.0:
            raise ExportError(f"{what} must lie in [0, 1], got {value}")
    threats = parse_threat_classes(req.threat_classes, classes, req.score_threshold)
    contract = resolve_contract(info, req.input, hints)
    layout = DetectorLayout(req.layout, req.boxes)
    outputs = match_outputs(info, req.layout, req.outputs)
    check_layout_shapes(info, outputs, layout, classes, contract)
    thresholds = {DECISION_THRESHOLD_KEY: req.score_threshold, NMS_IOU_KEY: req.nms_iou}
    meta = ExportMeta(role=Role.DETECTOR, contract=contract, outputs=outputs, thresholds=thresholds,
                      classes=tuple(classes), layout=layout)
    say(f"{req.model.name}: layout {req.layout}, {len(classes)} classes, input {contract.height}x{contract.width} "
        f"{contract.resize} {','.join(map(str, contract.channels))}")
    req.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edge-export-import-", dir=req.out.parent) as tmp:
        work = Path(tmp)
        reference_path, models = _prepare_files(info, meta, work, say)
        inputs = input_set(req.images, contract, req.samples)
        ref_backend = "onnxruntime" if reference_path.suffix == ".onnx" else "openvino"
        say(f"reference: {ref_backend}/fp32 on {reference_path.name}, {len(inputs.inputs)} inputs from "
            f"{inputs.source}")
        try:
            reference = run_candidate(Candidate(ref_backend, Precision.FP32, reference_path), inputs.inputs,
                                      req.threads)
        except EdgeError as exc:
            raise ExportError(f"{req.model}: the model as exported does not run on {ref_backend} with the input "
                              f"contract ({contract.height}x{contract.width}, {contract.tensor_channels} channels): "
                              f"{exc}") from exc
        try:  # the model's real outputs through the decoder once: the clearest place to refuse a wrong layout
            from edge.bundles.layouts import decode_outputs

            decoded = decode_outputs(outputs, layout, reference, len(classes), contract.height, contract.width,
                                     str(req.model))
        except LayoutError as exc:
            raise ExportError(str(exc)) from exc
        refuse_unusable(req.model, decoded, classes, inputs.source)
        candidates = [Candidate("openvino" if m.format is ModelFormat.OPENVINO else "onnxruntime", m.precision,
                                m.path) for m in models]
        as_given = "with a batch axis added" if reference_path != info.path else "as exported"
        report = verify(meta, inputs.inputs, reference,
                        f"{ref_backend}/fp32 ({req.model.name}, {as_given}; {inputs.source})", candidates,
                        threads=req.threads, progress=say)
        bundle = make_bundle(req.out, req.name, req.version, meta, models, report, force=req.force,
                             training_data=req.training_data, notes=_notes(req, info, hints, contract),
                             toolchain_extra={"source": f"{req.layout} detector export ({req.model.name})"},
                             overwrite=req.overwrite, threat_classes=threats)
    if req.calibration is not None:
        from export.add_int8 import add_int8

        items = input_set(req.calibration, contract, 0)
        say(f"INT8: {len(items.inputs)} calibration inputs from {items.source}")
        try:
            bundle = add_int8(req.out, items, req.out, req.version, threads=req.threads, progress=say)
        except (EdgeError, ExportError) as exc:
            raise ExportError(f"INT8: {exc}\nThe FP32 bundle at {req.out} was written and verified; it has no "
                              "INT8 model (run edge-export add-int8 on it with other calibration data, or run FP32)"
                              ) from exc
    return bundle

