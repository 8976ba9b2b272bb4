"""Sub-component localisation (seed 002): an anomalous object split into SLIC superpixels, each scored by the map.

Where it sits: beside the stages (``edge/stages`` modules import records, never each other), called by the
localise stage for every object judged anomalous that has an anomaly map; benign
objects and map-less scorers (classifiers) get no parts, so the cost is paid only on alarms. The result tells
the operator *which part* of a laptop or a hair-dryer is wrong (red) against its benign parts (green).

Segmentation (``skimage.segmentation.slic``) runs on the object's box in the conditioned image, over the
channels that carry material: for dual-energy items h, l and z (Z_eff / ``Z_SCALE``), the planes the scorer
itself sees, so part edges follow the contrasts the map reacts to and z separates materials of equal
thickness; for pseudo-colour items the pseudo-colour in CIELAB (colour there *is* the material class); for
grey items h alone. Features are scaled to 0..100 like Lab's L. Material contrasts inside an object are a few
units on that scale, so ``compactness`` must sit far below scikit-image's Lab default of 10 for part edges to
follow material edges: on virtual-scanner threat items 10 and 1 cut dense blocks across, 0.3 gave ragged
parts, 0.5 (the default) outlined blocks and discs whole; on the synthetic disc test the red parts' IoU with
the disc is 0.39 at 10, 0.79 at 1 and 0.94 at 0.5. Air inside the box is masked out (Z_eff = 0, or near-white
/ near-full transmission), so parts cover the object, not the belt around it. The number of parts asked of SLIC is the
object's material area over ``segment_area_px``, clamped to ``[min_segments, max_segments]``. SLIC's time grows
with pixels (about 110 ms for a 400x400 box here), so large objects are segmented on a grid of at most
``work_side_px`` (96) on the long side, about 6 pixels per cell of the 16x16 anomaly map: nothing finer to find.

A part's score is a high percentile (``score_percentile``, 90 by default) of the anomaly map over its pixels.
The object score of our bundles is the map's maximum, so a max-like statistic keeps parts on the object's scale
and a small concealed item inside a large part still counts; the mean would dilute it below the threshold.
The map is a 16x16 grid upsampled bilinearly, so its maximum bleeds a few pixels across part borders; the 90th
percentile asks that a tenth of the part be hot, which keeps the benign neighbours of a hot spot green (on the
synthetic disc test: red-part IoU with the disc 0.94 at p90, 0.58 with the maximum). A part is anomalous iff
its score reaches the object's threshold; if none does (the hot spot is smaller than a tenth of every part it
touches), the part holding the map's maximum is anomalous, since that is where the object alarmed.

Must not: run for benign objects, import another stage, or emit more than ``MAX_PARTS`` parts of more than
``PART_MAX_POINTS`` points each (the MQTT item schema's bounds).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage.segmentation import slic

from edge.condition.image import ConditionedImage
from edge.config.localise import MAX_PARTS, LocaliseConfig
from edge.contracts import Z_SCALE
from edge.records import BoxXyxy, ObjectPart, Polygon

Region = tuple[int, int, int, int]

PART_MAX_POINTS = 32
"""Most points in one part outline (the item schema's ``maxItems``)."""

SLIC_ITERATIONS = 10
"""k-means iterations; SLIC's authors report convergence within 10 on natural images."""

SLIC_SIGMA = 1.0
"""Gaussian pre-smoothing in pixels: detector noise otherwise frays part edges into single-pixel fringes."""

AIR_T_HIGH = 0.97
"""Above this high-energy transmission a grey pixel is belt, not object (the conditioner's Z_eff air cut-off)."""

AIR_PC_MEAN = 245.0
"""Pseudo-colour pixels whose RGB mean exceeds this are air (the palette draws air white)."""


def box_polygon(box: BoxXyxy) -> Polygon:
    """The box as a closed-order polygon (clockwise in image coordinates)."""
    return ((box.x1, box.y1), (box.x2, box.y1), (box.x2, box.y2), (box.x1, box.y2))


def mask_polygon(mask: NDArray[np.uint8], x0: int, y0: int, max_points: int = 64) -> Polygon | None:
    """Outline of the largest connected region of ``mask`` (offset by x0, y0), simplified to ``max_points``."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    epsilon = 0.5
    approx = largest
    while len(approx) > max_points:
        epsilon *= 2
        approx = cv2.approxPolyDP(largest, epsilon, True)
    points = approx.reshape(-1, 2).astype(np.float64)
    if len(points) < 3:
        x, y, w, h = cv2.boundingRect(largest)
        return box_polygon(BoxXyxy(x + x0, y + y0, x + x0 + w, y + y0 + h))
    return tuple((float(px + x0), float(py + y0)) for px, py in points)


def part_features(image: ConditionedImage, region: Region) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """SLIC features ``(h, w, C)`` float32 in about 0..100 over ``region``, and its material (non-air) mask."""
    x0, y0, x1, y1 = region
    rows, cols = slice(y0, y1), slice(x0, x1)
    if image.t_high is not None and image.t_low is not None and image.zeff is not None:
        z = image.zeff[rows, cols]
        features = np.stack([image.t_high[rows, cols], image.t_low[rows, cols],
                             np.clip(z, 0.0, Z_SCALE) * np.float32(1.0 / Z_SCALE)], axis=-1) * np.float32(100.0)
        return features.astype(np.float32), z > 0
    if image.pc is not None:
        rgb = image.pc[rows, cols]
        lab = cv2.cvtColor(rgb.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2LAB)
        return np.asarray(lab, dtype=np.float32), rgb.mean(axis=-1) <= AIR_PC_MEAN
    if image.t_high is not None:
        t = image.t_high[rows, cols]
        return (t * np.float32(100.0))[:, :, None].astype(np.float32), t < AIR_T_HIGH
    raise ValueError("a conditioned image without h or pc has no plane to segment")


def segment_parts(image: ConditionedImage, region: Region, score_map: NDArray[np.float32], threshold: float,
                  config: LocaliseConfig) -> tuple[ObjectPart, ...]:
    """Scored SLIC parts of the object in ``region`` (integer x0, y0, x1, y1 of the item).

    Objects larger than ``work_side_px`` are segmented on a grid shrunk to it (features, material mask and map
    area-averaged alike); part outlines are scaled back to item pixels.

    Args:
        image: the conditioned item.
        region: the object's box, rounded outwards and clipped (``composer.region_of``).
        score_map: ``(y1 - y0, x1 - x0)`` float32 anomaly map over the region, on the bundle's scale.
        threshold: the object's threshold on that scale.
        config: the ``localise:`` section.

    Returns:
        At most ``MAX_PARTS`` parts, anomalous ones first; empty when the region is too small to split.
    """
    x0, y0, x1, y1 = region
    if score_map.shape != (y1 - y0, x1 - x0):
        raise ValueError(f"score map {score_map.shape} does not cover the region {region}")
    features, material = part_features(image, region)
    if int(material.sum()) < 16 * config.min_segments:
        material = np.ones_like(material)  # next to no material seen (thin plastic): split the whole box
    area = int(material.sum())
    n_segments = int(np.clip(round(area / config.segment_area_px), config.min_segments, config.max_segments))
    height, width = material.shape
    shrink = min(1.0, config.work_side_px / max(height, width))
    if shrink < 1.0:
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        features = np.asarray(cv2.resize(features, size, interpolation=cv2.INTER_AREA),
                              dtype=np.float32).reshape(size[1], size[0], -1)
        material = cv2.resize(material.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
        score_map = np.asarray(cv2.resize(score_map, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
    if int(material.sum()) < 4 * n_segments:
        return ()
    labels = slic(features, n_segments=n_segments, compactness=config.compactness, max_num_iter=SLIC_ITERATIONS,
                  sigma=SLIC_SIGMA, channel_axis=-1, convert2lab=False, enforce_connectivity=True,
                  mask=material, start_label=1)
    labels = np.asarray(labels, dtype=np.int32)
    # Work-grid pixel centres back to item pixels: x = x0 + (x_work + 0.5) * width / work_width - 0.5.
    sx, sy = width / labels.shape[1], height / labels.shape[0]
    candidates: list[tuple[int, ObjectPart, int]] = []  # (label, part, work pixels)
    for index, window in enumerate(ndimage.find_objects(labels)):
        if window is None:
            continue
        label = index + 1
        inside = labels[window] == label
        values = score_map[window][inside]
        if values.size < 4:
            continue
        score = float(np.percentile(values, config.score_percentile))
        outline = mask_polygon(inside.astype(np.uint8), window[1].start, window[0].start, PART_MAX_POINTS)
        if outline is None:
            continue
        polygon = tuple((x0 + (px + 0.5) * sx - 0.5, y0 + (py + 0.5) * sy - 0.5) for px, py in outline)
        candidates.append((label, ObjectPart(polygon, score, score >= threshold), int(values.size)))
    if candidates and not any(p.anomalous for _, p, _ in candidates):
        peak = _peak_label(labels, score_map, {label for label, _, _ in candidates})
        candidates = [(label, ObjectPart(p.polygon_xray, p.score, label == peak), n) for label, p, n in candidates]
    # Anomalous parts first (never dropped by the cap), then the largest benign ones (most of the object).
    candidates.sort(key=lambda c: (not c[1].anomalous, -c[2]))
    return tuple(p for _, p, _ in candidates[:MAX_PARTS])


def _peak_label(labels: NDArray[np.int32], score_map: NDArray[np.float32], kept: set[int]) -> int:
    """Label of the kept part holding the highest map value (where the object's max-score came from)."""
    inside = np.isin(labels, np.fromiter(kept, dtype=np.int32))
    return int(labels.flat[int(np.where(inside, score_map, -np.inf).argmax())])
