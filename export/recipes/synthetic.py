"""Synthetic dense-metal inserts on benign object crops: anomalies made without any threat data.

Why: issue 7 asks for scorers trained on benign objects only, and the student–teacher scorer has stayed near
AUROC_M 0.70–0.78 through the pipeline. A classifier that separates benign crops from the same crops with a
physically plausible steel part laid over them (rods, plates, rings, L-frames, zigzag springs, clusters of small
parts: the shapes of pins, barrels, blades, frames and springs, none of them a threat drawn from ``sim/threats``)
learns "unexpected metal" rather than any threat kind, and ranks items differently from the student–teacher
scorer. Measured on five virtual scanners it does not help yet, alone or fused (docs/models.md, "Synthetic metal
inserts"). This module only makes the training cache; ``train classifier`` trains on it unchanged, and ``train
fuse`` puts it beside the STFPM scorer.

Physics (../shared/brief/PHYSICS.md): transmission multiplies, ``T = T_obj · exp(-A)`` on the high layer and
``exp(-R·A)`` on the low layer with R = ln T_low / ln T_high of iron (1.4–2.2 across thickness and spectrum);
the effective Z of the stack is the attenuation-weighted mean of the object's and iron's (Z 24–28), as the
conditioning's lookup would read it to first order. Channels h, l (transmissions) and z (Z / ``Z_SCALE``) are
changed; the pseudo-colour channels are left as they were (the scorers read ``hlz``).

Must not: import ``sim`` threats or read threat crops (the point is benign-only training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.contracts import Z_SCALE
from export.recipes.simdata import CropSet, crop_shards, load_crops, save_crops

IRON_R = (1.4, 2.2)
IRON_Z = (24.0, 28.0)
HIGH_ATTENUATION = (0.4, 2.5)
"""-ln T_high added by the insert: from a thin sheet to a few mm of steel at 140-160 kVp."""
SYNTHETIC_GROUP = "synthetic"


SHAPES = ("rod", "plate", "ring", "frame", "spring", "parts")
"""Insert shapes. ``shapes=4`` makes the first cache's draws (its L-frames were drawn as crosses, since mended)."""


def insert_mask(rng: np.random.Generator, size: int, shapes: int = len(SHAPES)) -> NDArray[np.float32]:
    """A soft-edged (3x3 blur) mask of one metal part: rod/blade, plate, ring or coil, L-frame, a spring seen from
    the side (a zigzag wire), or a cluster of small parts (screws, pins); drawn from the first ``shapes``."""
    m = np.zeros((size, size), np.float32)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    angle = float(rng.uniform(0, 180))
    shape = int(rng.integers(0, shapes))

    def rect(length: float, width: float, a: float, x: float = cx, y: float = cy) -> None:
        box = cv2.boxPoints(((float(x), float(y)), (length, width), a))
        cv2.fillPoly(m, [box.astype(np.int32)], 1.0)

    if shape == 0:  # rod or blade
        rect(rng.uniform(0.3, 0.8) * size, rng.uniform(0.04, 0.15) * size, angle)
    elif shape == 1:  # plate
        rect(rng.uniform(0.2, 0.5) * size, rng.uniform(0.2, 0.5) * size, angle)
    elif shape == 2:  # ring or coil seen from the side
        r = rng.uniform(0.08, 0.25) * size
        axes = (int(r), int(r * rng.uniform(0.4, 1.0)))
        cv2.ellipse(m, (int(cx), int(cy)), axes, angle, 0, 360, 1.0, max(1, int(rng.uniform(1, 4))))
    elif shape == 3:  # L-frame
        length, width = rng.uniform(0.25, 0.6) * size, rng.uniform(0.06, 0.18) * size
        rect(length, width, angle)
        # the second arm starts at the first arm's end (the first cache drew a cross here)
        half = 0.5 * (length - width)
        a, b = np.deg2rad(angle), np.deg2rad(angle + 90)
        rect(length, width, angle + 90, cx + half * (np.cos(a) + np.cos(b)), cy + half * (np.sin(a) + np.sin(b)))
    elif shape == 4:  # spring: a wire zigzagging across its axis, so its coils show as parallel strokes
        length, radius = rng.uniform(0.25, 0.6) * size, rng.uniform(0.04, 0.12) * size
        turns = int(rng.integers(4, 12))
        t = np.linspace(-0.5, 0.5, 2 * turns + 1)
        side = np.where(np.arange(len(t)) % 2 == 0, -radius, radius)
        a = np.deg2rad(angle)
        px = cx + t * length * np.cos(a) - side * np.sin(a)
        py = cy + t * length * np.sin(a) + side * np.cos(a)
        cv2.polylines(m, [np.stack([px, py], 1).astype(np.int32)], False, 1.0, max(1, int(rng.uniform(1, 3))))
    else:  # a few small parts near each other
        for _ in range(int(rng.integers(2, 6))):
            ox, oy = rng.normal(0, 0.08 * size, 2)
            box = cv2.boxPoints(((float(cx + ox), float(cy + oy)),
                                 (rng.uniform(0.04, 0.14) * size, rng.uniform(0.03, 0.06) * size),
                                 float(rng.uniform(0, 180))))
            cv2.fillPoly(m, [box.astype(np.int32)], 1.0)
    return np.asarray(cv2.GaussianBlur(m, (3, 3), 0), np.float32)


