"""A DICOS TDR beside every record of the audit store: written, readable by pydicom and ``edge dicos show``,
pruned with its record, never costing a decision its record; the workstation drop folder; OPERATOR reports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from edge.config.audit import AuditConfig, TdrConfig
from edge.dicos import OperatorReview, build_operator_tdr, build_tdr, read_tdr
from edge.dicos.tdr import encode_machine_tdr
from edge.records import Decision, UnscreenedReason, Verdict
from edge.sinks.audit import AuditStore, record_stem
from edge_tools.dicos_cli import dicos_app
from tests.dicos.dicos_helpers import MODELS, T0, benign, decision, knife

REPO_ROOT = Path(__file__).resolve().parents[2]
EDGE = Path(sys.executable).with_name("edge")


def _store(root: Path, **tdr: object) -> AuditStore:
    return AuditStore(AuditConfig(directory=root, tdr=TdrConfig(**tdr)), "hub-7", prune_every=10_000)


def _decisions() -> list[Decision]:
    return [
        decision(Verdict.ALARM, item_id="bag-alarm"),
        decision(Verdict.CLEAR, item_id="bag-clear"),
        decision(Verdict.UNSCREENED, objects=(), reason=UnscreenedReason.LINK_DOWN, item_id="bag-unscreened"),
    ]


def _tdr_of(root: Path, item_id: str) -> Path:
    (path,) = root.glob(f"*/{item_id}.tdr.dcs")
    return path


def test_every_record_gets_a_tdr_that_pydicom_and_edge_dicos_show_read(tmp_path: Path) -> None:
    store = _store(tmp_path / "audit")
    try:
        for d in _decisions():
            store.publish(d)
    finally:
        store.close(2.0)
    expected = {"bag-alarm": ("ALARM", "SUCCESS", Verdict.ALARM, 2),
                "bag-clear": ("CLEAR", "SUCCESS", Verdict.CLEAR, 0),
                "bag-unscreened": ("ALARM", "ABORT", Verdict.UNSCREENED, 0)}
    for item_id, (decision_text, abort, verdict, n_objects) in expected.items():
        path = _tdr_of(tmp_path / "audit", item_id)
        assert path.with_name(f"{item_id}.json").exists()  # beside the item's record
        ds = pydicom.dcmread(path)
        assert ds.TDRType == "MACHINE" and ds.AlarmDecision == decision_text and ds.AbortFlag == abort
        assert ds.PatientID == item_id
        assert ds.ThreatDetectionAlgorithmAndVersion[0] == "xray-edge"
        assert float(ds.TotalProcessingTime) == pytest.approx(187.5)
        report = read_tdr(path)
        assert report.verdict is verdict and len(report.objects) == n_objects
        assert [(m.name, m.version) for m in report.algorithm.models] == [(m.name, m.version) for m in MODELS]
    assert read_tdr(_tdr_of(tmp_path / "audit", "bag-unscreened")).abort_reasons == ("LINK_DOWN",)

    # `edge dicos show`, the real command line (mounted lazily by edge.cli), on the three of them
    out = {}
    for item_id in expected:
        result = subprocess.run([str(EDGE), "dicos", "show", str(_tdr_of(tmp_path / "audit", item_id))],
                                capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stderr
        out[item_id] = result.stdout
    assert "type:            MACHINE" in out["bag-alarm"]
    assert "abort flag:      SUCCESS" in out["bag-alarm"]
    assert "verdict:         ALARM" in out["bag-alarm"]
    assert "THREAT    KNIFE            score 0.830" in out["bag-alarm"]
    assert "THREAT    ANOMALY          score 1.000" in out["bag-alarm"]
    assert "model          scorer: stfpm-parcels 2.0.1" in out["bag-alarm"]
    assert "processing time: 187.5 ms" in out["bag-alarm"]
    assert "verdict:         CLEAR" in out["bag-clear"] and "0 total, 0 alarm" in out["bag-clear"]
    assert "abort flag:      ABORT (reason: LINK_DOWN)" in out["bag-unscreened"]
    assert "verdict:         UNSCREENED" in out["bag-unscreened"]


def test_tdr_can_be_turned_off_and_lists_benign_objects_when_asked(tmp_path: Path) -> None:
    off = _store(tmp_path / "off", enabled=False)
    benign_on = _store(tmp_path / "benign", include_benign=True)
    try:
        off.publish(decision(Verdict.CLEAR, item_id="bag-1"))
        benign_on.publish(decision(Verdict.CLEAR, item_id="bag-1"))
    finally:
        off.close(1.0)
        benign_on.close(1.0)
    assert not list((tmp_path / "off").glob("*/*.dcs")) and list((tmp_path / "off").glob("*/bag-1.json"))
    report = read_tdr(_tdr_of(tmp_path / "benign", "bag-1"))
    assert [(o.pto_id, o.assessments[0].flag) for o in report.objects] == [(12, "NO_THREAT")]


def test_a_report_that_cannot_be_built_costs_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the report writer is logged and shown in health; the decision's JSON record still lands."""
    import edge.sinks.audit as audit_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("writer bug")

    store = _store(tmp_path / "audit")
    try:
        monkeypatch.setattr(audit_module, "encode_machine_tdr", broken)
        store.publish(decision(Verdict.ALARM, item_id="bag-1"))
        assert list((tmp_path / "audit").glob("*/bag-1.json")) and not list((tmp_path / "audit").glob("*/*.dcs"))
        assert store.problem is not None and "DICOS report not built for bag-1" in store.problem
        assert store.tdr_failures == 1
        monkeypatch.setattr(audit_module, "encode_machine_tdr", encode_machine_tdr)
        store.publish(decision(Verdict.ALARM, item_id="bag-2"))
        assert store.problem is None and _tdr_of(tmp_path / "audit", "bag-2").exists()
    finally:
        store.close(1.0)


