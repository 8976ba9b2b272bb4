"""The documentation gallery: simulated pseudo-colour previews beside real scanner images.

Where it sits: a build-time tool (``edge sim gallery``) that writes ``docs/img/sim-gallery.png``. The real images
come from ``../shared/realdata/xray`` at build time and are never copied into the repository; only the composed
PNG is committed. Must not: be imported by the runtime; write anywhere but ``out``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from sim.dataset import GenerateConfig, ItemRenderer
from sim.scene import Preset

TILE = 300
REAL_IMAGES: tuple[str, ...] = (
    "sixray/images/P00005.jpg",
    "sixray/images/P00017.jpg",
    "opixray/010722.jpg",
    "gdxray/images/B0009_0001.png",
)


def _tile(img: NDArray[np.uint8], label: str, size: int = TILE) -> NDArray[np.uint8]:
    """Fit ``img`` into a white ``size`` square (aspect kept) with a caption strip."""
    if img.ndim == 2:
        img = np.asarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), np.uint8)
    caption = 20
    scale = min(size / img.shape[1], (size - caption) / img.shape[0])
    resized = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    tile = np.full((size, size, 3), 255, np.uint8)
    y0 = (size - caption - resized.shape[0]) // 2
    x0 = (size - resized.shape[1]) // 2
    tile[y0:y0 + resized.shape[0], x0:x0 + resized.shape[1]] = resized
    cv2.putText(tile, label, (6, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.rectangle(tile, (0, 0), (size - 1, size - 1), (200, 200, 200), 1)
    return tile


def build_gallery(out: Path, seed: int = 3, realdata: Path | None = None) -> Path:
    """Compose 12 simulated items (4 per preset, threats at 50%) and 4 real images into one PNG.

    Raises:
        FileNotFoundError: the real-image folder is missing (the gallery must show both).
    """
    if realdata is None or not realdata.is_dir():
        raise FileNotFoundError(f"real X-ray images not found at {realdata}; the gallery needs them")
    sims: list[NDArray[np.uint8]] = []
    base = GenerateConfig(n=12, seed=seed, threat_rate=0.5, camera=False, workers=1)
    renderer = ItemRenderer(base, out.parent)
    for preset in Preset:
        renderer.config = replace(base, preset=preset)
        renderer.scene = replace(renderer.scene, threat_rate=0.5)
        for k in range(4):
            truth, _, preview, _ = renderer.make(k)
            threats = sorted({o.kind for o in truth.objects if o.threat})
            label = f"sim {preset}: " + (", ".join(threats) if threats else "benign")
            sims.append(_tile(preview, label[:44]))
    reals = []
    for rel in REAL_IMAGES:
        raw = cv2.imread(str(realdata / rel), cv2.IMREAD_COLOR)
        if raw is None:
            raise FileNotFoundError(f"cannot read real image {realdata / rel}")
        reals.append(_tile(np.asarray(raw, np.uint8), f"real: {rel.split('/')[0]} {Path(rel).stem}"))
    gap = np.full((TILE, 12, 3), 255, np.uint8)
    rows = [np.hstack([*sims[3 * r:3 * r + 3], gap, reals[r]]) for r in range(4)]
    header = np.full((34, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(header, "virtual scanner (12 generated items)", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(header, "real scanners", (3 * TILE + 20, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.vstack([header, *rows]), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {out}")
    return out
