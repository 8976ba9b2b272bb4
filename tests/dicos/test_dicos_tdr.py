"""Our TDRs: every tag has the DICOS number and VR, and write → read gives back the decision's fields."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from edge.dicos import build_tdr, read_tdr, write_tdr
from edge.records import Decision, UnscreenedReason, Verdict
from tests.dicos.dicos_helpers import MODELS, T0, anomaly, benign, decision, knife

# (group, element) -> VR. Sources: ../shared/realdata/dicos/DUMP.md and the element listings of the real
# Stratovan TDRs ("D"), or DICOM PS3.6 / DICOS for elements the samples do not carry ("S"). Written out
# here on purpose: the code under test is not consulted.
TDR_TAGS: dict[tuple[int, int], str] = {
    (0x0008, 0x0005): "CS",  # S  Specific Character Set
    (0x0008, 0x0012): "DA",  # D  Instance Creation Date
    (0x0008, 0x0013): "TM",  # D  Instance Creation Time
    (0x0008, 0x0016): "UI",  # D  SOP Class UID
    (0x0008, 0x0018): "UI",  # D  SOP Instance UID
    (0x0008, 0x0020): "DA",  # D  Study Date
    (0x0008, 0x0021): "DA",  # D  Series Date
    (0x0008, 0x0023): "DA",  # D  Content Date
    (0x0008, 0x0030): "TM",  # D  Study Time
    (0x0008, 0x0031): "TM",  # D  Series Time
    (0x0008, 0x0033): "TM",  # D  Content Time
    (0x0008, 0x0060): "CS",  # D  Modality
    (0x0008, 0x0070): "LO",  # D  Manufacturer
    (0x0008, 0x0080): "LO",  # D  Institution Name
    (0x0008, 0x0081): "ST",  # D  Institution Address
    (0x0008, 0x1010): "SH",  # D  Station Name
    (0x0008, 0x1040): "LO",  # D  Institutional Department Name
    (0x0008, 0x1070): "PN",  # S  Operators' Name (OPERATOR reports)
    (0x0008, 0x1090): "LO",  # D  Manufacturer's Model Name
    (0x0008, 0x1110): "SQ",  # D  Referenced Study Sequence
    (0x0008, 0x114A): "SQ",  # D  Referenced Instance Sequence
    (0x0008, 0x1150): "UI",  # D  Referenced SOP Class UID
    (0x0008, 0x1155): "UI",  # D  Referenced SOP Instance UID
    (0x0010, 0x0020): "LO",  # D  Patient ID (OOI ID)
    (0x0010, 0x0021): "LO",  # D  Issuer of Patient ID
    (0x0010, 0x0022): "CS",  # D  Type of Patient ID
    (0x0010, 0x0040): "CS",  # D  Patient's Sex (OOI owner)
    (0x0010, 0x1002): "SQ",  # D  Other Patient IDs Sequence
    (0x0018, 0x1000): "LO",  # D  Device Serial Number
    (0x0018, 0x1020): "LO",  # D  Software Versions
    (0x0020, 0x000D): "UI",  # D  Study Instance UID
    (0x0020, 0x000E): "UI",  # D  Series Instance UID
    (0x0020, 0x0010): "SH",  # D  Study ID
    (0x0020, 0x0013): "IS",  # D  Instance Number
    (0x0020, 0x0052): "UI",  # D  Frame of Reference UID
    (0x0020, 0x1040): "LO",  # D  Position Reference Indicator
    (0x4010, 0x1001): "SQ",  # D  Threat ROI Voxel Sequence
    (0x4010, 0x1004): "FL",  # D  Threat ROI Base
    (0x4010, 0x1005): "FL",  # D  Threat ROI Extents
    (0x4010, 0x1006): "OB",  # D  Threat ROI Bitmap
    (0x4010, 0x1010): "US",  # D  Potential Threat Object ID
    (0x4010, 0x1011): "SQ",  # D  Threat Sequence
    (0x4010, 0x1012): "CS",  # D  Threat Category
    (0x4010, 0x1013): "LT",  # D  Threat Category Description
    (0x4010, 0x1014): "CS",  # D  ATD Ability Assessment
    (0x4010, 0x1015): "CS",  # D  ATD Assessment Flag
    (0x4010, 0x1016): "FL",  # D  ATD Assessment Probability
    (0x4010, 0x101D): "FL",  # D  Bounding Polygon
    (0x4010, 0x1021): "CS",  # S  Abort Reason
    (0x4010, 0x1024): "CS",  # D  Abort Flag
    (0x4010, 0x1027): "CS",  # D  TDR Type
    (0x4010, 0x1029): "LO",  # D  Threat Detection Algorithm and Version
    (0x4010, 0x102B): "DT",  # D  Alarm Decision Time
    (0x4010, 0x1031): "CS",  # D  Alarm Decision
    (0x4010, 0x1033): "US",  # D  Number of Total Objects
    (0x4010, 0x1034): "US",  # D  Number of Alarm Objects
    (0x4010, 0x1037): "SQ",  # D  PTO Representation Sequence
    (0x4010, 0x1038): "SQ",  # D  ATD Assessment Sequence
    (0x4010, 0x103A): "CS",  # D  DICOS Version
    (0x4010, 0x1042): "CS",  # D  OOI Type
    (0x4010, 0x1044): "CS",  # D  Acquisition Status
    (0x4010, 0x1048): "CS",  # D  Scan Type
    (0x4010, 0x1064): "SQ",  # D  Algorithm Routing Code Sequence
    (0x4010, 0x1069): "FL",  # D  Total Processing Time
    (0x4010, 0x106D): "CS",  # D  Additional Screening Performed
}
REQUIRED_TDR_TAGS = {
    (0x0008, 0x0016),
    (0x0008, 0x0018),
    (0x0008, 0x0060),
    (0x4010, 0x1011),
    (0x4010, 0x1024),
    (0x4010, 0x1027),
    (0x4010, 0x1029),
    (0x4010, 0x102B),
    (0x4010, 0x1031),
    (0x4010, 0x1033),
    (0x4010, 0x1034),
    (0x4010, 0x1069),
}
SOP_CLASS_TDR = "1.2.840.10008.5.1.4.1.1.501.3"


def _written_tags(ds: pydicom.Dataset) -> dict[tuple[int, int], str]:
    return {(el.tag.group, el.tag.element): el.VR for el in ds.iterall()}


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the toolkit's leading-zero UIDs
def test_the_tag_table_agrees_with_the_real_files(real_dicos: Path) -> None:
    """Guard the table itself: every tag in it that a real TDR carries has the same VR there."""
    seen = 0
    for name in ("CTwithTDR_TDR.dcs", "MultiplePTOsTDR.dcs", "SimpleBaggageTDR.dcs"):
        for tag, vr in _written_tags(pydicom.dcmread(real_dicos / name)).items():
            if tag in TDR_TAGS:
                assert TDR_TAGS[tag] == vr, f"{name} {tag}"
                seen += 1
    assert seen > 40


@pytest.mark.parametrize(
    "d",
    [
        decision(Verdict.ALARM),
        decision(Verdict.CLEAR),
        decision(Verdict.UNSCREENED, objects=(), reason=UnscreenedReason.DEADLINE_MISSED),
    ],
    ids=["alarm", "clear", "unscreened"],
)
def test_every_written_tag_has_the_dicos_number_and_vr(tmp_path: Path, d: Decision) -> None:
    path = tmp_path / "r.dcs"
    write_tdr(d, path, dx_uids=("1.2.3.4", "1.2.3.5"), include_benign=True)
    ds = pydicom.dcmread(path)  # Explicit VR: the VRs below are the ones in the file
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.MediaStorageSOPClassUID == SOP_CLASS_TDR
    written = _written_tags(ds)
    unknown = {tag: vr for tag, vr in written.items() if tag not in TDR_TAGS}
    assert unknown == {}
    wrong = {tag: (vr, TDR_TAGS[tag]) for tag, vr in written.items() if TDR_TAGS[tag] != vr}
    assert wrong == {}
    assert set(written) >= REQUIRED_TDR_TAGS


def test_alarm_round_trip(tmp_path: Path) -> None:
    d = decision(Verdict.ALARM)
    data = write_tdr(d, tmp_path / "a.dcs", dx_uids=("1.2.3.4", "1.2.3.5"), study_uid="1.2.3.9")
    assert data == (tmp_path / "a.dcs").read_bytes()
    report = read_tdr(tmp_path / "a.dcs")
    from_bytes = read_tdr(data)
    assert from_bytes.sop_instance_uid == report.sop_instance_uid
    assert [o.pto_id for o in from_bytes.objects] == [o.pto_id for o in report.objects]

    assert report.tdr_type == "MACHINE"
    assert report.alarm_decision == "ALARM" and report.verdict is Verdict.ALARM
    assert report.abort_flag == "SUCCESS" and report.abort_reasons == ()
    assert report.item_id == "parcel-000123"
    assert report.study_instance_uid == "1.2.3.9"
    assert report.alarm_decision_time is not None
    assert report.alarm_decision_time.timestamp() == pytest.approx(T0, abs=1e-6)
    assert report.alarm_decision_time.utcoffset() is not None
    assert report.total_processing_time_ms == pytest.approx(187.5)
    # Only the anomalous objects are written (knife, anomaly); the benign one is not.
    assert (report.number_of_total_objects, report.number_of_alarm_objects) == (2, 2)
    assert report.inconsistencies == ()
    by_id = {o.pto_id: o for o in report.objects}
    assert set(by_id) == {7, 3}

    k, src = by_id[7], knife()
    assert k.box is not None
    assert (k.box.x1, k.box.y1, k.box.x2, k.box.y2) == (
        math.floor(src.box.x1),
        math.floor(src.box.y1),
        math.ceil(src.box.x2),
        math.ceil(src.box.y2),
    )
    assert k.rois[0].base[2] == 0.0 and k.rois[0].extents[2] == 1.0  # a 2-D image: z 0, depth 1
    assert k.referenced_uids == ("1.2.3.4", "1.2.3.5")
    assert [(x, y) for x, y, _ in k.polygon] == [pytest.approx(p) for p in src.polygon_xray]
    (ka,) = k.assessments
    assert (ka.flag, ka.category, ka.description, ka.ability) == ("THREAT", "KNIFE", "knife", "NO_INTERFERENCE")
    assert ka.probability == pytest.approx(0.83, abs=1e-6)

    a = by_id[3]
    (aa,) = a.assessments
    assert (aa.flag, aa.category) == ("THREAT", "ANOMALY")
    assert aa.probability == 1.0  # 1.7 clipped to a probability
    assert a.polygon == () and a.rois[0].bitmap is None  # no outline, no bitmap

    assert report.algorithm.name == "xray-edge"
    assert [(m.role, m.name, m.version) for m in report.algorithm.models] == [
        (m.role, m.name, m.version) for m in MODELS
    ]
    assert [m.sha256_prefix for m in report.algorithm.models] == [m.sha256[:12] for m in MODELS]


def test_bitmap_is_the_rasterised_outline(tmp_path: Path) -> None:
    write_tdr(decision(Verdict.ALARM, objects=(knife(),)), tmp_path / "k.dcs")
    (obj,) = read_tdr(tmp_path / "k.dcs").objects
    (roi,) = obj.rois
    bitmap = roi.bitmap
    assert bitmap is not None
    x0, y0 = int(roi.base[0]), int(roi.base[1])
    assert bitmap.shape == (1, int(roi.extents[1]), int(roi.extents[0]))
    # The outline is the rectangle x 110..170, y 45..85 (inclusive pixel corners) inside the box.
    expected = np.zeros(bitmap.shape[1:], dtype=bool)
    expected[45 - y0 : 85 - y0 + 1, 110 - x0 : 170 - x0 + 1] = True
    np.testing.assert_array_equal(bitmap[0], expected)


def test_clear_round_trip_has_no_objects_unless_asked(tmp_path: Path) -> None:
    d = decision(Verdict.CLEAR)
    report = read_tdr(write_tdr(d, tmp_path / "c.dcs"))
    assert report.alarm_decision == "CLEAR" and report.verdict is Verdict.CLEAR
    assert report.objects == () and report.number_of_total_objects == 0 and report.number_of_alarm_objects == 0
    with_benign = read_tdr(write_tdr(d, tmp_path / "cb.dcs", include_benign=True))
    (obj,) = with_benign.objects
    assert obj.pto_id == 12 and obj.assessments[0].flag == "NO_THREAT"
    assert obj.assessments[0].probability == pytest.approx(0.12, abs=1e-6)
    assert (with_benign.number_of_total_objects, with_benign.number_of_alarm_objects) == (1, 0)
    assert with_benign.verdict is Verdict.CLEAR and with_benign.inconsistencies == ()


@pytest.mark.parametrize("reason", list(UnscreenedReason))
def test_unscreened_is_an_aborted_alarm_with_its_reason(tmp_path: Path, reason: UnscreenedReason) -> None:
    d = decision(Verdict.UNSCREENED, objects=(), reason=reason)
    report = read_tdr(write_tdr(d, tmp_path / f"{reason.value}.dcs"))
    assert report.abort_flag == "ABORT"
    assert report.alarm_decision == "ALARM"  # a reader that looks only here still sends it to a person
    assert report.verdict is Verdict.UNSCREENED
    assert report.unscreened_reason is reason
    (code,) = report.abort_reasons
    assert len(code) <= 16 and code == code.upper()  # a valid CS value


def test_rewriting_the_same_decision_gives_identical_bytes(tmp_path: Path) -> None:
    d = decision(Verdict.ALARM)
    first = write_tdr(d, tmp_path / "x.dcs")
    second = write_tdr(d, tmp_path / "x.dcs")
    assert first == second
    other = write_tdr(decision(Verdict.ALARM, item_id="parcel-000124"), tmp_path / "y.dcs")
    assert read_tdr(other).sop_instance_uid != read_tdr(first).sop_instance_uid


def test_atomic_write_leaves_no_temporary_and_fails_cleanly(tmp_path: Path) -> None:
    write_tdr(decision(), tmp_path / "ok.dcs")
    assert sorted(os.listdir(tmp_path)) == ["ok.dcs"]
    with pytest.raises(FileNotFoundError):
        write_tdr(decision(), tmp_path / "missing-dir" / "x.dcs")
    assert sorted(os.listdir(tmp_path)) == ["ok.dcs"]


def test_long_and_odd_strings_stay_valid(tmp_path: Path) -> None:
    from edge.records import ObjectResult

    odd = ObjectResult(
        object_id=70_000,  # does not fit US: the position is used instead
        box=knife().box,
        label="Schraubendreher/Ätzmittel (Kategorie 4) — sehr lang",
        detector_score=float("nan"),
        anomaly_score=None,
        threshold=None,
        anomalous=True,
    )
    d = decision(Verdict.ALARM, objects=(odd,))
    report = read_tdr(write_tdr(d, tmp_path / "odd.dcs"))
    (obj,) = report.objects
    assert obj.pto_id == 0
    (a,) = obj.assessments
    assert a.description == odd.label  # full label, UTF-8, in the LT description
    assert a.category is not None and len(a.category) <= 16 and a.category.isupper()
    assert a.probability is None  # NaN is not written


def test_build_tdr_does_not_touch_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ds = build_tdr(decision(), dx_uids=("1.2.3",))
    assert ds.SOPClassUID == SOP_CLASS_TDR
    assert os.listdir(tmp_path) == []


def test_benign_objects_in_an_alarm_report_keep_counts_consistent(tmp_path: Path) -> None:
    d = decision(Verdict.ALARM, objects=(knife(), benign(), anomaly()))
    report = read_tdr(write_tdr(d, tmp_path / "all.dcs", include_benign=True))
    assert (report.number_of_total_objects, report.number_of_alarm_objects) == (3, 2)
    assert sorted(o.pto_id for o in report.threat_objects) == [3, 7]
    assert report.inconsistencies == ()
