"""Calibration, validation and parity inputs, prepared exactly as the runtime prepares them.

A data folder holds conditioned items as ``.npz`` (planes ``t_high``, ``t_low``, ``zeff`` (H, W) float32 and/or
``pc`` (H, W, 3) uint8, optional ``label``), which go through the runtime's own input composer
(``edge.condition.composer``) with the model's input contract; or already composed tensors as ``.npy``
((C, H, W) or (N, C, H, W) float32, labels optional in ``labels.json`` as ``{"<file stem>": int}``), or ``.npz``
with an ``input`` array. Mixing is allowed. Nothing here re-implements pre-processing.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.contracts import InputContract
from edge.errors import EdgeError
from export.errors import ExportError

PLANES = ("t_high", "t_low", "zeff", "pc")


@dataclass(frozen=True, slots=True)
class InputSet:
    """Composed model inputs (N, C, H, W) float32 and, when known, a label per input (1 = anomalous/class)."""

    inputs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64] | None
    source: str

    def split(self, every: int) -> tuple[InputSet, InputSet]:
        """(rest, every ``every``-th item): a deterministic calibration/validation split."""
        idx = np.arange(len(self.inputs))
        val = idx % every == every - 1
        lab = self.labels
        return (InputSet(self.inputs[~val], None if lab is None else lab[~val], self.source + " (calibration)"),
                InputSet(self.inputs[val], None if lab is None else lab[val], self.source + " (validation)"))


def composer() -> Callable[..., Any]:
    """The runtime's composer function, or ExportError if this checkout does not have it."""
    try:
        module = importlib.import_module("edge.condition.composer")
    except ImportError as exc:
        raise ExportError("conditioned .npz items need edge.condition.composer, which is not importable "
                          f"({exc}); pass already composed .npy tensors instead") from exc
    fn = getattr(module, "compose", None)
    if not callable(fn):
        raise ExportError("edge.condition.composer has no compose() function")
    return fn


def compose_conditioned(planes: dict[str, np.ndarray], contract: InputContract) -> npt.NDArray[np.float32]:
    """Compose one conditioned item to (C, H, W) with the runtime composer."""
    from edge.condition.image import ConditionedImage, Modality

    present = {k: v for k, v in planes.items() if k in PLANES}
    if {"t_high", "t_low", "zeff"} <= set(present):
        modality = Modality.DUAL_ENERGY
    elif "pc" in present:
        modality = Modality.PSEUDO_COLOUR
    else:
        modality = Modality.SINGLE_ENERGY
    image = ConditionedImage(
        modality=modality,
        t_high=None if "t_high" not in present else np.ascontiguousarray(present["t_high"], dtype=np.float32),
        t_low=None if "t_low" not in present else np.ascontiguousarray(present["t_low"], dtype=np.float32),
        zeff=None if "zeff" not in present else np.ascontiguousarray(present["zeff"], dtype=np.float32),
        pc=None if "pc" not in present else np.ascontiguousarray(present["pc"], dtype=np.uint8),
    )
    out = np.asarray(composer()(image, contract), dtype=np.float32)
    return out[0] if out.ndim == 4 else out


def _check(arr: np.ndarray, contract: InputContract, where: Path) -> npt.NDArray[np.float32]:
    want = (contract.tensor_channels, contract.height, contract.width)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
        raise ExportError(f"{where}: tensor shape {arr.shape} does not match the input contract (N, "
                          f"{', '.join(map(str, want))})")
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{where}: tensor holds NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def load_inputs(folder: Path, contract: InputContract, limit: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> InputSet:
    """Read every item of ``folder`` (sorted by name), composing conditioned items with the runtime composer."""
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such data folder")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".npz"))
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ExportError(f"{folder}: no .npy or .npz items")
    label_file = folder / "labels.json"
    label_map: dict[str, int] = json.loads(label_file.read_text()) if label_file.is_file() else {}
    arrays: list[np.ndarray] = []
    labels: list[int | None] = []
    for i, path in enumerate(files):
        try:
            if path.suffix == ".npy":
                arr = _check(np.load(path, allow_pickle=False), contract, path)
                label = label_map.get(path.stem)
            else:
                with np.load(path, allow_pickle=False) as npz:
                    data = {k: npz[k] for k in npz.files}
                if "input" in data:
                    arr = _check(data["input"], contract, path)
                else:
                    arr = _check(compose_conditioned(data, contract), contract, path)
                label = int(data["label"]) if "label" in data else label_map.get(path.stem)
        except (OSError, ValueError, EdgeError) as exc:
            raise ExportError(f"{path}: unreadable item: {exc}") from exc
        arrays.append(arr)
        labels.extend([label] * len(arr))
        if progress is not None:
            progress(i + 1, len(files))
    inputs = np.concatenate(arrays, axis=0)
    have = [lab for lab in labels if lab is not None]
    lab_arr = np.array(have, dtype=np.int64) if len(have) == len(labels) else None
    return InputSet(inputs=inputs, labels=lab_arr, source=str(folder))


def synthetic_inputs(contract: InputContract, n: int, seed: int = 0) -> InputSet:
    """Uniform [0, 1] planes, normalised per the contract: for parity checks when no data folder is given."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, contract.tensor_channels, contract.height, contract.width), dtype=np.float32)
    if contract.mean and contract.std:
        x = (x - np.array(contract.mean, np.float32)[:, None, None]) / np.array(contract.std, np.float32)[:, None, None]
    return InputSet(inputs=x.astype(np.float32), labels=None, source=f"synthetic uniform (seed {seed})")
