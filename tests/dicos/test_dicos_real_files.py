"""Real DICOS files written by another toolkit (Stratovan, via pyDICOS) are read and interpreted correctly.

Expected values are transcribed from ../shared/realdata/dicos/DUMP.md (made with plain pydicom), not
produced by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.dicos import read_tdr
from edge.dicos.dx_source import DxPairError, match_dx_pairs, read_dx, read_dx_pair
from edge.records import BoxXyxy, Verdict

TDR_FILES = ("CTwithTDR_TDR.dcs", "MultiplePTOsTDR.dcs", "SimpleBaggageNoThreatTDR.dcs", "SimpleBaggageTDR.dcs")


@pytest.mark.parametrize(
    ("name", "decision", "total", "alarm", "n_pto", "processing_ms", "algorithm"),
    [
        ("CTwithTDR_TDR.dcs", "ALARM", 2, 1, 2, 50.0, ("ATR Manufacturer", "ATR Version", ())),
        ("MultiplePTOsTDR.dcs", "ALARM", 2, 1, 2, 500.0, ("Alchemy", "0.999", ("-random=true", "-magic=true"))),
        ("SimpleBaggageNoThreatTDR.dcs", "CLEAR", 0, 0, 0, 0.0, ("Alchemy", "0.999", ("-random=true", "-magic=true"))),
        ("SimpleBaggageTDR.dcs", "CLEAR", 1, 1, 1, 500.0, ("Alchemy", "0.999", ("-random=true", "-magic=true"))),
    ],
)
def test_summary_fields_match_the_dump(
    real_dicos: Path,
    name: str,
    decision: str,
    total: int,
    alarm: int,
    n_pto: int,
    processing_ms: float,
    algorithm: tuple[str, str, tuple[str, ...]],
) -> None:
    report = read_tdr(real_dicos / name)
    assert report.tdr_type == "MACHINE"
    assert report.abort_flag == "SUCCESS"
    assert report.abort_reasons == ()
    assert report.alarm_decision == decision
    assert (report.number_of_total_objects, report.number_of_alarm_objects) == (total, alarm)
    assert len(report.objects) == n_pto
    assert report.total_processing_time_ms == pytest.approx(processing_ms)
    assert (report.algorithm.name, report.algorithm.version, report.algorithm.parameters) == algorithm
    assert report.algorithm.models == ()  # not our parameter layout


def test_uids_with_leading_zeros_are_kept_verbatim(real_dicos: Path) -> None:
    report = read_tdr(real_dicos / "SimpleBaggageTDR.dcs")
    assert report.sop_instance_uid == "0808366973.28143.30653.031053.234076094136163036"
    assert report.series_instance_uid == "0703581715.65035.07602.025115.127104114192226121"


def test_ct_with_tdr_objects_boxes_and_assessments(real_dicos: Path) -> None:
    report = read_tdr(real_dicos / "CTwithTDR_TDR.dcs")
    assert report.item_id == "10"
    assert report.verdict is Verdict.ALARM
    assert report.inconsistencies == ()
    assert report.alarm_decision_time is not None
    assert (report.alarm_decision_time.year, report.alarm_decision_time.month, report.alarm_decision_time.day) == (
        2024,
        1,
        3,
    )
    first, second = report.objects
    assert first.pto_id == 0 and second.pto_id == 1
    assert first.rois[0].base == (1.0, 2.0, 3.0)
    assert first.rois[0].extents == (50.0, 20.0, 200.0)
    assert first.box == BoxXyxy(1.0, 2.0, 51.0, 22.0)
    assert first.rois[0].bitmap is None  # zero-length bitmap in the file
    assert first.mass == pytest.approx(1000.0) and first.density == pytest.approx(5000.0)
    assert first.referenced_uids == ("1903710318.43456.18664.072085.102091223127058112",)
    (a,) = first.assessments
    assert (a.category, a.description, a.ability, a.flag) == ("PI", "Weapon", "NO_INTERFERENCE", "THREAT")
    assert a.probability == pytest.approx(0.98, abs=1e-6)
    assert first.is_threat
    (b,) = second.assessments
    assert (b.category, b.flag, b.description, b.probability) == ("ANOMALY", "NO_THREAT", None, None)
    assert not second.is_threat
    assert second.rois[0].base == (210.0, 210.0, 210.0)
    # (4010,1080)/(4010,1081)/(4010,1082): not in pydicom's dictionary, read by number.
    assert first.processing_start is not None and first.processing_end is not None
    assert first.processing_end >= first.processing_start
    assert first.processing_time_ms == 0.0


def test_multiple_ptos_high_threat_counts_as_threat(real_dicos: Path) -> None:
    report = read_tdr(real_dicos / "MultiplePTOsTDR.dcs")
    assert [o.pto_id for o in report.objects] == [2002, 9001]
    assert [o.assessments[0].flag for o in report.objects] == ["NO_THREAT", "HIGH_THREAT"]
    assert [o.pto_id for o in report.threat_objects] == [9001]
    assert report.objects[0].rois[0].extents == (22.0, 33.0, 444.0)
    assert report.verdict is Verdict.ALARM
    assert report.inconsistencies == ()


def test_no_threat_report_is_clear(real_dicos: Path) -> None:
    report = read_tdr(real_dicos / "SimpleBaggageNoThreatTDR.dcs")
    assert report.objects == ()
    assert report.verdict is Verdict.CLEAR
    assert report.unscreened_reason is None
    assert report.inconsistencies == ()


def test_clear_with_threat_quirk_is_read_fail_safe(real_dicos: Path) -> None:
    """SimpleBaggageTDR says CLEAR but flags one THREAT object and one alarm object: the alarm wins."""
    report = read_tdr(real_dicos / "SimpleBaggageTDR.dcs")
    assert report.alarm_decision == "CLEAR"  # as written
    assert report.verdict is Verdict.ALARM  # as acted on
    assert len(report.inconsistencies) == 2
    assert any("CLEAR" in text and "THREAT" in text for text in report.inconsistencies)


def test_the_bitmap_object_unpacks_to_its_extents(real_dicos: Path) -> None:
    (pto,) = read_tdr(real_dicos / "SimpleBaggageTDR.dcs").objects
    assert pto.pto_id == 9001
    (roi,) = pto.rois
    assert roi.base == (12.0, 23.0, 45.0) and roi.extents == (50.0, 50.0, 100.0)
    assert roi.bitmap is not None
    assert roi.bitmap.shape == (100, 50, 50)  # (depth, height, width) from extents (w, h, d)
    assert int(roi.bitmap.sum()) == 75481  # set bits counted by DUMP.md
    assert not roi.bitmap.flags.writeable
    assert pto.assessments[0].description == "Flammable Liquid"


def test_non_tdr_real_files_are_refused_with_a_reason(real_dicos: Path) -> None:
    from edge.errors import FrameError

    for name in ("SimpleCT0000.dcs", "SimpleProcessingDX.dcs"):
        with pytest.raises(FrameError, match="not a DICOS TDR"):
            read_tdr(real_dicos / name)


RAMP = np.arange(32768, dtype=np.uint16).reshape(128, 256)  # DUMP.md: row-major ramp 0..32767


@pytest.mark.parametrize("name", ["SimpleProcessingDX.dcs", "SimplePresentationDX.dcs"])
def test_real_dx_decodes_native_and_jpeg_lossless(real_dicos: Path, name: str) -> None:
    image = read_dx(real_dicos / name)
    assert (image.rows, image.columns) == (128, 256)
    assert image.pixels.dtype == np.uint16
    assert image.photometric_interpretation == "MONOCHROME2"
    np.testing.assert_array_equal(image.pixels, RAMP)
    assert image.energy is None  # the samples declare no energy
    assert image.ooi_id is None  # 'unknown' in the file
    assert image.kvp == 1.0


def test_real_palette_dx_decodes_to_row_index(real_dicos: Path) -> None:
    image = read_dx(real_dicos / "SimpleColorPaletteDX.dcs")
    assert image.photometric_interpretation == "PALETTE COLOR"
    expected = np.repeat(np.arange(128, dtype=np.uint16)[:, None], 256, axis=1)
    np.testing.assert_array_equal(image.pixels, expected)


def test_real_dx_files_make_a_pair_when_named_so(real_dicos: Path, tmp_path: Path) -> None:
    """The samples declare no energy, so only the file-name rule can pair them."""
    (tmp_path / "bag9_low.dcs").write_bytes((real_dicos / "SimpleProcessingDX.dcs").read_bytes())
    (tmp_path / "bag9_high.dcs").write_bytes((real_dicos / "SimplePresentationDX.dcs").read_bytes())
    scan = match_dx_pairs(tmp_path)
    assert scan.orphans == ()
    (files,) = scan.pairs
    assert files.item_id == "bag9"
    pair = read_dx_pair(files.low, files.high, item_id=files.item_id)
    assert (pair.height, pair.width) == (128, 256)
    np.testing.assert_array_equal(pair.low, RAMP)
    np.testing.assert_array_equal(pair.high, RAMP)
    assert pair.low_sop_instance_uid == "0995258432.40471.16154.096030.069018049142053046"


def test_real_palette_image_is_refused_as_raw_input(real_dicos: Path, tmp_path: Path) -> None:
    with pytest.raises(DxPairError, match="PALETTE COLOR") as err:
        read_dx_pair(real_dicos / "SimpleProcessingDX.dcs", real_dicos / "SimpleColorPaletteDX.dcs", item_id="x1")
    assert err.value.item_id == "x1"


def test_the_real_folder_yields_no_pair_and_explains_every_file(real_dicos: Path) -> None:
    scan = match_dx_pairs(real_dicos)
    assert scan.pairs == ()
    reasons = {o.path.name: o.reason for o in scan.orphans}
    assert set(reasons) == {p.name for p in real_dicos.glob("*.dcs")}
    for name in (*TDR_FILES, "SimpleCT0000.dcs"):
        assert "not a DX image" in reasons[name]
    for name in ("SimpleProcessingDX.dcs", "SimplePresentationDX.dcs", "SimpleColorPaletteDX.dcs"):
        assert "energy unknown" in reasons[name]
