"""Issue 29, point 1 (killed mid-work): items dropped into the spool, the service SIGKILLed 0.05-0.6 s later
and restarted, several rounds. Every item must end with exactly one decision at a persistent MQTT subscriber and
in the audit store: none lost (an item taken from the spool but not yet decided when the process died), none
decided twice (an item decided, but not yet acknowledged, when it died).

Black box: the real ``edge run`` process, a real spool folder, a real Mosquitto, a real SIGKILL (no handler
runs, exactly what the OOM killer or a crash leaves behind). The reference bundles and whole virtual-scanner
items, so that screening takes as long as on a site and the kill lands while items are in flight (with the tiny
test bundles and small items, ten items are decided in about 0.2 s and most kills would hit an idle service).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.faults_helpers import FaultAssets, FaultRig, FedItem, ItemPool

PER_ROUND = 10
KILL_AFTER_S = (0.2, 0.05, 0.6, 0.35)
"""Seconds from the last drop of a round to the SIGKILL: spread over the 0.05-0.6 s of the issue."""


@pytest.mark.timeout(600)
def test_sigkill_mid_work_loses_no_item_and_decides_none_twice(rig: Callable[..., FaultRig],
                                                                reference_assets: FaultAssets,
                                                                full_item_pool: ItemPool) -> None:
    r = rig(assets=reference_assets)
    fed: list[FedItem] = []
    for round_no, delay in enumerate(KILL_AFTER_S):
        r.service.start()
        names = [f"k{round_no}i{k:02d}" for k in range(PER_ROUND)]
        fed += r.spool.drop_pool(full_item_pool, names, batch=round_no, first=round_no * PER_ROUND)
        time.sleep(delay)
        r.service.kill()
    # The last start finds what the killed processes accepted but never decided, and decides it.
    r.service.start()
    report = r.wait_for_decisions(fed, timeout_s=240.0, quiet_s=3.0)
    left = r.spool.pending()
    code = r.service.stop()
    print(f"point 1: {len(KILL_AFTER_S)} rounds x {PER_ROUND} items, killed after {KILL_AFTER_S} s: "
          f"{report.summary()}; left in spool after the final run: {len(left)}")
    assert report.ok, report.summary()
    assert code == 0, r.service.log_tail()
    assert left == [], f"items never acknowledged: {[p.name for p in left]}"
