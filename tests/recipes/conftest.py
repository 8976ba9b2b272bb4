"""Shared fixtures for the recipe tests: one virtual-scanner rig and a few freshly simulated items.

The virtual scanner stands in for the hardware only; conditioning, composing and inference are the real code.
Item indices from 5_000_000 on are never used by the training, validation or test caches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from export.recipes.simdata import SimRig, iter_items

REPO = Path(__file__).resolve().parents[2]
FRESH_FIRST = 5_000_000


@pytest.fixture(scope="session")
def rig() -> SimRig:
    return SimRig()


@pytest.fixture(scope="session")
def fresh_items(rig: SimRig) -> list[tuple[object, object]]:
    """Six fresh items with threats (so that both benign and threat objects are present)."""
    return list(iter_items(rig, 6, FRESH_FIRST, threat_rate=1.0))


@pytest.fixture(scope="session")
def ranking_items(rig: SimRig, fresh_items: list[tuple[object, object]]) -> list[tuple[object, object]]:
    """The six fresh items and 18 more: enough threat objects (about 30) for a rank statistic to mean something."""
    return fresh_items + list(iter_items(rig, 18, FRESH_FIRST + 6, threat_rate=1.0))
