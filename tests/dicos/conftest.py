"""Fixtures for the DICOS tests: the real third-party files (outside the repo) and decision factories."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_DICOS = REPO_ROOT.parent / "shared" / "realdata" / "dicos"


@pytest.fixture(scope="session")
def real_dicos() -> Path:
    """The pyDICOS sample files (Stratovan toolkit output); see ../shared/realdata/dicos/SOURCES.md."""
    if not REAL_DICOS.is_dir():
        pytest.skip(f"real DICOS samples not present at {REAL_DICOS} (third-party data, kept outside the repo)")
    return REAL_DICOS
