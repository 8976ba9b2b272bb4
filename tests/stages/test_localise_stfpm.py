"""Sub-component parts through the real pipeline stages and the committed STFPM bundle on a virtual-scanner item.

The virtual scanner stands in for the hardware only: conditioning, detection (``detector-agnostic``), scoring
(``scorer-stfpm``) and localisation are the runtime's code on a fresh threat item (indices from 5,000,000 on
are in no training, validation or test set).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.config.localise import LocaliseConfig
from edge.config.models import ModelsConfig
from edge.records import ItemMeta
from edge.screening import ModelHolder, load_models
from edge.stages.condition import ConditionedItem
from edge.stages.detect import DetectStage
from edge.stages.localise import LocaliseStage
from edge.stages.score import ScoreStage
from export.recipes.simdata import SimRig, iter_items

REPO = Path(__file__).resolve().parents[2]
FRESH_FIRST = 5_000_000


def test_flagged_objects_of_a_threat_item_get_parts_inside_their_box() -> None:
    models = load_models(ModelsConfig(detector=REPO / "models" / "detector-agnostic",
                                      scorer=REPO / "models" / "scorer-stfpm", backend="onnxruntime", threads=1,
                                      operating_point="object",  # parts geometry, not the item decision
                                      allow_unsigned=True))
    holder = ModelHolder(models)
    meta = ItemMeta("sim-5000000", "sim", 0, 0.0, 0.0, 0.0, 0.0, time.monotonic() + 60)
    flagged = []
    try:
        # The first fresh threat item flags several objects with the committed bundles; later ones are a margin.
        for image, _ in iter_items(SimRig(), 3, FRESH_FIRST, threat_rate=1.0):
            scored = ScoreStage(holder)(DetectStage(holder)(ConditionedItem(meta, image)))
            localised = LocaliseStage(LocaliseConfig())(scored)
            flagged = [o for o in localised.objects if o.anomalous]
            if flagged:
                break
    finally:
        models.close()
    assert flagged, "no object flagged on three fresh threat items: the committed STFPM bundle changed?"
    cap = LocaliseConfig().max_objects_with_parts
    strongest = sorted(flagged, key=lambda o: -(o.anomaly_score or 0.0))[:cap]
    for obj in localised.objects:  # parts exactly for the strongest flagged objects
        assert (len(obj.parts) > 0) is any(obj is s for s in strongest)
    for obj in strongest:
        assert 2 <= len(obj.parts) <= 24 and any(p.anomalous for p in obj.parts)
        assert obj.threshold is not None
        for part in obj.parts:
            xs, ys = np.asarray(part.polygon_xray).T
            assert obj.box.x1 - 1 <= xs.min() and xs.max() <= obj.box.x2 + 1
            assert obj.box.y1 - 1 <= ys.min() and ys.max() <= obj.box.y2 + 1
            assert 3 <= len(part.polygon_xray) <= 32 and np.isfinite(part.score)