def test_reports_are_pruned_with_their_records_and_counted_once(tmp_path: Path) -> None:
    """Six records of ~2 MB (a large overlay) in a 10 MB store: pruning takes the oldest records whole, with
    their TDR and verdict files, and counts records, not files."""
    from dataclasses import replace

    root = tmp_path / "audit"
    store = AuditStore(AuditConfig(directory=root, quota_mb=10, min_free_mb=0), "hub-7", prune_every=10_000)
    try:
        assert store._scanned.wait(5)
        for i in range(6):
            # a dot in the id: the record's stem is not cut there
            store.publish(replace(decision(Verdict.ALARM, item_id=f"bag.{i}"), overlay_jpeg=b"j" * 2_000_000))
            if i == 0:
                day = next(root.iterdir())
                verdict = day / "bag.0.verdict-0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f.json"
                verdict.write_text("{}")
            time.sleep(0.02)  # distinct modification times: oldest first
        store.prune()  # the prune thread may have started already (the quota was crossed): this waits for it
        removed = store.pruned_records
    finally:
        store.close(1.0)
    left = sorted(p.name for p in day.iterdir())
    stems = {record_stem(n) for n in left}
    assert removed == 2, left  # 12 MB -> at most 9 MB: two records, each counted once (json, jpg, tdr, verdict)
    assert stems == {"bag.2", "bag.3", "bag.4", "bag.5"}
    for stem in stems:  # what stays is whole
        assert {f"{stem}.json", f"{stem}.jpg", f"{stem}.tdr.dcs"} <= set(left)
    assert record_stem("bag.0.verdict-0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f.tdr.dcs") == "bag.0"
    assert record_stem("bag.0.tdr.dcs") == "bag.0" and record_stem("bag.0.a1b2c3d4.json") == "bag.0.a1b2c3d4"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A real tmpfs of the given size (root only; skipped with the reason otherwise), unmounted at the end."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for the full-disk case (needs root): {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 512):
            while True:
                try:
                    fh.write(b"\0" * size)
                except OSError:
                    break
    return filler


