"""Fixtures for the exit-camera runtime tests."""

from __future__ import annotations

import pytest

from sim.camera import ExitCamera


@pytest.fixture(scope="module")
def cam() -> ExitCamera:
    return ExitCamera()
