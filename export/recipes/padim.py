"""PaDiM-style feature-distribution scorer: backbone features + one Gaussian per map position, fitted in numpy.

Where it sits: beside the STFPM recipe, on the same from-scratch backbone (the STFPM teacher). The fit is
plain numpy (:func:`fit_gaussian`) on embeddings of benign crops, so a site can refit it from its own benign
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

from export.recipes.scorer import MAP_SIZE, Backbone

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


def fit_gaussian(emb: NDArray[np.float32], eps: float = 0.01) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-position mean (P, D) and inverse covariance (P, D, D) of benign embeddings (M, P, D); plain numpy."""
    e = emb.astype(np.float64)
    mean = e.mean(axis=0)
    c = e - mean[None]
    ct = c.transpose(1, 0, 2)  # (P, M, D): one BLAS matmul per position instead of a naive einsum
    cov = np.matmul(ct.transpose(0, 2, 1), ct) / max(len(e) - 1, 1)
    cov += eps * np.eye(e.shape[2])[None]
    return mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32)


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
    """Write a copy of an exported PaDiM ONNX file with a refitted Gaussian (no torch needed)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_in))
    wanted = {"padim_mean": mean, "padim_inv_cov": inv_cov}
    found = set()
    for init in model.graph.initializer:
        for key, value in wanted.items():
            if init.name.endswith(key):
                if tuple(init.dims) != value.shape:
                    raise ValueError(f"{init.name}: shape {tuple(init.dims)} != refit {value.shape}")
                init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
                found.add(key)
    if found != set(wanted):
        raise ValueError(f"{onnx_in}: initialisers {sorted(set(wanted) - found)} not found")
    onnx.save(model, str(onnx_out))
