"""PaDiM-style feature-distribution scorer: backbone features + one Gaussian per map position, fitted in numpy.

Where it sits: beside the STFPM recipe, on the same from-scratch backbone (the STFPM teacher). The fit is
plain numpy (:func:`fit_gaussian`, from :mod:`edge_tools.fit.gaussian`, the one implementation ``edge fit`` uses
too) on embeddings of benign crops, so a site can refit it from its own benign
items without torch: the exported graph keeps the Gaussian as two named initialisers
(``padim_mean`` (P, D), ``padim_inv_cov`` (P, D, D)) that :func:`replace_gaussian` swaps in an ONNX file.

forward(input (N, 3, 64, 64) hlz) → anomaly_map (N, 1, 16, 16) = Mahalanobis distance per position (smoothed),
score (N,) = its maximum. Must not: be imported by the runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from edge_tools.fit.gaussian import fit_gaussian
from export.recipes.scorer import MAP_SIZE, Backbone

__all__ = ["Embedder", "PadimScorer", "channel_subset", "embeddings", "fit_gaussian", "replace_gaussian"]

EMBED_DIM = 48
EMBED_SEED = 0


def channel_subset(total: int = 192, dim: int = EMBED_DIM, seed: int = EMBED_SEED) -> NDArray[np.int64]:
    """PaDiM's random channel selection (fixed seed, sorted)."""
    return np.sort(np.random.default_rng(seed).choice(total, dim, replace=False)).astype(np.int64)


class Embedder(nn.Module):
    """Backbone stages 2 and 3 at 16x16, a fixed random subset of channels: (N, P=256, D)."""

    def __init__(self, backbone: Backbone, idx: NDArray[np.int64]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("idx", torch.as_tensor(idx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, f2, f3 = self.backbone.features(x)
        f2 = F.adaptive_avg_pool2d(f2, MAP_SIZE)
        f3 = F.interpolate(f3, size=(MAP_SIZE, MAP_SIZE), mode="bilinear", align_corners=False)
        e = torch.cat([f2, f3], dim=1)[:, self.idx]  # type: ignore[index]
        return e.flatten(2).transpose(1, 2)


def embeddings(embedder: Embedder, x: NDArray[np.float32], batch: int = 256) -> NDArray[np.float32]:
    """(M, P, D) embeddings of composed crops."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(embedder(torch.from_numpy(x[i:i + batch])).numpy())
    return np.concatenate(out).astype(np.float32)


class PadimScorer(nn.Module):
    """Embedder + Mahalanobis distance to the fitted Gaussian at each position."""

    def __init__(self, embedder: Embedder, mean: NDArray[np.float32], inv_cov: NDArray[np.float32]) -> None:
        super().__init__()
        self.embedder = embedder
        self.padim_mean = nn.Parameter(torch.from_numpy(mean), requires_grad=False)
        self.padim_inv_cov = nn.Parameter(torch.from_numpy(inv_cov), requires_grad=False)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.embedder(input) - self.padim_mean[None]  # (N, P, D)
        m = torch.einsum("npi,pij,npj->np", d, self.padim_inv_cov, d).clamp(min=0).sqrt()
        m = m.reshape(-1, 1, MAP_SIZE, MAP_SIZE)
        m = F.avg_pool2d(m, 3, 1, 1, count_include_pad=False)
        return m, m.flatten(1).amax(dim=1)


def replace_gaussian(onnx_in: Path, onnx_out: Path, mean: NDArray[np.float32], inv_cov: NDArray[np.float32]) -> None:
    """Write a copy of an exported PaDiM ONNX file with a refitted Gaussian (no torch needed; ``edge fit``
    does the same on the box with :func:`edge_tools.fit.padim_graph.set_gaussian`)."""
    import onnx

    from edge_tools.fit.errors import FitError
    from edge_tools.fit.padim_graph import set_gaussian

    model = onnx.load(str(onnx_in))
    try:
        set_gaussian(model, mean, inv_cov, str(onnx_in))
    except FitError as exc:
        raise ValueError(str(exc)) from exc
    onnx.save(model, str(onnx_out))
