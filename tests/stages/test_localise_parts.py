"""Sub-component localisation (seed 002): SLIC parts of anomalous objects, scored by the anomaly map.

The synthetic object is a plastic slab with a steel disc in it; the anomaly map is high exactly over the disc
and is handed over the way the STFPM bundle hands it over (16x16 over a letterboxed 64x64 input), so the test
also checks that map and crop share one geometry. Expected regions are drawn here from the scene, never taken
from the code under test.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.condition.composer import geometry, region_of
from edge.condition.image import ConditionedImage, Modality
from edge.config import load_config
from edge.config.localise import LocaliseConfig
from edge.contracts import Channel, InputContract, ResizePolicy
from edge.errors import ConfigError
from edge.publish.payloads import decision_payload, encode
from edge.publish.topics import RecordKind
from edge.records import BoxXyxy, Decision, ObjectPart, ObjectResult, Verdict
from edge.schemas import validator
from edge.stages.detect import Detection
from edge.stages.localise import localise_object
from edge.stages.map import draw_xray_overlay
from edge.stages.score import ScoredObject

REPO = Path(__file__).resolve().parents[2]
H, W = 200, 300
BOX = BoxXyxy(60.0, 40.0, 240.0, 160.0)
DISC_CENTRE, DISC_RADIUS = (190, 100), 24  # (x, y) item pixels, inside the box's right half
CONTRACT = InputContract(channels=(Channel.HLZ,), height=64, width=64, resize=ResizePolicy.LETTERBOX,
                         mean=(0.5,) * 3, std=(0.25,) * 3)
THRESHOLD = 0.5


def _disc() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, DISC_CENTRE, DISC_RADIUS, 1, -1)
    return mask.astype(bool)


def _slab() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[int(BOX.y1):int(BOX.y2), int(BOX.x1):int(BOX.x2)] = True
    return mask


def _scene(seed: int = 0) -> ConditionedImage:
    """Air around a plastic slab (the box) holding a steel disc: distinct in h, l and above all in Z."""
    rng = np.random.default_rng(seed)
    t_high = np.ones((H, W), np.float32)
    t_low = np.ones((H, W), np.float32)
    zeff = np.zeros((H, W), np.float32)
    slab, disc = _slab(), _disc()
    t_high[slab], t_low[slab], zeff[slab] = 0.62, 0.50, 6.5
    t_high[disc], t_low[disc], zeff[disc] = 0.35, 0.12, 26.0
    noise = rng.normal(0.0, 0.01, (H, W)).astype(np.float32)
    t_high = np.clip(t_high + noise * slab, 0, 1).astype(np.float32)
    t_low = np.clip(t_low + noise * slab, 0, 1).astype(np.float32)
    return ConditionedImage(Modality.DUAL_ENERGY, t_high=t_high, t_low=t_low, zeff=zeff)


def _stfpm_like_map() -> np.ndarray:
    """16x16 map over the letterboxed 64x64 input: 0.9 over the disc, 0.1 elsewhere (padding included)."""
    x0, y0, x1, y1 = region_of(BOX, H, W)
    crop = np.where(_disc()[y0:y1, x0:x1], 0.9, 0.1).astype(np.float32)
    g = geometry((x0, y0, x1, y1), CONTRACT)
    model_input = np.full((64, 64), 0.1, np.float32)
    model_input[g.pad_y:g.pad_y + g.out_height, g.pad_x:g.pad_x + g.out_width] = cv2.resize(
        crop, (g.out_width, g.out_height), interpolation=cv2.INTER_AREA)
    assert g.pad_y > 0  # the 180x120 box is letterboxed: a map read without the padding would be misplaced
    return np.asarray(cv2.resize(model_input, (16, 16), interpolation=cv2.INTER_AREA), np.float32)


def _scored(score: float, with_map: bool = True) -> ScoredObject:
    return ScoredObject(Detection(BOX, 0.9, "laptop"), score, THRESHOLD, _stfpm_like_map() if with_map else None)


def _fill(parts: tuple[ObjectPart, ...], anomalous: bool) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    for p in parts:
        if p.anomalous is anomalous:
            cv2.fillPoly(out, [np.round(np.asarray(p.polygon_xray)).astype(np.int32)], 1)
    return out.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def flagged() -> ObjectResult:
    return localise_object(_scored(0.9), 3, _scene(), CONTRACT, LocaliseConfig())


def test_red_parts_cover_the_anomalous_disc_and_green_parts_the_rest(flagged: ObjectResult) -> None:
    disc, slab = _disc(), _slab()
    red, green = _fill(flagged.parts, True), _fill(flagged.parts, False)
    assert 4 <= len(flagged.parts) <= 24
    assert _iou(red, disc) > 0.5
    rest = slab & ~disc
    assert (green & rest).sum() / rest.sum() > 0.8
    assert (green & disc).sum() / disc.sum() < 0.2
    assert not (red | green)[~slab].any()  # the air around the slab is masked out: no part over the belt
    for part in flagged.parts:
        xs, ys = np.asarray(part.polygon_xray).T
        assert BOX.x1 - 1 <= xs.min() and xs.max() <= BOX.x2 and BOX.y1 - 1 <= ys.min() and ys.max() <= BOX.y2
        assert 3 <= len(part.polygon_xray) <= 32
        assert part.anomalous is (part.score >= THRESHOLD)
    assert [p.anomalous for p in flagged.parts] == sorted((p.anomalous for p in flagged.parts), reverse=True)


def test_object_outline_still_marks_the_anomalous_region(flagged: ObjectResult) -> None:
    region = np.zeros((H, W), np.uint8)
    cv2.fillPoly(region, [np.round(np.asarray(flagged.polygon_xray)).astype(np.int32)], 1)
    assert _iou(region.astype(bool), _disc()) > 0.6  # read through the letterbox geometry, the map lands right


def test_benign_mapless_and_switched_off_objects_get_no_parts() -> None:
    image = _scene()
    assert localise_object(_scored(0.3), 0, image, CONTRACT).parts == ()  # benign
    mapless = localise_object(_scored(0.9, with_map=False), 0, image, CONTRACT)  # a classifier's verdict
    assert mapless.anomalous and mapless.parts == ()
    off = localise_object(_scored(0.9), 0, image, CONTRACT, LocaliseConfig(subparts=False))
    assert off.anomalous and off.parts == ()


def test_an_image_without_a_plane_to_segment_keeps_the_verdict_without_parts() -> None:
    scene = _scene()
    z_only = ConditionedImage(Modality.DUAL_ENERGY, zeff=np.asarray(scene.zeff))  # neither h nor pc
    result = localise_object(_scored(0.9), 0, z_only, CONTRACT)
    assert result.anomalous and result.parts == () and len(result.polygon_xray) >= 3


def test_a_faint_hot_spot_still_shows_where_the_object_alarmed() -> None:
    """The object alarms on its map maximum; if no part's percentile reaches the threshold, the part holding
    the maximum is red, so an alarm is never drawn all green."""
    weak = _stfpm_like_map() * np.float32(0.6)  # disc at 0.54 before bilinear spreading, threshold 0.5
    obj = ScoredObject(Detection(BOX, 0.9, "laptop"), float(weak.max()), THRESHOLD, weak)
    result = localise_object(obj, 0, _scene(), CONTRACT, LocaliseConfig(score_percentile=100.0, work_side_px=96))
    red = _fill(result.parts, True)
    assert red.any() and (red & _disc()).sum() / red.sum() > 0.5
    strict = localise_object(obj, 0, _scene(), CONTRACT, LocaliseConfig(score_percentile=50.0))
    (peak,) = [p for p in strict.parts if p.anomalous]  # every part's median is below: only the peak's part
    assert peak.score < THRESHOLD
    assert (_fill((peak,), True) & _disc()).sum() / _fill((peak,), True).sum() > 0.8


def test_parts_are_published_and_bounded_by_the_item_schema(flagged: ObjectResult) -> None:
    benign = ObjectResult(1, BoxXyxy(0, 0, 10, 10), "book", 0.8, 0.1, THRESHOLD, False, ((0, 0), (10, 0), (0, 10)))
    now = time.time()
    decision = Decision("s1-000001", "s1", Verdict.ALARM, None, "", (flagged, benign), 0.9, now - 2, now - 1,
                        now, 12.0)
    body = json.loads(encode(decision_payload(decision, "site1", RecordKind.ITEM, None, None, None)))
    validator("xray-edge/item@2").validate(body)
    parts = body["objects"][0]["parts"]
    assert len(parts) == len(flagged.parts) and parts[0]["anomalous"] is True
    assert parts[0]["polygon_xray"][0] == list(flagged.parts[0].polygon_xray[0])
    assert "parts" not in body["objects"][1]  # optional: benign objects carry none
    alarm = json.loads(encode(decision_payload(decision, "site1", RecordKind.ALARM, None, None, None)))
    validator("xray-edge/alarm@2").validate(alarm)
    body["objects"][0]["parts"] = parts * 25  # more than the 24 allowed
    with pytest.raises(jsonschema.ValidationError):
        validator("xray-edge/item@2").validate(body)
    body["objects"][0]["parts"] = [dict(parts[0], polygon_xray=[[1.0, 2.0]] * 33)]  # more than 32 points
    with pytest.raises(jsonschema.ValidationError):
        validator("xray-edge/item@2").validate(body)


def test_overlay_draws_red_around_the_disc_and_green_elsewhere(flagged: ObjectResult) -> None:
    jpeg = draw_xray_overlay(_scene(), (flagged,))
    img = np.asarray(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), dtype=int)
    b, g, r = img[..., 0], img[..., 1], img[..., 2]
    red = (r - np.maximum(g, b)) > 60
    green = (g - np.maximum(r, b)) > 60
    near_disc = cv2.dilate(_disc().astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    disc_core = cv2.erode(_disc().astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    near_slab = cv2.dilate(_slab().astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # an object without reasons (not through the decide stage) is drawn red; its label text above the box and a
    # reason legend (bottom left) would be in that colour too: the outlines are what this test reads
    red[: int(np.nonzero(_disc())[0].min()) - 1] = False  # the label, drawn above the alarming outline
    red[H - 40:, : W // 2] = False
    assert red.sum() > 50 and green.sum() > 50
    assert red[near_disc].sum() / red.sum() > 0.9  # alarm outlines hug the disc
    assert green[near_slab & ~disc_core].sum() / green.sum() > 0.98  # green outlines: the slab, not the disc
    assert green[~near_disc].sum() > 0.5 * green.sum()  # ...and most of them away from it


def test_localise_section_errors_name_file_line_and_key(tmp_path: Path) -> None:
    base = "site:\n  site_id: hub\n  scanner_id: l1\nmodels:\n  detector: /x\nlocalise:\n"
    path = tmp_path / "edge.yaml"
    path.write_text(base + textwrap.indent("min_segments: 20\nmax_segments: 8\n", "  "), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:7: localise.min_segments: 20 exceeds localise.max_segments (8); "
                                   "expected min_segments <= max_segments"]
    path.write_text(base + "  max_segments: 30\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:7: localise.max_segments: ") and "24" in problem
    assert load_config(REPO / "systemd" / "edge.example.yaml").localise == LocaliseConfig()


def test_only_the_strongest_anomalous_objects_get_parts() -> None:
    from types import SimpleNamespace

    from edge.records import ItemMeta
    from edge.stages.localise import LocaliseStage
    from edge.stages.score import ScoredItem

    scores = (0.6, 0.95, 0.7, 0.2, 0.9, 0.8)
    meta = ItemMeta("lane-1-1", "lane-1", 1, 0.0, 1.0, 0.0, 1.0, 1e9)
    image = _scene()
    models = SimpleNamespace(scorer=SimpleNamespace(bundle=SimpleNamespace(contract=CONTRACT)))
    item = ScoredItem(meta, image, tuple(_scored(s) for s in scores), models)  # type: ignore[arg-type]
    out = LocaliseStage(LocaliseConfig(max_objects_with_parts=2))(item)
    with_parts = {i for i, o in enumerate(out.objects) if o.parts}
    assert with_parts == {1, 4}, "the two highest anomaly scores (0.95, 0.9)"
    assert all(o.anomalous == (s >= THRESHOLD) for o, s in zip(out.objects, scores, strict=True))
    none = LocaliseStage(LocaliseConfig(max_objects_with_parts=0))(item)
    assert not any(o.parts for o in none.objects)
