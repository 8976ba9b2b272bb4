"""Issue 29 point 5: items without real X-ray data were decided CLEAR. Through the real service (``edge run``,
spool folder, Mosquitto subscriber, audit store), each such item must be UNSCREENED with its reason:

* dark-level frames (X-ray off: the detector's dark counts, with their noise) -> ``no_xray``
* all-zero frames (a frame grabber that sent nothing) -> ``no_xray``
* saturated frames (every count at full scale) -> ``saturated``
* a threat item with 200 lines zeroed (a dropout over the threat) -> ``lines_missing``

and the normal items fed beside them are still screened (ALARM or CLEAR, not UNSCREENED by the gate).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.faults.faults_helpers import FaultRig, FedItem, ItemPool


def _dark_frame(pool: ItemPool, lines: int, rng: np.random.Generator) -> np.ndarray:
    """The virtual scanner's dark level with read noise (what its detector reads with the beam off)."""
    return np.clip(rng.normal(pool.dark_level, 8.0, size=(lines, 640)), 0, 65535).astype(np.uint16)


def test_items_without_xray_data_are_unscreened_with_their_reason(rig: Callable[..., FaultRig],
                                                                  item_pool: ItemPool) -> None:
    r = rig()
    r.service.start()
    rng = np.random.default_rng(29)
    # Pool item 2 (virtual scanner seed 0) carries a folding knife at lines ~173-330: zero 200 lines over it.
    threat_high, threat_low = item_pool.arrays(2)
    assert threat_high.shape[0] >= 350
    gap_high, gap_low = threat_high.copy(), threat_low.copy()
    gap_high[150:350] = 0
    gap_low[150:350] = 0
    zeros = np.zeros((400, 640), np.uint16)
    full = np.full((400, 640), 65535, np.uint16)
    expected = {"dark": "no_xray", "zeros": "no_xray", "saturated": "saturated", "gap": "lines_missing"}
    fed: list[FedItem] = [
        r.spool.drop("dark", _dark_frame(item_pool, 400, rng), _dark_frame(item_pool, 400, rng), has_xray=False),
        r.spool.drop("zeros", zeros, zeros, has_xray=False),
        r.spool.drop("saturated", full, full, has_xray=False),
        r.spool.drop("gap", gap_high, gap_low, has_xray=False),
        r.spool.drop("normal0", *item_pool.arrays(0)),
        r.spool.drop("normal1", *item_pool.arrays(1)),
    ]
    report = r.wait_for_decisions(fed, timeout_s=180)
    assert r.service.alive, r.service.log_tail()
    assert report.ok, report.summary()
    records = {str(b["item_id"]): b for b in r.records()}
    got = {name: (records[f"lane1-{name}"]["verdict"], records[f"lane1-{name}"].get("reason"))
           for name in (*expected, "normal0", "normal1")}
    assert {name: got[name] for name in expected} == {name: ("unscreened", reason)
                                                     for name, reason in expected.items()}, got
    assert got["normal0"][0] in ("clear", "alarm") and got["normal1"][0] in ("clear", "alarm"), got
