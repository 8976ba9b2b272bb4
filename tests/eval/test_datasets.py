"""Dataset readers: small hand-made folders in each layout, corrupt files, and the real GDXray/SIXray folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.records import ItemMeta
from edge.sources.item_meta import file_item_meta
from edge_tools.eval.datasets import detect_layout, load_raw_item, read_dataset
from edge_tools.eval.records import DatasetError, Modality
from tests.eval.eval_helpers import EvalAssets

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "xray"


def _meta(n: int = 0) -> ItemMeta:
    return file_item_meta("lane", n, f"item{n}", 30.0)


def _gdxray(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    grey = np.full((40, 60), 200, np.uint8)
    grey[10:20, 10:30] = 40
    cv2.imwrite(str(root / "images" / "B1_0001.png"), grey)
    cv2.imwrite(str(root / "images" / "B1_0002.png"), grey)
    (root / "boxes_xyxy.csv").write_text(
        "image,series,index,class_assumed,box_source,x_min,y_min,x_max,y_max\n"
        "B1_0001.png,B1,1,handgun,gt,10,10,30,20\n"
        "B1_0009.png,B1,9,handgun,gt,1,1,5,5\n")
    return root


def test_gdxray_layout(tmp_path: Path) -> None:
    ds = read_dataset(_gdxray(tmp_path / "gd"))
    assert ds.layout == "gdxray"
    by_key = {i.key: i for i in ds.items}
    assert set(by_key) == {"B1_0001.png", "B1_0002.png", "B1_0009.png"}  # the boxed but missing image is kept
    first = by_key["B1_0001.png"].truth
    assert first.threat and first.threat_kinds == ("handgun",)
    assert first.objects[0].box == (10.0, 10.0, 30.0, 20.0)
    assert not by_key["B1_0002.png"].truth.threat  # no box: a benign item
    raw = load_raw_item(by_key["B1_0001.png"], _meta())
    assert raw.problem is None and raw.image is not None and raw.image.shape == (40, 60, 3)
    assert np.array_equal(raw.image[:, :, 0], raw.image[:, :, 2])  # grey handed on as R = G = B
    grey = load_raw_item(by_key["B1_0001.png"], _meta(), grey_as_colour=False)
    assert grey.image is not None and grey.image.shape == (40, 60)
    gone = load_raw_item(by_key["B1_0009.png"], _meta())
    assert gone.image is None and gone.problem is not None and "missing" in gone.problem


def test_voc_layout_with_image_labels(tmp_path: Path) -> None:
    root = tmp_path / "sx"
    (root / "images").mkdir(parents=True)
    (root / "annotations_voc").mkdir()
    (root / "labels_cls").mkdir()
    colour = np.zeros((30, 50, 3), np.uint8)
    colour[:, :, 1] = 120  # green: a real colour image, not grey
    for name in ("P1", "P2", "P3"):
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), colour)
    (root / "annotations_voc" / "P1.xml").write_text(
        "<annotation><filename>P1.jpg</filename><object><name>Knife</name><bndbox><xmin>2</xmin><ymin>3</ymin>"
        "<xmax>20</xmax><ymax>13</ymax></bndbox></object></annotation>")
    (root / "labels_cls" / "labels.csv").write_text("name,Gun,Knife\nP1,1,1\nP2,-1,-1\nP3,1,-1\n")
    ds = read_dataset(root)
    assert ds.layout == "voc"
    t = {i.key: i.truth for i in ds.items}
    assert t["P1.jpg"].threat_kinds == ("gun", "knife") and t["P1.jpg"].objects[0].kind == "knife"
    assert not t["P2.jpg"].threat
    assert t["P3.jpg"].threat and t["P3.jpg"].objects == ()  # image-level label only
    raw = load_raw_item(ds.items[0], _meta())
    assert raw.image is not None and raw.image.shape == (30, 50, 3)
    assert abs(int(raw.image[0, 0, 1]) - 120) <= 3 and raw.image[0, 0, 0] < 10  # BGR file → RGB item
    (root / "annotations_voc" / "P2.xml").write_text("<annotation><object><name>gun</name></object>")
    with pytest.raises(DatasetError, match=r"P2\.xml"):
        read_dataset(root)


def test_coco_degraded_and_threat_rules(tmp_path: Path) -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :, 2] = 200
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png", "threat": False}],
            "categories": [{"id": 1, "name": "gun"}, {"id": 2, "name": "bottle"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
                            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5]}]}
    ann = tmp_path / "coco.json"
    ann.write_text(json.dumps(coco))
    assert detect_layout(ann) == "coco"
    ds = read_dataset(ann, threat_kinds={"gun"})
    a, b = ds.items
    assert a.modality is Modality.IMAGE and a.truth.threat and a.truth.objects[0].box == (1.0, 2.0, 4.0, 6.0)
    assert not b.truth.threat and not b.truth.objects[0].threat
    every = read_dataset(ann)  # no threat flags, no kinds: every annotated object is a threat (noted)
    assert every.items[0].truth.threat and any("threat" in n for n in every.notes)
    corrupt = load_raw_item(b, _meta())
    assert corrupt.problem is not None and "corrupt" in corrupt.problem
    coco["annotations"][0]["bbox"] = [1, 2, -3, 4]
    ann.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="negative"):
        read_dataset(ann)


def test_sim_output_is_read_as_raw_with_hosts(eval_assets: EvalAssets) -> None:
    eval_assets_dataset = eval_assets.dataset
    ds = read_dataset(eval_assets_dataset)
    coco = json.loads((eval_assets_dataset / "annotations.json").read_text())
    assert ds.layout == "sim" and len(ds.items) == len(coco["images"])
    assert all(i.modality is Modality.RAW for i in ds.items)
    # Containers are not detector ground truth; everything else is.
    kept = sum(1 for a in coco["annotations"] if a["group"] != "container")
    assert sum(len(i.truth.objects) for i in ds.items) == kept
    assert [i.truth.threat for i in ds.items] == [bool(im["threat"]) for im in coco["images"]]
    hosted = [a for a in coco["annotations"] if a["host_id"] is not None]
    if hosted:
        assert any(o.host_box is not None for i in ds.items for o in i.truth.objects)
    raw = load_raw_item(ds.items[0], _meta())
    assert raw.high is not None and raw.low is not None and raw.high.dtype == np.uint16


def test_unknown_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a dataset"):
        read_dataset(tmp_path)
    with pytest.raises(DatasetError, match="layout 'kitti' is not valid"):
        read_dataset(tmp_path, "kitti")


def test_real_gdxray_and_sixray() -> None:
    if not REALDATA.is_dir():
        pytest.skip(f"real images not available at {REALDATA}")
    gd = read_dataset(REALDATA / "gdxray")
    assert len(gd.items) == 13 and all(i.truth.threat for i in gd.items)
    raw = load_raw_item(gd.items[0], _meta())
    assert raw.problem is None and raw.image is not None and raw.image.shape[2] == 3
    sx = read_dataset(REALDATA / "sixray")
    truth = {i.key: i.truth for i in sx.items}
    assert len(truth) == 13
    assert len(truth["P00002.jpg"].objects) == 2 and "gun" in truth["P00002.jpg"].threat_kinds
    assert truth["P00005.jpg"].threat and truth["P00005.jpg"].objects == ()
