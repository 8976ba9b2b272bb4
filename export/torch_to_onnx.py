"""PyTorch → ONNX: build or load the module, export with named inputs/outputs and a dynamic batch axis.

First step of ``edge-export``. Accepts ``pkg.module:factory`` plus a state dict read with
``torch.load(weights_only=True)`` (no pickled code is ever executed), or a saved ``torch.export`` program.
Output names come from the role's output record fields (:mod:`edge.bundles.outputs`), and the export metadata
(:mod:`export.meta`) is written into the file. Never downloads anything.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge.bundles.manifest import OutputSpec
from export.errors import ExportError
from export.meta import ExportMeta, write_onnx_meta

log = logging.getLogger(__name__)


class Exporter(StrEnum):
    """``dynamo`` (torch.export-based, needs onnxscript, opset ≥ 18) or the deprecated TorchScript ``legacy``."""

    DYNAMO = "dynamo"
    LEGACY = "legacy"


def load_module(factory: str, weights: Path | None = None, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``pkg.module:factory(**kwargs)``, load a state dict if given, and switch to eval mode."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise ExportError(f"--factory {factory!r}: expected 'package.module:callable'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"--factory {factory!r}: cannot import: {exc}") from exc
    try:
        model = fn(**dict(kwargs or {}))
    except TypeError as exc:
        raise ExportError(f"--factory {factory!r}: bad arguments {dict(kwargs or {})}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ExportError(f"--factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ExportError(f"{weights}: cannot read as a weights-only state dict: {exc}") from exc
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ExportError(f"{weights}: does not fit {factory}: {exc}") from exc
    return model.eval()


def load_program(path: Path) -> nn.Module:
    """A ``torch.export.save``-d program, as a module (its graph and dynamic shapes are kept)."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ExportError(f"{path}: not a torch.export program: {exc}") from exc
    return program.module()


def _forward_arg(model: nn.Module) -> str:
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        raise ExportError("the model's forward() takes no positional input")
    return params[0].name


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    if isinstance(out, Mapping):
        return tuple(out.values())
    raise ExportError(f"forward() returned {type(out).__name__}; expected a tensor or a tuple of tensors")


def example_input(meta: ExportMeta, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A deterministic input of the contract's shape, values in the normalised [0, 1] range."""
    c = meta.contract
    rng = np.random.default_rng(seed)
    x = rng.random((batch, c.tensor_channels, c.height, c.width), dtype=np.float32)
    if c.mean and c.std:
        x = (x - np.array(c.mean, np.float32)[:, None, None]) / np.array(c.std, np.float32)[:, None, None]
    return torch.from_numpy(x)


def run_torch(model: nn.Module, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Reference outputs by graph name."""
    with torch.inference_mode():
        outs = _as_tuple(model(torch.from_numpy(np.ascontiguousarray(batch))))
    if len(outs) != len(names):
        raise ExportError(f"the model returns {len(outs)} outputs, expected {len(names)} ({', '.join(names)})")
    return {n: t.detach().cpu().numpy() for n, t in zip(names, outs, strict=True)}


def export_onnx(model: nn.Module, meta: ExportMeta, out: Path, exporter: Exporter = Exporter.DYNAMO,
                max_batch: int = 64, opset: int | None = None) -> ExportMeta:
    """Export ``model`` to ``out`` and return the metadata with output shapes/dtypes filled from a dry run.

    Raises ExportError when the model's outputs do not match the role's record fields, or export fails.
    """
    x = example_input(meta)
    names = meta.output_names
    ref = run_torch(model, x.numpy(), names)
    outputs = tuple(
        replace(spec, shape=("N", *ref[spec.name].shape[1:]), dtype=str(ref[spec.name].dtype))
        for spec in meta.outputs
    )
    meta = replace(meta, outputs=outputs)
    input_name = meta.contract.input_name
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter is Exporter.DYNAMO:
                batch = torch.export.Dim("batch", min=1, max=max_batch)
                kwargs: dict[str, Any] = {}
                if opset is not None:
                    kwargs["opset_version"] = opset
                program = torch.onnx.export(
                    model, (x,), dynamo=True, input_names=[input_name], output_names=list(names),
                    dynamic_shapes={_forward_arg(model): {0: batch}}, verbose=False, **kwargs)
                if program is None:
                    raise ExportError("torch.onnx.export returned no program")
                program.save(str(out))
            else:
                torch.onnx.export(
                    model, (x,), str(out), dynamo=False, input_names=[input_name], output_names=list(names),
                    dynamic_axes={input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                    opset_version=opset or 17)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed ({exporter}): {type(exc).__name__}: {exc}") from exc
    _check_names(out, input_name, names)
    write_onnx_meta(out, meta)
    log.info("exported %s (%s, outputs %s)", out, exporter, ", ".join(names))
    return meta


def _check_names(path: Path, input_name: str, names: tuple[str, ...]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in model.graph.input]
    got_out = tuple(o.name for o in model.graph.output)
    if got_in != [input_name] or got_out != names:
        raise ExportError(f"{path}: exported graph has inputs {got_in} and outputs {list(got_out)}; expected "
                          f"[{input_name!r}] and {list(names)}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not dims or dims[0].dim_param == "":
        raise ExportError(f"{path}: batch axis is not dynamic")


def output_specs_for(names: tuple[str, ...], fields: tuple[str | None, ...]) -> tuple[OutputSpec, ...]:
    """Specs for explicit graph names, one role field (or None) each."""
    return tuple(OutputSpec(name=n, field=f, shape=(), dtype="float32") for n, f in zip(names, fields, strict=True))
