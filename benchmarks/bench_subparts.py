"""Added cost of sub-component parts per flagged object on 640-channel virtual-scanner threat items.

Runs the runtime's detect and score stages with the committed ``detector-agnostic`` and ``scorer-stfpm``
bundles (ONNX Runtime, one thread) on fresh threat items, then times ``localise_object`` with and without parts
for every flagged object (median of 7 runs each) and prints the distribution of the difference.

    .venv/bin/python benchmarks/bench_subparts.py [N_ITEMS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.config.localise import LocaliseConfig
from edge.config.models import ModelsConfig
from edge.records import ItemMeta
from edge.screening import ModelHolder, load_models
from edge.stages.condition import ConditionedItem
from edge.stages.detect import DetectStage
from edge.stages.localise import localise_object
from edge.stages.score import ScoreStage
from export.recipes.simdata import SimRig, iter_items

REPO = Path(__file__).resolve().parents[1]


def main(n_items: int) -> None:
    cv2.setNumThreads(1)  # as in the service (edge.runtime.build_stages)
    models = load_models(ModelsConfig(detector=REPO / "models" / "detector-agnostic",
                                      scorer=REPO / "models" / "scorer-stfpm", backend="onnxruntime", threads=1,
                                      allow_unsigned=True))  # the reference bundles are not signed
    assert models.scorer is not None
    holder, contract = ModelHolder(models), models.scorer.bundle.contract
    meta = ItemMeta("bench", "bench", 0, 0.0, 0.0, 0.0, 0.0, 1e12)
    on, off = LocaliseConfig(), LocaliseConfig(subparts=False)
    added_ms, areas, widths = [], [], set()
    for image, _ in iter_items(SimRig(), n_items, 5_000_000, threat_rate=1.0):
        widths.add(image.shape[1])
        scored = ScoreStage(holder)(DetectStage(holder)(ConditionedItem(meta, image)))
        for obj in scored.objects:
            if not obj.anomalous:
                continue
            with_parts, without = [], []
            for _ in range(7):
                t = time.perf_counter()
                localise_object(obj, 0, image, contract, off)
                without.append(time.perf_counter() - t)
                t = time.perf_counter()
                localise_object(obj, 0, image, contract, on)
                with_parts.append(time.perf_counter() - t)
            added_ms.append((float(np.median(with_parts)) - float(np.median(without))) * 1e3)
            box = obj.detection.box
            areas.append((box.x2 - box.x1) * (box.y2 - box.y1))
    models.close()
    d = np.asarray(added_ms)
    print(f"{n_items} items (widths {sorted(widths)}), {len(d)} flagged objects, box area median "
          f"{np.median(areas):.0f} px, max {max(areas):.0f} px")
    print(f"added per flagged object: median {np.median(d):.1f} ms, p90 {np.percentile(d, 90):.1f} ms, "
          f"max {d.max():.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