def add_metal(crop: NDArray[np.floating], rng: np.random.Generator,
              mask: NDArray[np.float32] | None = None, shapes: int = len(SHAPES)) -> NDArray[np.float32]:
    """``crop`` (channels h, l, z, R, G, B; h/l transmissions, z = Z / Z_SCALE) with one steel part laid over it,
    shaped by ``mask`` (0..1; default: a random :func:`insert_mask` of the first ``shapes`` shapes)."""
    out = np.asarray(crop, np.float32).copy()
    strength = rng.uniform(*HIGH_ATTENUATION)  # drawn before the mask: the documented caches replay
    a = strength * (insert_mask(rng, out.shape[-1], shapes) if mask is None else mask)
    r = rng.uniform(*IRON_R)
    a_obj = -np.log(np.clip(out[0], 1e-4, 1.0))
    z_obj = out[2] * Z_SCALE
    out[0] = out[0] * np.exp(-a)
    out[1] = out[1] * np.exp(-a * r)
    z = np.where(a > 1e-3, (z_obj * a_obj + rng.uniform(*IRON_Z) * a) / np.maximum(a_obj + a, 1e-6), z_obj)
    out[2] = np.clip(z, 0.0, Z_SCALE) / Z_SCALE
    return out


def synthetic_crops(benign: CropSet, share: float, rng: np.random.Generator, shapes: int = len(SHAPES)) -> CropSet:
    """The benign crops (labelled benign) plus a metal-insert copy of about ``share`` of them (labelled anomalous,
    group ``synthetic``). Crops that are threats, host or touch one, or come from threat items are dropped first."""
    keep = ~benign.threat & ~benign.tainted & ~benign.item_threat
    b = benign.select(keep)
    pick = np.flatnonzero(rng.random(len(b.crops)) < share)
    fake = (np.stack([add_metal(b.crops[i], rng, shapes=shapes) for i in pick]).astype(np.float16) if len(pick)
            else b.crops[:0])
    flag = np.r_[np.zeros(len(b.crops), bool), np.ones(len(pick), bool)]
    return CropSet(np.concatenate([b.crops, fake]), np.r_[b.item, b.item[pick]], np.r_[b.kind, b.kind[pick]],
                   np.concatenate([b.group, np.full(len(pick), SYNTHETIC_GROUP)]), flag,
                   np.zeros(len(flag), bool), flag.copy())


def write_cache(data: Sequence[Path], out: Path, share: float, seed: int, shapes: int = len(SHAPES)) -> tuple[int, int]:
    """``train synthetic-cache``: :func:`synthetic_crops` of every shard of the ``data`` caches into ``out``, shard
    by shard (one random stream, in folder and shard order); returns (crops written, synthetic ones)."""
    rng = np.random.default_rng(seed)
    total = fake = 0
    for n, folder in enumerate(data):
        for shard in crop_shards(folder):
            c = synthetic_crops(load_crops(folder, [shard]), share, rng, shapes)
            save_crops(c, out / f"crops_{n}{shard.name.removeprefix('crops_')}")
            total, fake = total + len(c.crops), fake + int(c.threat.sum())
    return total, fake
