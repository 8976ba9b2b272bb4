"""Own-data training (issue 31): every dataset format through the readers `edge eval` uses, bad labels, resume,
threat classes in the bundle, and a smoke fine-tune on real SIXray images from ../shared.

Datasets are written here as real files (JPEG/PNG, XML, JSON, txt, csv) of the same four small scans; the
networks are real but tiny (width 8, 64 px) so that the whole file stays within a few CPU seconds, except the real
fine-tune, which starts from the shipped bundle at its own size for three steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge.condition.composer import geometry
from edge_tools.eval.records import DatasetError
from export.recipes import owntrain as ot
from export.recipes.cli import app
from export.recipes.owndata import is_dataset, load_labelled, split, store_contract

REPO = Path(__file__).resolve().parents[2]
SIXRAY = REPO.parent / "shared" / "realdata" / "xray" / "sixray-labelled"
W, H = 96, 64
# (image name, class, box x1 y1 x2 y2) — one object per scan, two classes
OBJECTS = [("s1.png", "gun", (10, 8, 40, 30)), ("s2.png", "knife", (50, 20, 90, 44)),
           ("s3.png", "gun", (20, 30, 60, 60)), ("s4.png", "knife", (5, 5, 35, 55))]
CLASSES = ("gun", "knife")


def _scan(box: tuple[int, int, int, int], grey: bool) -> np.ndarray:
    """A bright (air) picture with a dark object: colour (BGR, as cv2 writes) or grey."""
    img = np.full((H, W, 3), 235, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = (180, 90, 40)
    return np.ascontiguousarray(img[:, :, 0]) if grey else img


def _images(root: Path, grey: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    for name, _, box in OBJECTS:
        cv2.imwrite(str(root / "images" / name), _scan(box, grey))
    return root


def make_voc(root: Path) -> Path:
    _images(root)
    (root / "annotations_voc").mkdir()
    for name, cls, (x1, y1, x2, y2) in OBJECTS:
        (root / "annotations_voc" / f"{Path(name).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{W}</width><height>{H}</height></size>"
            f"<object><name>{cls}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object></annotation>")
    return root


def make_coco(root: Path) -> Path:
    _images(root)
    images = [{"id": i + 1, "file_name": f"images/{n}", "width": W, "height": H} for i, (n, _, _) in
              enumerate(OBJECTS)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": CLASSES.index(c) + 1,
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, (_, c, b) in enumerate(OBJECTS)]
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def make_yolo(root: Path) -> Path:
    _images(root)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for name, cls, (x1, y1, x2, y2) in OBJECTS:
        (root / "labels" / f"{Path(name).stem}.txt").write_text(
            f"{CLASSES.index(cls)} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} {(y2 - y1) / H}\n")
    return root


def make_gdxray(root: Path) -> Path:
    _images(root, grey=True)
    rows = "".join(f"{n},B,1,{c},gt,{b[0]},{b[1]},{b[2]},{b[3]}\n" for n, c, b in OBJECTS)
    (root / "boxes_xyxy.csv").write_text("image,series,index,class_assumed,box_source,x_min,y_min,x_max,y_max\n"
                                         + rows)
    return root


FORMATS = {"voc": make_voc, "coco": make_coco, "yolo": make_yolo, "gdxray": make_gdxray}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_gives_the_same_training_boxes(tmp_path: Path, fmt: str) -> None:
    root = FORMATS[fmt](tmp_path / fmt)
    assert is_dataset(root)
    loaded = load_labelled(root, "pc", 64, progress=False)
    data = loaded.data
    assert loaded.layout == fmt and loaded.skipped == ()
    assert data.classes == CLASSES and data.images.shape == (4, 3, 64, 64)
    g = geometry((0, 0, W, H), store_contract("pc", 64))  # the runtime's letterbox: 64 x 43 px of scan, air above
    pad = g.pad_y
    assert g.pad_x == 0 and pad == 10
    for name, cls, box in OBJECTS:
        i = next(k for k, key in enumerate(data.keys) if Path(name).stem in key)  # COCO keys: 000001-s1
        want = np.asarray(box, np.float32) * np.array([g.scale_x, g.scale_y] * 2, np.float32) \
            + np.array([0, pad, 0, pad], np.float32)
        np.testing.assert_allclose(data.boxes[i][0], want, atol=0.02)
        assert data.classes[int(data.labels[i][0])] == cls
        x1, y1, x2, y2 = (round(float(v)) for v in want)
        inside = data.images[i][:, y1 + 2:y2 - 2, x1 + 2:x2 - 2]
        assert inside.mean() < 200 < data.images[i][:, 0:pad, :].mean()  # the object is dark, the padding air


def _break_voc_box(root: Path) -> str:
    xml = root / "annotations_voc" / "s2.xml"
    xml.write_text(xml.read_text().replace("<xmax>90</xmax>", "<xmax>140</xmax>"))
    return "s2.xml"


def _break_yolo_class(root: Path) -> str:
    (root / "labels" / "s3.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    return "s3.txt:1"


def _break_coco_image(root: Path) -> str:
    (root / "images" / "s4.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return "s4.png"


def _break_gdxray_class(root: Path) -> str:
    csv = root / "boxes_xyxy.csv"
    csv.write_text(csv.read_text().replace("s1.png,B,1,gun", "s1.png,B,1,grenade"))
    return "boxes_xyxy.csv:2"


BREAKS = {"voc-box-outside": (make_voc, _break_voc_box, "outside the 96x64 image"),
          "yolo-unknown-class": (make_yolo, _break_yolo_class, "class 7 is not one of the 2"),
          "coco-unreadable-image": (make_coco, _break_coco_image, "unreadable image"),
          "gdxray-unknown-class": (make_gdxray, _break_gdxray_class, "'grenade' is not one of the classes")}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_bad_label_names_its_file_or_is_skipped_and_counted(tmp_path: Path, case: str) -> None:
    make, corrupt, why = BREAKS[case]
    root = make(tmp_path / "ds")
    where = corrupt(root)
    classes = CLASSES if case.startswith("gdxray") else None
    with pytest.raises(DatasetError) as err:
        load_labelled(root, "pc", 64, classes=classes, progress=False)
    assert where in str(err.value) and why in str(err.value)
    loaded = load_labelled(root, "pc", 64, classes=classes, skip_bad=True, progress=False)
    assert len(loaded.data) == 3 and len(loaded.skipped) == 1 and where in loaded.skipped[0]


def test_cli_trains_on_a_coco_folder_and_refuses_a_non_dataset_cleanly(tmp_path: Path) -> None:
    """Before issue 31 a COCO or VOC folder ended in a raw FileNotFoundError traceback."""
    root = make_coco(tmp_path / "coco")
    runner = CliRunner()
    ckpt = tmp_path / "own.pt"
    res = runner.invoke(app, ["detector", "--data", str(root), "--ckpt", str(ckpt), "--steps", "2", "--batch", "2",
                              "--size", "64", "--width", "8", "--fpn", "16", "--val-split", "0.25",
                              "--threat", "knife=0.3"])
    assert res.exit_code == 0, res.output
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2 and state["config"].classes == CLASSES
    assert state["config"].threats == (("knife", 0.3),)
    assert '"recall50_at_20"' in res.stdout
    empty = tmp_path / "nothing"
    empty.mkdir()
    res = runner.invoke(app, ["detector", "--data", str(empty), "--ckpt", str(tmp_path / "x.pt")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "edge-export: error" in res.output and "labelled dataset" in res.output
    bad = make_voc(tmp_path / "voc")
    _break_voc_box(bad)
    res = runner.invoke(app, ["detector", "--data", str(bad), "--ckpt", str(tmp_path / "y.pt"), "--steps", "1",
                              "--size", "64", "--width", "8", "--fpn", "16"])
    assert res.exit_code == 1 and "s2.xml" in res.output and isinstance(res.exception, SystemExit)
    res = runner.invoke(app, ["detector-classes", "--data", str(root), "--ckpt", str(tmp_path / "z.pt")])
    assert res.exit_code == 1 and "train detector --data" in res.output and isinstance(res.exception, SystemExit)


def _cfg(**kw: object) -> ot.OwnConfig:
    base: dict[str, object] = {"steps": 4, "batch": 2, "size": 64, "width": 8, "fpn": 16, "classes": CLASSES,
                               "checkpoint_every": 100}
    return ot.OwnConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    data = load_labelled(make_voc(tmp_path / "voc"), "pc", 64, progress=False).data
    ckpt = tmp_path / "own.pt"
    ot.train(data, ckpt, _cfg(), progress=lambda _m: None, until=2, bar=False)
    paused = torch.load(ckpt, weights_only=False)
    assert paused["step"] == 2
    said: list[str] = []
    model = ot.train(data, ckpt, _cfg(), progress=said.append, bar=False)
    assert any("resumed" in m and "at step 2" in m for m in said)
    done = torch.load(ckpt, weights_only=False)
    assert done["step"] == 4
    changed = [k for k, v in done["model"].items() if v.dtype.is_floating_point
               and not torch.equal(v, paused["model"][k])]
    assert changed  # the two further steps trained
    assert torch.equal(model.state_dict()["cls.weight"], done["model"]["cls.weight"])
    with pytest.raises(ValueError, match="trained on classes"):
        ot.train(data, ckpt, _cfg(classes=("gun",)), progress=lambda _m: None, bar=False)


def test_real_augmentation_keeps_the_palette_hues(tmp_path: Path) -> None:
    """Real scans: contrast/brightness/gamma on the attenuation, never a hue rotation or channel swap."""
    src = np.zeros((3, 48, 48), np.uint8)
    src[0], src[1], src[2] = 230, 120, 40  # an orange (organic) plane
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, _, _ = ot.augment_real(src, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng, 48,
                                  ot.det.Geometry(1.0, 1.0))
        rgb = x.numpy() * 0.25 + 0.5
        centre = rgb[:, 20:28, 20:28].mean(axis=(1, 2))
        assert centre[0] > centre[1] > centre[2]  # still orange: red above green above blue


def test_threat_classes_reach_the_bundle(tmp_path: Path) -> None:
    from edge.bundles import load_bundle

    root = make_yolo(tmp_path / "yolo")
    data = load_labelled(root, "pc", 64, progress=False).data
    cfg = _cfg(steps=2, size=64, threats=ot.threat_map(["knife=0.35"], CLASSES))
    ot.train(data, tmp_path / "t.pt", cfg, progress=lambda _m: None, bar=False)
    res = CliRunner().invoke(app, ["pack-own", "--ckpt", str(tmp_path / "t.pt"), "--data", str(root), "--val",
                                   str(root), "-o", str(tmp_path / "bundle"), "--no-int8", "--version", "0.1"])
    assert res.exit_code == 0, res.output
    again = load_bundle(tmp_path / "bundle")
    assert again.manifest.classes == CLASSES and again.contract.width == 64
    assert dict(again.manifest.threat_classes) == {"knife": 0.35}
    assert "threat_classes:" in (tmp_path / "bundle" / "bundle.yaml").read_text()
    with pytest.raises(ValueError, match="not one of the classes"):
        ot.threat_map(["grenade"], CLASSES)
    assert ot.threat_map(["all", "gun=0.3"], CLASSES) == (("gun", 0.3), ("knife", ot.AUTO))
    chosen = dict(ot.choose_threat_thresholds(ot.from_checkpoint(tmp_path / "t.pt")[0], data,
                                              (("gun", ot.AUTO), ("knife", 0.35)), 0.0))
    assert chosen["knife"] == 0.35 and 0.05 <= chosen["gun"] <= 1.0
    from export.recipes.owneval import image_hits

    hits = image_hits(tmp_path / "yolo" / "images", tmp_path / "bundle", "knife", threshold=0.0)
    assert hits["images"] == 4 and hits["threshold"] == 0.0
    assert hits["images_with_knife"] <= hits["images_with_any_box"] <= 4
    assert image_hits(tmp_path / "yolo" / "images", tmp_path / "bundle", "knife")["threshold"] == 0.35


def test_split_holds_out_a_seeded_share() -> None:
    tr, va = split(10, 0.2, 0)
    assert len(va) == 2 and len(tr) == 8 and not set(tr) & set(va)
    assert np.array_equal(split(10, 0.2, 0)[1], va)


def test_smoke_fine_tune_on_real_sixray_images(tmp_path: Path) -> None:
    """Three steps from the shipped detector on six real SIXray images (research-only: weights go to tmp_path)."""
    if not (SIXRAY / "train" / "annotations_voc").is_dir():
        pytest.skip(f"{SIXRAY} is absent (real SIXray images live in ../shared/realdata, never in the repo)")
    root = tmp_path / "sx"
    (root / "images").mkdir(parents=True)
    (root / "annotations_voc").mkdir()
    for xml in sorted((SIXRAY / "train" / "annotations_voc").glob("*.xml"))[:6]:
        shutil.copy(xml, root / "annotations_voc" / xml.name)
        image = next((SIXRAY / "train" / "images").glob(f"{xml.stem}.*"))
        (root / "images" / image.name).symlink_to(image)
    data = load_labelled(root, "pc", 320, progress=False).data
    assert len(data) == 6 and set(data.classes) <= {"gun", "knife", "wrench"}
    cfg = ot.OwnConfig(steps=3, batch=2, size=320, classes=data.classes, init=str(REPO / "models" /
                                                                                  "detector-agnostic"))
    said: list[str] = []
    model = ot.train(data, tmp_path / "ft.pt", cfg, progress=said.append, bar=False)
    assert any("initialised" in m and "detector-agnostic" in m for m in said)
    state = torch.load(tmp_path / "ft.pt", weights_only=False)
    assert state["step"] == 3 and state["config"].frozen_bn and state["config"].width == 24
    report = ot.validate(model, data)
    assert 0.0 <= report["recall50_at_20"] <= 1.0 and set(report["AP_per_class"]) <= set(data.classes)


def test_classifier_and_scorer_crops_from_a_dataset(tmp_path: Path) -> None:
    """`train classifier|scorer --data DATASET`: a crop per labelled box, benign windows that overlap no box."""
    from export.recipes.owncrops import BACKGROUND, dataset_crops

    root = make_voc(tmp_path / "voc")
    crops, skipped = dataset_crops(root, "pc", background=2)
    assert skipped == ()
    labelled = crops.kind != BACKGROUND
    assert int(labelled.sum()) == len(OBJECTS) and crops.threat[labelled].all() and not crops.threat[~labelled].any()
    assert (~labelled).sum() >= 4
    assert crops.crops.shape[1:] == (6, 64, 64)
    assert not crops.crops[:, 0:3].any() and crops.crops[:, 3:6].any()  # pc filled, hlz (unavailable) left zero
    dark = crops.crops[labelled, 3:6].astype(np.float32).mean()
    assert dark < crops.crops[~labelled, 3:6].astype(np.float32).mean()  # objects darker than empty windows
    with pytest.raises(DatasetError, match="--channels pc"):
        dataset_crops(root, "hlz")
    _break_voc_box(root)
    with pytest.raises(DatasetError, match=r"s2\.xml"):
        dataset_crops(root, "pc")
    assert len(dataset_crops(root, "pc", skip_bad=True)[1]) == 1


def test_init_from_the_class_aware_bundle_keeps_its_network() -> None:
    """--init models/detector-classes: rebuilt from its ONNX graph (batch norms partly folded, the class tower's
    statistics stored once with the head tower's); a head of another class count starts fresh, nothing else."""
    from edge.bundles import load_bundle
    from export.parity import Candidate, run_candidate

    bundle = REPO / "models" / "detector-classes"
    weights, (width, fpn, context), folded = ot._source_weights(str(bundle))
    assert folded and (width, fpn, context) == (24, 48, True)
    three = ot.build(ot.OwnConfig(classes=(*CLASSES, "wrench"), width=width, fpn=fpn, context=context))
    assert ot.initialise(three, weights)[1] == ["cls.bias", "cls.weight"]
    loaded = load_bundle(bundle, verify_hashes=False)
    same = ot.build(ot.OwnConfig(classes=loaded.manifest.classes, width=width, fpn=fpn, context=context))
    assert ot.initialise(same, weights)[1] == []
    x = np.random.default_rng(0).normal(size=(1, 3, 320, 320)).astype(np.float32)
    onnx = next(m for m in loaded.manifest.models if m.format == "onnx")
    want = run_candidate(Candidate("onnxruntime", onnx.precision, loaded.root / onnx.path), x, threads=1)
    with torch.inference_mode():
        _, scores, labels = same.eval()(torch.from_numpy(x))
    np.testing.assert_allclose(scores.numpy(), want["scores"], atol=1e-4)
    assert (labels.numpy() == want["labels"]).mean() > 0.99


def test_eval_own_on_a_folder_that_is_no_dataset_says_so_in_one_line(tmp_path: Path) -> None:
    """It ended in a DatasetError traceback."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a dataset")
    config = tmp_path / "edge.yaml"
    config.write_text("site: {site_id: a, scanner_id: b}\nmodels: {detector: /nowhere}\n")
    res = CliRunner().invoke(app, ["eval-own", str(folder), "-c", str(config)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "edge-export: error" in res.output and str(folder) in res.output
