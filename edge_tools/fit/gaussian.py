"""The PaDiM Gaussian in plain numpy: one mean and inverse covariance per map position, and the Mahalanobis map.

Shared by the export recipe (``export/recipes/padim.py``, first fit on simulated crops) and ``edge fit`` (refit
on the box from benign items collected on site), so both fit the same way. Embeddings are (M, P, D): M crops,
P map positions (16x16 = 256), D feature channels. :class:`GaussianAccumulator` takes them in batches so that
the box never holds all embeddings of thousands of objects at once (2,500 crops would be 120 MB in float32).
:func:`mahalanobis_maps` is the numpy reference of what the exported graph computes (parity checks use it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

DEFAULT_EPS = 0.01
"""Added to the covariance diagonal (PaDiM's regulariser) so that it stays invertible with few crops."""


class GaussianAccumulator:
    """Running sums of benign embeddings, in float64 around a shift (the first batch's mean) so that the
    one-pass covariance does not lose precision to large means."""

    def __init__(self) -> None:
        self.count = 0
        self._shift: NDArray[np.float64] | None = None
        self._sum: NDArray[np.float64] | None = None
        self._outer: NDArray[np.float64] | None = None

    def add(self, emb: NDArray[np.float32]) -> None:
        """Add a batch of embeddings (M, P, D)."""
        if emb.ndim != 3:
            raise ValueError(f"embeddings must be (M, P, D), got shape {emb.shape}")
        if len(emb) == 0:
            return
        e = emb.astype(np.float64)
        if self._shift is None:
            self._shift = e.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((e.shape[1], e.shape[2], e.shape[2]))
        assert self._sum is not None and self._outer is not None
        if e.shape[1:] != self._shift.shape:
            raise ValueError(f"embeddings of shape {e.shape[1:]} after {self._shift.shape}")
        c = (e - self._shift[None]).transpose(1, 0, 2)  # (P, M, D): one BLAS matmul per position
        self._sum += c.sum(axis=1)
        self._outer += np.matmul(c.transpose(0, 2, 1), c)
        self.count += len(e)

    def result(self, eps: float = DEFAULT_EPS) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Mean (P, D) and inverse of the unbiased covariance + ``eps`` I (P, D, D), as float32."""
        if self._shift is None or self._sum is None or self._outer is None or self.count == 0:
            raise ValueError("no embeddings were added")
        n = self.count
        mean_c = self._sum / n
        cov = (self._outer - n * np.einsum("pi,pj->pij", mean_c, mean_c)) / max(n - 1, 1)
        cov += eps * np.eye(cov.shape[1])[None]
        return (self._shift + mean_c).astype(np.float32), np.linalg.inv(cov).astype(np.float32)


def fit_gaussian(emb: NDArray[np.float32], eps: float = DEFAULT_EPS,
                 batch: int = 512) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-position mean (P, D) and inverse covariance (P, D, D) of benign embeddings (M, P, D)."""
    acc = GaussianAccumulator()
    for i in range(0, len(emb), batch):
        acc.add(emb[i:i + batch])
    return acc.result(eps)


def smooth3(maps: NDArray[np.float64]) -> NDArray[np.float64]:
    """3x3 mean over (N, H, W) maps, borders averaged over the cells inside (``count_include_pad=False``)."""
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones(maps.shape[1:]), 1)
    h, w = maps.shape[1:]
    total = np.zeros_like(maps, dtype=np.float64)
    count = np.zeros(maps.shape[1:])
    for i in range(3):
        for j in range(3):
            total += padded[:, i:i + h, j:j + w]
            count += ones[i:i + h, j:j + w]
    out: NDArray[np.float64] = total / count[None]
    return out


def mahalanobis_maps(emb: NDArray[np.float32], mean: NDArray[np.float32], inv_cov: NDArray[np.float32],
                     size: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """What the PaDiM graph computes from embeddings (M, P, D): anomaly maps (M, 1, size, size), distance per
    position smoothed 3x3, and scores (M,) = each map's maximum. Raw values, before normalisation."""
    d = emb.astype(np.float64) - mean.astype(np.float64)[None]
    m2 = np.einsum("npi,pij,npj->np", d, inv_cov.astype(np.float64), d)
    maps = smooth3(np.sqrt(np.clip(m2, 0.0, None)).reshape(-1, size, size))
    return maps[:, None].astype(np.float32), maps.reshape(len(maps), -1).max(axis=1).astype(np.float32)
