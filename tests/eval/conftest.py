"""Session fixtures for the eval tests (built once: exports and calibrations take seconds)."""

from __future__ import annotations

import pytest

from tests.eval.eval_helpers import EvalAssets, build_eval_assets


@pytest.fixture(scope="session")
def eval_assets(tmp_path_factory: pytest.TempPathFactory) -> EvalAssets:
    return build_eval_assets(tmp_path_factory.mktemp("eval-assets"))
