"""Synthetic dense-metal inserts on benign object crops: anomalies made without any threat data.

Why: issue 7 asks for scorers trained on benign objects only, and the student–teacher scorer has stayed near
AUROC_M 0.70–0.78 through the pipeline. A classifier that separates benign crops from the same crops with a
physically plausible steel part laid over them (rods, plates, rings, L-frames: the shapes of springs, pins,
barrels, blades and frames, none of them a threat drawn from ``sim/threats``) learns "unexpected metal" rather
than any threat kind, and on a validation scanner it ranks items differently from the student–teacher scorer
(docs/models.md, "Synthetic metal inserts"). This module only makes the training cache; ``train classifier``
trains on it unchanged.

Physics (../shared/brief/PHYSICS.md): transmission multiplies, ``T = T_obj · exp(-A)`` on the high layer and
``exp(-R·A)`` on the low layer with R = ln T_low / ln T_high of iron (1.4–2.2 across thickness and spectrum);
the effective Z of the stack is the attenuation-weighted mean of the object's and iron's (Z 24–28), as the
conditioning's lookup would read it to first order. Channels h, l (transmissions) and z (Z / ``Z_SCALE``) are
changed; the pseudo-colour channels are left as they were (the scorers read ``hlz``).

Must not: import ``sim`` threats or read threat crops (the point is benign-only training).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.contracts import Z_SCALE
from export.recipes.simdata import CropSet

IRON_R = (1.4, 2.2)
IRON_Z = (24.0, 28.0)
HIGH_ATTENUATION = (0.4, 2.5)
"""-ln T_high added by the insert: from a thin sheet to a few mm of steel at 140-160 kVp."""
SYNTHETIC_GROUP = "synthetic"


def insert_mask(rng: np.random.Generator, size: int) -> NDArray[np.float32]:
    """A soft-edged (3x3 blur) mask of one metal part: rod/blade, plate, ring or coil, or an L-frame."""
    m = np.zeros((size, size), np.float32)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    angle = float(rng.uniform(0, 180))
    shape = int(rng.integers(0, 4))

    def rect(length: float, width: float, a: float) -> None:
        box = cv2.boxPoints(((float(cx), float(cy)), (length, width), a))
        cv2.fillPoly(m, [box.astype(np.int32)], 1.0)

    if shape == 0:  # rod or blade
        rect(rng.uniform(0.3, 0.8) * size, rng.uniform(0.04, 0.15) * size, angle)
    elif shape == 1:  # plate
        rect(rng.uniform(0.2, 0.5) * size, rng.uniform(0.2, 0.5) * size, angle)
    elif shape == 2:  # ring or coil seen from the side
        r = rng.uniform(0.08, 0.25) * size
        axes = (int(r), int(r * rng.uniform(0.4, 1.0)))
        cv2.ellipse(m, (int(cx), int(cy)), axes, angle, 0, 360, 1.0, max(1, int(rng.uniform(1, 4))))
    else:  # L-frame
        length, width = rng.uniform(0.25, 0.6) * size, rng.uniform(0.06, 0.18) * size
        rect(length, width, angle)
        rect(length, width, angle + 90)
    return np.asarray(cv2.GaussianBlur(m, (3, 3), 0), np.float32)


def add_metal(crop: NDArray[np.floating], rng: np.random.Generator,
              mask: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """``crop`` (channels h, l, z, R, G, B; h/l transmissions, z = Z / Z_SCALE) with one steel part laid over it,
    shaped by ``mask`` (0..1; default: a random :func:`insert_mask`)."""
    out = np.asarray(crop, np.float32).copy()
    strength = rng.uniform(*HIGH_ATTENUATION)  # drawn before the mask: the documented caches replay
    a = strength * (insert_mask(rng, out.shape[-1]) if mask is None else mask)
    r = rng.uniform(*IRON_R)
    a_obj = -np.log(np.clip(out[0], 1e-4, 1.0))
    z_obj = out[2] * Z_SCALE
    out[0] = out[0] * np.exp(-a)
    out[1] = out[1] * np.exp(-a * r)
    z = np.where(a > 1e-3, (z_obj * a_obj + rng.uniform(*IRON_Z) * a) / np.maximum(a_obj + a, 1e-6), z_obj)
    out[2] = np.clip(z, 0.0, Z_SCALE) / Z_SCALE
    return out


def synthetic_crops(benign: CropSet, share: float, rng: np.random.Generator) -> CropSet:
    """The benign crops (labelled benign) plus a metal-insert copy of about ``share`` of them (labelled anomalous,
    group ``synthetic``). Crops that are threats, host or touch one, or come from threat items are dropped first."""
    keep = ~benign.threat & ~benign.tainted & ~benign.item_threat
    b = benign.select(keep)
    pick = np.flatnonzero(rng.random(len(b.crops)) < share)
    fake = np.stack([add_metal(b.crops[i], rng) for i in pick]).astype(np.float16) if len(pick) else b.crops[:0]
    flag = np.r_[np.zeros(len(b.crops), bool), np.ones(len(pick), bool)]
    return CropSet(np.concatenate([b.crops, fake]), np.r_[b.item, b.item[pick]], np.r_[b.kind, b.kind[pick]],
                   np.concatenate([b.group, np.full(len(pick), SYNTHETIC_GROUP)]), flag,
                   np.zeros(len(flag), bool), flag.copy())
