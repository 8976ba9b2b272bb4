"""TDRs of unusual items read back by pydicom and ``edge dicos show``, and ``show`` on files that are not a
sound TDR: a clear line and exit 1 (or the rest of the report), never a traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from edge.dicos import build_tdr, read_tdr
from edge.dicos._io import encode
from edge.records import BoxXyxy, ObjectResult, UnscreenedReason, Verdict
from edge_tools.dicos_cli import dicos_app
from tests.dicos.dicos_helpers import decision

runner = CliRunner()


def _obj(i: int, box: tuple[float, float, float, float] = (10, 10, 50, 50),
         polygon: tuple[tuple[float, float], ...] = ((10, 10), (50, 10), (50, 50))) -> ObjectResult:
    return ObjectResult(i, BoxXyxy(*box), None, 0.8, 0.9, 0.5, True, polygon)


def _show(path: Path) -> tuple[int, str]:
    result = runner.invoke(dicos_app, ["show", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


ODD = {
    "no objects, ALARM": decision(Verdict.ALARM, objects=()),
    "UNSCREENED without objects": decision(Verdict.UNSCREENED, objects=(), reason=UnscreenedReason.MODEL_ERROR),
    "100 objects": decision(Verdict.ALARM, objects=tuple(
        _obj(i, (i * 5, i * 3, i * 5 + 40, i * 3 + 30), ((i * 5, i * 3), (i * 5 + 40, i * 3), (i * 5 + 20, i * 3 + 30)))
        for i in range(100))),
    "odd polygons": decision(Verdict.ALARM, objects=(
        _obj(1, polygon=((5, 5),)),  # one point
        _obj(2, polygon=((5, 5), (9, 9))),  # a segment
        _obj(3, polygon=((10, 10), (50, 50), (50, 10), (10, 50))),  # self-intersecting
        _obj(4, polygon=((-1000, -1000), (5000, -1000), (5000, 5000))),  # far outside its box
        _obj(5, box=(10, 10, 10, 10), polygon=()),  # a zero box
    )),
}


@pytest.mark.parametrize("case", list(ODD))
def test_unusual_items_give_reports_pydicom_and_show_read(tmp_path: Path, case: str) -> None:
    d = ODD[case]
    path = tmp_path / "r.tdr.dcs"
    path.write_bytes(encode(build_tdr(d)))
    ds = pydicom.dcmread(path)
    n = len(d.objects)
    assert int(ds.NumberOfTotalObjects) == n == len(ds.ThreatSequence)
    assert ds.AlarmDecision == "ALARM"  # UNSCREENED too: never CLEAR
    assert ds.AbortFlag == ("ABORT" if d.verdict is Verdict.UNSCREENED else "SUCCESS")
    report = read_tdr(path)
    assert report.verdict is d.verdict and not report.inconsistencies
    assert sorted(o.pto_id for o in report.objects) == sorted(o.object_id for o in d.objects)
    code, text = _show(path)
    assert code == 0 and f"{n} total, {n} alarm, {n} in the Threat Sequence" in text


def test_show_on_a_report_whose_roi_is_not_a_box_prints_the_rest(tmp_path: Path) -> None:
    """A damaged or foreign report with a NaN base or a negative extent: ``show`` raised ValueError from the box
    (a traceback); it now says which object's ROI is unusable and shows everything else."""
    ds = build_tdr(decision(Verdict.ALARM))
    rois = [pto.PTORepresentationSequence[0].ThreatROIVoxelSequence[0] for pto in ds.ThreatSequence]
    rois[0].ThreatROIBase = [math.nan, 64.0, 0.0]
    rois[1].ThreatROIExtents = [-327680.0, 28.0, 1.0]
    path = tmp_path / "damaged.tdr.dcs"
    path.write_bytes(encode(ds))
    code, text = _show(path)
    assert code == 0, text
    assert "object 7: THREAT, ROI unusable (base nan, 64, 0, extents 81, 51, 1)" in text
    assert "object 3: THREAT, ROI unusable (base 10, 12, 0, extents -327680, 28, 1)" in text
    assert "verdict:         ALARM" in text


def test_show_on_what_is_not_a_report_exits_1_with_one_line(tmp_path: Path) -> None:
    good = encode(build_tdr(decision(Verdict.ALARM)))
    (tmp_path / "cut.dcs").write_bytes(good[:600])
    (tmp_path / "empty.dcs").write_bytes(b"")
    (tmp_path / "record.json").write_text('{"item_id": "bag-1"}')
    cases = {"cut.dcs": "the file is truncated or damaged", "empty.dcs": "unreadable DICOM/DICOS file",
             "record.json": "unreadable DICOM/DICOS file", "missing.dcs": "No such file", ".": "Is a directory"}
    for name, why in cases.items():
        code, text = _show(tmp_path / name)
        assert code == 1 and why in text and "Traceback" not in text, (name, text)