def test_disk_full_fails_the_whole_record_then_recovers(small_fs: Callable[[int], Path]) -> None:
    """A full disk fails the record, report included (the pipeline offers it again); nothing half-written stays;
    once there is room the record lands with its report."""
    from edge.errors import PublishError

    root = small_fs(1024 * 1024) / "audit"
    store = AuditStore(AuditConfig(directory=root, min_free_mb=0), "hub-7", prune_every=10_000)
    try:
        store.publish(decision(Verdict.CLEAR, item_id="bag-0"))
        filler = _fill(root.parent)
        with pytest.raises(PublishError, match="disk full"):
            store.publish(decision(Verdict.ALARM, item_id="bag-1"))
        day = next(root.iterdir())
        assert sorted(p.name for p in day.iterdir()) == ["bag-0.json", "bag-0.tdr.dcs"]
        assert store.problem is not None and "disk full" in store.problem
        filler.unlink()
        store.publish(decision(Verdict.ALARM, item_id="bag-1"))
        assert store.problem is None and read_tdr(day / "bag-1.tdr.dcs").verdict is Verdict.ALARM
    finally:
        store.close(1.0)


def test_drop_folder_on_a_full_disk_costs_no_record(tmp_path: Path, small_fs: Callable[[int], Path]) -> None:
    drop = small_fs(256 * 1024)
    filler = _fill(drop)
    store = _store(tmp_path / "audit", drop_folder=drop)
    try:
        store.publish(decision(Verdict.ALARM, item_id="bag-1"))
        assert store.drop is not None and store.drop.wait_idle(5)
        assert _tdr_of(tmp_path / "audit", "bag-1").exists()
        assert store.problem is not None and "disk full" in store.problem
        assert sorted(p.name for p in drop.iterdir()) == ["filler"]  # no temporary left behind
        filler.unlink()
        store.publish(decision(Verdict.ALARM, item_id="bag-2"))
        assert store.drop.wait_idle(5)
        assert sorted(p.name for p in drop.iterdir()) == ["bag-2.tdr.dcs"] and store.problem is None
    finally:
        store.close(2.0)


# ---------------------------------------------------------------- the workstation drop folder


