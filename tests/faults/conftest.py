"""Fixtures of the fault suite: real bundles and calibration (once per session), a virtual-scanner item pool,
a real Mosquitto per test (``broker`` from tests/publish), and a ``rig`` factory that lays out a service under
test and always kills it at the end (see ``faults_helpers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.bundles import Role
from tests.faults.faults_helpers import FaultAssets, FaultRig, ItemPool, make_rig
from tests.publish.publish_helpers import Broker, broker, broker_factory
from tests.service.service_helpers import build_bundle, calibrate

__all__ = ["broker", "broker_factory", "fault_assets", "item_pool", "rig"]


@pytest.fixture(scope="session")
def fault_assets(tmp_path_factory: pytest.TempPathFactory) -> FaultAssets:
    """An exported detector and scorer (untrained, parity-verified) and the virtual scanner's calibration."""
    work = tmp_path_factory.mktemp("fault-assets")
    flat, energy = calibrate(work)
    return FaultAssets(detector=build_bundle(Role.DETECTOR, work, "det"),
                       scorer=build_bundle(Role.SCORER, work, "scorer"), flat=flat, energy=energy)


@pytest.fixture(scope="session")
def item_pool() -> ItemPool:
    """Ten virtual-scanner items (half carry a threat), cropped to 400 lines so each screens quickly."""
    return ItemPool(seed=0, count=10, max_lines=400)


@pytest.fixture
def rig(tmp_path: Path, fault_assets: FaultAssets, broker: Broker) -> Iterator[Callable[..., FaultRig]]:
    """``rig(**make_rig_kwargs)`` -> a FaultRig on this test's broker; every rig's service is killed after."""
    made: list[FaultRig] = []

    def make(name: str = "rig", **kwargs: object) -> FaultRig:
        root = tmp_path / name
        root.mkdir()
        r = make_rig(root, fault_assets, broker, **kwargs)  # type: ignore[arg-type]
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
