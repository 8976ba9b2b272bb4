"""The PaDiM bundle's ONNX graph, edited with ``onnx`` only (no torch on the box).

Two edits make ``edge fit`` possible without re-exporting anything:

* :func:`embedding_model`: the graph cut at the tensor the Mahalanobis part starts from (the left operand of
  the ``Sub`` whose right operand is ``padim_mean``), made the only output. That tensor is the backbone
  embedding (N, P, D) the Gaussian was fitted on, so the committed bundle needs no extra output.
* :func:`set_gaussian`: the two named initialisers ``padim_mean`` (P, D) and ``padim_inv_cov`` (P, D, D)
  replaced by a refit, shapes checked.

:func:`set_meta` updates the xray-edge metadata the export toolchain stores in the file (``metadata_props`` key
``xray_edge.meta``), so a refitted file never carries its parent's threshold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from edge_tools.fit.errors import FitError

MEAN = "padim_mean"
INV_COV = "padim_inv_cov"
EMBEDDING = "embedding"
META_KEY = "xray_edge.meta"
"""The export toolchain's metadata key (``export.meta.META_KEY``; the runtime may not import export)."""
_PASS_THROUGH = {"Unsqueeze", "Reshape", "Cast", "Identity", "Expand"}


def _initialiser(model: onnx.ModelProto, key: str) -> onnx.TensorProto | None:
    return next((i for i in model.graph.initializer if i.name == key or i.name.endswith("." + key)), None)


def gaussian_shapes(model: onnx.ModelProto, source: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``padim_mean`` and ``padim_inv_cov``; FitError when the model is not PaDiM-style."""
    found = {key: _initialiser(model, key) for key in (MEAN, INV_COV)}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise FitError(f"{source}: not a PaDiM-style scorer: its ONNX graph has no initialiser "
                       f"{' or '.join(missing)}; `edge fit` refits only the Gaussian of a PaDiM bundle "
                       "(e.g. models/scorer-padim)")
    mean, inv = found[MEAN], found[INV_COV]
    assert mean is not None and inv is not None
    p, d = tuple(mean.dims)
    if tuple(inv.dims) != (p, d, d):
        raise FitError(f"{source}: {INV_COV} has shape {tuple(inv.dims)}, expected {(p, d, d)} for {MEAN} "
                       f"{(p, d)}")
    return (p, d), (p, d, d)


def embedding_tensor(model: onnx.ModelProto, source: str) -> str:
    """Name of the tensor the Mahalanobis part subtracts ``padim_mean`` from (the embedding)."""
    mean = _initialiser(model, MEAN)
    if mean is None:
        gaussian_shapes(model, source)
    assert mean is not None
    derived = {mean.name}
    for node in model.graph.node:  # nodes are topologically sorted
        if node.op_type in _PASS_THROUGH and node.input and node.input[0] in derived:
            derived.update(node.output)
        elif node.op_type == "Sub" and len(node.input) == 2 and node.input[1] in derived:
            return str(node.input[0])
    raise FitError(f"{source}: cannot find where the graph subtracts {MEAN} from the embedding; this PaDiM "
                   "graph has an unknown layout (re-export it with `edge-export train padim`)")


def embedding_model(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A model with the scorer's input and one output ``embedding`` (N, P, D): the backbone part only."""
    name = embedding_tensor(model, source)
    inputs = [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    cut = onnx.utils.Extractor(model).extract_model(inputs, [name])
    for node in cut.graph.node:
        node.output[:] = [EMBEDDING if o == name else o for o in node.output]
        node.input[:] = [EMBEDDING if i == name else i for i in node.input]
    cut.graph.output[0].name = EMBEDDING
    return cut


def set_gaussian(model: onnx.ModelProto, mean: NDArray[np.float32], inv_cov: NDArray[np.float32],
                 source: str) -> None:
    """Replace the Gaussian in place (shapes must match the bundle's)."""
    mean_shape, inv_shape = gaussian_shapes(model, source)
    for key, value, shape in ((MEAN, mean, mean_shape), (INV_COV, inv_cov, inv_shape)):
        if value.shape != shape:
            raise FitError(f"{source}: refitted {key} has shape {value.shape}, the graph's is {shape}")
        init = _initialiser(model, key)
        assert init is not None
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), init.name))


def read_meta(model: onnx.ModelProto) -> dict[str, Any] | None:
    """The xray-edge metadata stored by the export toolchain, or None."""
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            data: dict[str, Any] = json.loads(prop.value)
            return data
    return None


def set_meta(model: onnx.ModelProto, thresholds: Mapping[str, float], normalisation: Mapping[str, Any]) -> None:
    """Write the new threshold and normalisation into the file's xray-edge metadata (when it has some)."""
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            data = json.loads(prop.value)
            data["thresholds"] = dict(thresholds)
            data["normalisation"] = dict(normalisation)
            prop.value = json.dumps(data, sort_keys=True)