def test_drop_folder_missing_then_present(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    store = _store(tmp_path / "audit", drop_folder=drop)
    try:
        store.publish(decision(Verdict.ALARM, item_id="bag-1"))
        assert store.drop is not None and store.drop.wait_idle(5)
        assert _tdr_of(tmp_path / "audit", "bag-1").exists()  # the decision landed
        assert not drop.exists()  # never created by the box
        assert store.problem is not None and "is missing" in store.problem
        drop.mkdir()
        store.publish(decision(Verdict.ALARM, item_id="bag-2"))
        assert store.drop.wait_idle(5)
        assert sorted(p.name for p in drop.iterdir()) == ["bag-2.tdr.dcs"]
        assert (drop / "bag-2.tdr.dcs").read_bytes() == _tdr_of(tmp_path / "audit", "bag-2").read_bytes()
        assert store.problem is None
    finally:
        store.close(2.0)


def test_drop_folder_full_skips_reports_until_the_workstation_takes_them(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "old-1.tdr.dcs").write_bytes(b"x" * 100)
    (drop / "old-2.tdr.dcs").write_bytes(b"x" * 100)
    store = _store(tmp_path / "audit", drop_folder=drop, drop_max_files=3)
    try:
        for i in range(3):
            store.publish(decision(Verdict.ALARM, item_id=f"bag-{i}"))
        assert store.drop is not None and store.drop.wait_idle(5)
        assert sorted(p.name for p in drop.iterdir()) == ["bag-0.tdr.dcs", "old-1.tdr.dcs", "old-2.tdr.dcs"]
        assert store.drop.skipped == 2 and store.problem is not None and "is full" in store.problem
        for i in range(3):  # every decision landed in the audit store all the same
            assert _tdr_of(tmp_path / "audit", f"bag-{i}").exists()
        for p in drop.iterdir():  # the workstation takes them
            p.unlink()
        store.publish(decision(Verdict.ALARM, item_id="bag-3"))
        assert store.drop.wait_idle(5)
        assert sorted(p.name for p in drop.iterdir()) == ["bag-3.tdr.dcs"] and store.problem is None
    finally:
        store.close(2.0)


def test_drop_folder_byte_bound_and_no_half_files(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "big.bin").write_bytes(b"x" * (1024 * 1024 - 100))
    store = _store(tmp_path / "audit", drop_folder=drop, drop_max_mb=1)
    try:
        store.publish(decision(Verdict.ALARM, item_id="bag-1"))
        assert store.drop is not None and store.drop.wait_idle(5)
    finally:
        store.close(2.0)
    assert sorted(p.name for p in drop.iterdir()) == ["big.bin"]  # no report, and no temporary left behind
    assert store.drop.skipped == 1


# ---------------------------------------------------------------- reasons (shared contract 2) and OPERATOR


@dataclass(frozen=True)
class _Reason:
    """The shape of contract 2's ``AlarmReason`` (not in this branch's records yet)."""

    kind: str
    label: str | None
    score: float
    threshold: float

    @property
    def code(self) -> str:
        return f"known:{self.label}" if self.kind == "known" else self.kind


def test_each_reason_is_one_assessment(tmp_path: Path) -> None:
    reasons = {7: (_Reason("known", "knife", 0.91, 0.5), _Reason("anomaly", None, 0.83, 0.6))}
    d = decision(Verdict.ALARM, objects=(knife(), benign()))
    ds = build_tdr(d, reasons_of=lambda obj: reasons.get(obj.object_id, ()))
    from edge.dicos import encode

    report = read_tdr(encode(ds))
    (obj,) = report.objects
    assert [(a.flag, a.category, a.description) for a in obj.assessments] == [
        ("THREAT", "KNOWN_KNIFE", "known:knife: score 0.9100 >= threshold 0.5000"),
        ("THREAT", "ANOMALY", "anomaly: score 0.8300 >= threshold 0.6000"),
    ]
    assert [a.probability for a in obj.assessments] == [pytest.approx(0.91), pytest.approx(0.83)]
    assert (report.number_of_total_objects, report.number_of_alarm_objects) == (1, 1)
    assert report.inconsistencies == ()

    # an object that alarmed by a known class without being anomalous is still reported as a threat
    plain = benign()
    ds = build_tdr(decision(Verdict.ALARM, objects=(plain,)),
                   reasons_of=lambda obj: (_Reason("known", "gun", 0.7, 0.5),))
    report = read_tdr(encode(ds))
    assert [o.pto_id for o in report.threat_objects] == [12] and report.number_of_alarm_objects == 1


@pytest.mark.parametrize(("verdict", "decision_text", "alarm_objects"),
                         [("threat_confirmed", "ALARM", 2), ("sent_to_search", "ALARM", 2), ("cleared", "CLEAR", 0)])
def test_operator_tdr_reviews_the_machine_report(tmp_path: Path, verdict: str, decision_text: str,
                                                 alarm_objects: int) -> None:
    machine = build_tdr(decision(Verdict.ALARM))
    review = OperatorReview(verdict_id="0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f", verdict=verdict, operator="jdoe",
                            role="operator", decided_wall=T0 + 42.0, item_id="parcel-000123",
                            scanner_id="hub-7/line-2", machine_decided_wall=T0)
    from edge.dicos import encode

    data = encode(build_operator_tdr(review, machine))
    assert data == encode(build_operator_tdr(review, machine))  # same verdict, same bytes
    path = tmp_path / "op.dcs"
    path.write_bytes(data)
    ds = pydicom.dcmread(path)
    assert ds.TDRType == "OPERATOR" and ds.AlarmDecision == decision_text and str(ds.OperatorsName) == "jdoe"
    assert ds.StudyInstanceUID == machine.StudyInstanceUID and ds.SOPInstanceUID != machine.SOPInstanceUID
    assert "ThreatDetectionAlgorithmAndVersion" not in ds  # the machine's, not the operator's
    report = read_tdr(path)
    assert report.referenced_uids == (str(machine.SOPInstanceUID),)
    assert report.total_processing_time_ms == pytest.approx(42_000.0)  # the review took 42 s
    assert report.number_of_alarm_objects == alarm_objects and report.inconsistencies == ()
    result = CliRunner().invoke(dicos_app, ["show", str(path)])
    assert result.exit_code == 0, result.output
    assert "type:            OPERATOR" in result.output and "operator:        jdoe" in result.output
    assert f"verdict:         {decision_text}" in result.output

    alone = read_tdr(encode(build_operator_tdr(review)))  # no machine report kept: the item alone
    assert alone.tdr_type == "OPERATOR" and alone.item_id == "parcel-000123" and alone.objects == ()
    with pytest.raises(ValueError, match="unknown operator verdict"):
        build_operator_tdr(OperatorReview("x", "maybe", "jdoe", "operator", T0, "i", "s"))


def test_audit_body_is_unchanged_by_the_report(tmp_path: Path) -> None:
    """The JSON record stays the item payload (subscribers and `edge fit` read it); the report is a file beside."""
    store = _store(tmp_path / "audit")
    try:
        store.publish(decision(Verdict.ALARM, item_id="bag-1"))
    finally:
        store.close(1.0)
    (path,) = (tmp_path / "audit").glob("*/bag-1.json")
    body = json.loads(path.read_text())
    assert body["schema"] == "xray-edge/item@2" and "tdr" not in json.dumps(body)


def test_a_decision_stored_again_after_a_restart_rewrites_the_same_report(tmp_path: Path) -> None:
    """The intake journal offers a decision again after a crash (same uid, same record id): the report is
    rewritten under the same name with the same bytes and the store's byte count does not grow."""
    root = tmp_path / "audit"
    d = decision(Verdict.ALARM, item_id="bag-1")
    first = _store(root)
    try:
        first.publish(d)
        usage = first.usage_bytes()
        before = _tdr_of(root, "bag-1").read_bytes()
    finally:
        first.close(1.0)
    again = _store(root)
    try:
        assert again._scanned.wait(5)
        assert again.usage_bytes() == usage
        again.publish(d)
        assert again.usage_bytes() == usage
    finally:
        again.close(1.0)
    assert _tdr_of(root, "bag-1").read_bytes() == before
    assert sorted(p.name for p in next(root.iterdir()).iterdir()) == ["bag-1.json", "bag-1.tdr.dcs"]


def test_offering_reports_never_waits_for_the_drop_folder(tmp_path: Path) -> None:
    """Reports offered faster than the folder takes them are skipped (counted, shown), never waited for."""
    from edge.dicos.drop import DropFolder

    drop_dir = tmp_path / "drop"
    drop_dir.mkdir()
    drop = DropFolder(drop_dir, max_files=10_000, max_mb=100, queue_size=1)
    data = b"r" * 4096
    try:
        slowest = 0.0
        for i in range(500):
            start = time.perf_counter()
            drop.offer(f"r{i}.tdr.dcs", data)
            slowest = max(slowest, time.perf_counter() - start)
        assert drop.wait_idle(30)
    finally:
        drop.close(5.0)
    assert slowest < 0.5  # an offer is a queue put: no file I/O on the caller's thread (bound: a loaded machine)
    assert drop.skipped >= 1 and drop.written + drop.skipped == 500
    assert len(list(drop_dir.iterdir())) == drop.written
    assert drop.problem is None or "not keeping up" in drop.problem
