"""Helpers shared by the calibration tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sim.board import TargetGeometry
from sim.camera import ExitCamera


@dataclass(frozen=True)
class SimWorld:
    """A virtual exit camera with known truth, its intrinsics views and two passes of the target."""

    camera: ExitCamera
    geometry: TargetGeometry
    views_dir: Path
    pass1: Path
    pass2: Path


def rms(a: npt.ArrayLike) -> float:
    return float(np.sqrt(np.mean(np.asarray(a, dtype=np.float64) ** 2)))