def test_a_dx_pair_with_an_element_of_the_wrong_length_is_unscreened_not_dropped(tmp_path: Path) -> None:
    """Pixel Representation (0028,0103) written with 1 byte instead of 2: pydicom raises its own
    BytesLengthException when the element is read, which escaped read_dx, the frame source and the intake
    (logged as 'frame source failed'): the item got no decision, its files stayed, a restart dropped it again.
    ``edge dicos show`` printed a traceback on the file."""
    import time

    import numpy as np

    from edge.dicos.dx_source import write_dx_pair
    from edge.journal import IntakeJournal
    from edge.pipeline import Pipeline, Stage
    from edge.records import RawItem, UnscreenedReason
    from edge.sinks.memory import MemorySink
    from edge.sources.dicos import DicosFrameSource
    from edge.stages.decide import decide

    incoming = tmp_path / "dx"
    incoming.mkdir()
    high = np.random.default_rng(3).integers(1000, 60000, (32, 48), dtype=np.uint16)
    write_dx_pair(incoming, "bag-1", high, high)
    damaged = write_dx_pair(incoming, "bag-2", high, high)
    good = b"\x28\x00\x03\x01US\x02\x00\x00\x00"  # (0028,0103) US, length 2, value 0 (explicit VR little endian)
    data = damaged.high.read_bytes()
    assert data.count(good) == 1
    damaged.high.write_bytes(data.replace(good, b"\x28\x00\x03\x01US\x01\x00\x00"))

    code, text = _show(damaged.high)
    assert code == 1 and "damaged DICOS element (BytesLengthException" in text, text

    def clear(item: RawItem) -> object:
        return decide(item.meta, [], time.time(), time.monotonic())

    sink = MemorySink()
    pipeline = Pipeline(DicosFrameSource(incoming, "lane1", 60), [Stage("s", clear)], [sink], backpressure=True,
                        journal=IntakeJournal(tmp_path / "intake.sqlite3"))
    pipeline.start()
    try:
        assert pipeline.wait_idle(20)
    finally:
        pipeline.stop(timeout_s=5)
    outcome = sorted((d.item_id, d.verdict, d.reason) for d in sink.decisions)
    assert outcome == [("lane1-bag-1", Verdict.CLEAR, None),
                       ("lane1-bag-2", Verdict.UNSCREENED, UnscreenedReason.CORRUPT_FRAME)], outcome
    assert sorted(p.name for p in (incoming / "rejected").iterdir()) == ["bag-2_high.dcs", "bag-2_low.dcs"]


def test_an_item_id_used_again_on_another_day_does_not_replace_a_report_waiting_in_the_drop_folder(
        tmp_path: Path) -> None:
    """The audit store keeps day folders; the drop folder is flat, and the second day's bag-7 report replaced the
    first day's one the workstation had not taken yet (a report lost to it, silently). The same report offered
    again (a decision stored again after a restart) is still written once."""
    import dataclasses

    from edge.config.audit import AuditConfig, TdrConfig
    from edge.sinks.audit import AuditStore

    drop = tmp_path / "drop"
    drop.mkdir()
    store = AuditStore(AuditConfig(directory=tmp_path / "audit", min_free_mb=0, tdr=TdrConfig(drop_folder=drop)),
                       "hub", prune_every=10_000)
    first = decision(Verdict.ALARM, item_id="bag-7")
    second = dataclasses.replace(first, decided_wall=first.decided_wall + 86_400,
                                 scan_start_wall=first.scan_start_wall + 86_400,
                                 scan_end_wall=first.scan_end_wall + 86_400, item_uid="other")
    try:
        for d in (first, second, second):
            store.publish(d)
        assert store.drop is not None and store.drop.wait_idle(5)
    finally:
        store.close(2.0)
    reports = sorted(drop.iterdir())
    assert len(reports) == 2, [p.name for p in reports]
    assert reports[0].name.startswith("bag-7.") and reports[0].name.endswith(".tdr.dcs")
    times = sorted(str(read_tdr(p).alarm_decision_time) for p in reports)
    assert len(set(times)) == 2  # both days' reports are there
    assert store.drop.skipped == 0 and store.problem is None
