"""Fixtures of the fault suite: real bundles and calibration (once per session), virtual-scanner item pools,
a real Mosquitto per test (``broker`` from tests/publish), and a ``rig`` factory that lays out a service under
test and always kills it at the end (see ``faults_helpers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.bundles import Role
from tests.faults.faults_helpers import REPO, FaultAssets, FaultRig, ItemPool, make_rig
from tests.publish.publish_helpers import Broker, broker, broker_factory
from tests.service.service_helpers import build_bundle, calibrate

__all__ = ["broker", "broker_factory", "calibration", "fault_assets", "full_item_pool", "item_pool",
           "reference_assets", "rig"]


@pytest.fixture(scope="session")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(flat-field, energy) of virtual scanner 0, made by `edge calibrate`."""
    return calibrate(tmp_path_factory.mktemp("fault-calibration"))


@pytest.fixture(scope="session")
def fault_assets(tmp_path_factory: pytest.TempPathFactory, calibration: tuple[Path, Path]) -> FaultAssets:
    """An exported detector and scorer (untrained, parity-verified, signed with the test key): fast to run."""
    work = tmp_path_factory.mktemp("fault-assets")
    return FaultAssets(detector=build_bundle(Role.DETECTOR, work, "det"),
                       scorer=build_bundle(Role.SCORER, work, "scorer"), flat=calibration[0], energy=calibration[1])


@pytest.fixture(scope="session")
def reference_assets(calibration: tuple[Path, Path]) -> FaultAssets:
    """The reference bundles a site starts with (``models/detector-agnostic``, ``models/scorer-padim``): an
    item takes as long as on a real box, so a kill lands while items are really in flight."""
    models = REPO / "models"
    return FaultAssets(detector=models / "detector-agnostic", scorer=models / "scorer-padim",
                       flat=calibration[0], energy=calibration[1])


@pytest.fixture(scope="session")
def item_pool() -> ItemPool:
    """Ten virtual-scanner items (half carry a threat), cropped to 400 lines so each screens quickly."""
    return ItemPool(seed=0, count=10, max_lines=400)


@pytest.fixture(scope="session")
def full_item_pool() -> ItemPool:
    """Ten whole virtual-scanner items (a few hundred to ~1,500 belt lines), as a scanner sends them."""
    return ItemPool(seed=0, count=10)


@pytest.fixture
def rig(tmp_path: Path, fault_assets: FaultAssets, broker: Broker) -> Iterator[Callable[..., FaultRig]]:
    """``rig(name="rig", assets=None, **make_rig_kwargs)`` -> a FaultRig on this test's broker (the tiny test
    bundles unless ``assets`` is given); every rig's service is killed after the test."""
    made: list[FaultRig] = []

    def make(name: str = "rig", assets: FaultAssets | None = None, **kwargs: object) -> FaultRig:
        root = tmp_path / name
        root.mkdir()
        r = make_rig(root, assets or fault_assets, broker, **kwargs)  # type: ignore[arg-type]
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
