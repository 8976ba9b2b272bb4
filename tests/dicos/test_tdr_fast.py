"""``encode_machine_tdr`` (what the audit store writes for every decision) gives the very bytes of
``encode(build_tdr(...))`` (pydicom's ``dcmwrite``), with the same warnings, over decisions of every shape, and the
TDR readers read them back."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest

import edge.dicos.tdr as tdr_module
from edge.config.audit import AuditConfig, TdrConfig
from edge.dicos import build_tdr, read_tdr
from edge.dicos._io import encode
from edge.dicos.tdr import ReasonLike, encode_machine_tdr
from edge.records import AlarmReason, BoxXyxy, Decision, ModelRef, ObjectResult, ReasonKind, UnscreenedReason, Verdict
from edge.sinks.audit import TDR_SUFFIX, AuditStore
from tests.dicos.dicos_helpers import T0, anomaly, benign, decision, knife


def _circle(n: int, cx: float = 200.0, cy: float = 150.0, r: float = 40.0) -> tuple[tuple[float, float], ...]:
    return tuple((cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)) for i in range(n))


KNOWN = AlarmReason(ReasonKind.KNOWN, "knife", 0.77, 0.5)
CLASSIFIER = AlarmReason(ReasonKind.CLASSIFIER, None, 0.93, 0.5)
ANOMALY = AlarmReason(ReasonKind.ANOMALY, None, 1.8, 1.0)
BELOW = AlarmReason(ReasonKind.ANOMALY, None, 0.2, 1.0)  # a signal that did not fire
NAN = AlarmReason(ReasonKind.CLASSIFIER, None, float("nan"), 0.5)
ODD_LABEL = AlarmReason(ReasonKind.KNOWN, "Ätzmittel\\Kat. 4 — 東京 spray can, very long label " * 3, 0.6, 0.5)
NO_LABEL = AlarmReason(ReasonKind.KNOWN, None, 0.9, 0.5)


def _obj(i: int, *, reasons: tuple[AlarmReason, ...] = (), anomalous: bool = True, label: str | None = "knife",
         polygon: tuple[tuple[float, float], ...] | None = None, box: tuple[float, float, float, float] | None = None,
         anomaly_score: float | None = 1.3, threshold: float | None = 1.0, detector: float = 0.8) -> ObjectResult:
    x, y = 30.0 + 47.3 * i, 20.0 + 13.1 * i
    b = BoxXyxy(*box) if box else BoxXyxy(x, y, x + 61.7, y + 38.2)
    outline = polygon if polygon is not None else _circle(24, (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, 15.0)
    return ObjectResult(object_id=i, box=b, label=label, detector_score=detector, anomaly_score=anomaly_score,
                        threshold=threshold, anomalous=anomalous, polygon_xray=outline, reasons=reasons,
                        signals=reasons)


MODELS3 = (
    ModelRef(role="detector", name="detector-agnostic", version="1.2.0", sha256="a1" * 32),
    ModelRef(role="classifier", name="classifier-threat", version="0.9.1", sha256="b2" * 32),
    ModelRef(role="scorer", name="stfpm-parcels", version="2.0.1", sha256="c3" * 32),
)
MODELS_ODD = (ModelRef(role="detector", name="détecteur \\ 東京 " + "x" * 80, version="1", sha256="d4" * 32),)

_BASE = decision(Verdict.ALARM)
_CLEAR = decision(Verdict.CLEAR, objects=tuple(_obj(k, anomalous=False, label=None, reasons=(), anomaly_score=0.3)
                                               for k in range(6)))

# name -> (decision, keyword arguments of build_tdr)
CASES: dict[str, tuple[Decision, dict[str, Any]]] = {
    "clear, 6 benign objects": (_CLEAR, {}),
    "clear, include_benign": (_CLEAR, {"include_benign": True}),
    "clear, no objects": (decision(Verdict.CLEAR, objects=()), {}),
    "alarm of the helpers": (_BASE, {}),
    "alarm of the helpers, include_benign, site": (_BASE, {"include_benign": True, "site_id": "hub-7"}),
    "alarm, one pto, three reasons": (replace(_BASE, objects=(_obj(1, reasons=(KNOWN, CLASSIFIER, ANOMALY)),),
                                              models=MODELS3), {}),
    "alarm, three ptos among benign": (replace(_BASE, models=MODELS3, objects=(
        _obj(0, reasons=(KNOWN,)), _obj(1, anomalous=False, label=None, anomaly_score=0.2),
        _obj(2, reasons=(CLASSIFIER, BELOW)), _obj(3, reasons=(ANOMALY,), label=None, polygon=()),
        _obj(4, anomalous=False, label=None, anomaly_score=0.1))), {"include_benign": False}),
    "alarm, reasons of every kind and value": (replace(_BASE, objects=(
        _obj(0, reasons=(KNOWN, NO_LABEL, ODD_LABEL)), _obj(1, reasons=(NAN, BELOW)),
        _obj(2, reasons=(AlarmReason(ReasonKind.ANOMALY, None, float("inf"), 1.0),)),
        _obj(3, reasons=(AlarmReason(ReasonKind.CLASSIFIER, None, -0.5, -1.0),)))), {}),
    "alarm, objects without reasons (older journals)": (replace(_BASE, objects=(
        knife(), anomaly(), benign(), _obj(5, label=None, anomaly_score=None, threshold=None, detector=0.66),
        _obj(6, label="Schraubendreher/Ätzmittel (Kategorie 4) — sehr lang", anomaly_score=None,
             detector=float("nan")),
        _obj(7, label="gun\\pistol", anomalous=False, anomaly_score=0.1, threshold=0.6))),
        {"include_benign": True}),
    "alarm, odd outlines and boxes": (replace(_BASE, objects=(
        _obj(0, polygon=((5.0, 5.0),)), _obj(1, polygon=((5.0, 5.0), (9.0, 9.0))),
        _obj(2, polygon=((10.0, 10.0), (50.0, 50.0), (50.0, 10.0), (10.0, 50.0))),
        _obj(3, polygon=((-1000.0, -1000.0), (5000.0, -1000.0), (5000.0, 5000.0))),
        _obj(4, box=(10.0, 10.0, 10.0, 10.0), polygon=()), _obj(5, box=(-20.5, -3.2, 7.9, 4.1)),
        _obj(6, box=(0.0, 0.0, 1.0, 1.0), polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))),
        _obj(7, polygon=_circle(500, 400.0, 300.0, 250.0), box=(150.0, 50.0, 650.0, 550.0)),
        replace(_obj(8), object_id=70_000), replace(_obj(9), object_id=-1))), {}),
    "alarm, bitmaps off": (replace(_BASE, objects=(_obj(0, reasons=(KNOWN,)),)), {"bitmaps": False}),
    "alarm, dx images and study": (_BASE, {"dx_uids": ("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"),
                                           "study_uid": "1.2.826.0.1.3680043.8.498.9"}),
    "alarm, one dx image, cargo": (_BASE, {"dx_uids": ("1.2.3.4",), "ooi_type": "cargo pallet"}),
    "alarm, empty ooi type": (_BASE, {"ooi_type": " "}),
    "alarm, long and non-ASCII ids": (replace(
        _BASE, item_id="Gepäck-Ü-東京-" + "9" * 90, scanner_id="Scanner Zürich \\ Halle 3 — Linie 2 (Süd)" * 3,
        models=MODELS_ODD), {"site_id": "Flughafen München — Terminal 2 " * 3}),
    "alarm, control characters in ids": (replace(_BASE, item_id="bag\t7\n\x00x", scanner_id="hub\x1b7"), {}),
    "alarm, an odd-length id": (replace(_BASE, item_id="bag-1", scanner_id="h7"), {}),
    "alarm, an empty item id": (replace(_BASE, item_id=""), {}),
    "alarm, no models, odd times": (replace(_BASE, models=(), decided_wall=T0 + 0.000001, scan_start_wall=0.5,
                                            latency_ms=1e30), {}),
    "alarm, NaN latency": (replace(_BASE, latency_ms=float("nan"), decided_wall=1_800_000_000.0), {}),
    **{f"unscreened, {reason.value}": (decision(Verdict.UNSCREENED, objects=(), reason=reason), {})
       for reason in UnscreenedReason},
    "unscreened with objects": (decision(Verdict.UNSCREENED, reason=UnscreenedReason.DEADLINE_MISSED,
                                         objects=(knife(), benign())), {"include_benign": True}),
}

# Values the plain encoder does not write as pydicom does: the report goes to pydicom (same bytes, its warnings).
PYDICOM_CASES: dict[str, tuple[Decision, dict[str, Any]]] = {
    "an invalid dx uid": (_BASE, {"dx_uids": ("1.2.abc", "1.2.3")}),
    "a study uid too long": (_BASE, {"study_uid": "1." + "2" * 70}),
    "an outline too long for a 16-bit length": (replace(_BASE, objects=(
        _obj(0, polygon=_circle(6000, 3000.0, 3000.0, 2900.0), box=(100.0, 100.0, 5900.0, 5900.0)),)),
        {"bitmaps": False}),
    "a description too long for LT": (replace(_BASE, objects=(_obj(0, label="x" * 11_000),)), {}),
    "a lone surrogate in a label": (replace(_BASE, objects=(_obj(0, label="knife \udc80"),)), {}),
}


def _encoded(make: Callable[[], bytes]) -> tuple[bytes, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = make()
    return data, [str(w.message) for w in caught]


def _both(d: Decision, kwargs: dict[str, Any]) -> tuple[tuple[bytes, list[str]], tuple[bytes, list[str]]]:
    return _encoded(lambda: encode(build_tdr(d, **kwargs))), _encoded(lambda: encode_machine_tdr(d, **kwargs))


def _pydicom_fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """Count the reports ``encode_machine_tdr`` hands to pydicom."""
    handed: list[Decision] = []

    def counted(d: Decision, **kwargs: Any) -> pydicom.Dataset:
        handed.append(d)
        return build_tdr(d, **kwargs)

    monkeypatch.setattr(tdr_module, "build_tdr", counted)
    return handed


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_encoder_writes_pydicoms_bytes(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d, kwargs = CASES[case]
    handed = _pydicom_fallbacks(monkeypatch)
    (slow, slow_warnings), (fast, fast_warnings) = _both(d, kwargs)
    assert fast == slow
    assert handed == []  # the bytes are the fast encoder's own
    # pydicom validates every value as it is set; the fast encoder does not, which is only sound if pydicom finds
    # nothing to say about any of these reports.
    assert slow_warnings == [] and fast_warnings == []
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(fast))
    assert ds.TDRType == "MACHINE" and ds.PatientID == build_tdr(d, **kwargs).PatientID
    report = read_tdr(fast)
    assert report.sop_instance_uid == ds.SOPInstanceUID and (report.item_id or "") == ds.PatientID
    assert report.number_of_total_objects == len(ds.ThreatSequence) == len(report.objects)


@pytest.mark.parametrize("case", list(PYDICOM_CASES))
def test_what_the_fast_encoder_does_not_write_goes_to_pydicom(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d, kwargs = PYDICOM_CASES[case]
    handed = _pydicom_fallbacks(monkeypatch)
    (slow, slow_warnings), (fast, fast_warnings) = _both(d, kwargs)
    assert fast == slow
    assert handed == [d]
    assert slow_warnings and fast_warnings == slow_warnings  # pydicom's own warnings, from pydicom's own encoding


def test_the_cases_are_what_they_say() -> None:
    """Guard the case table: it holds what the byte test claims to cover."""
    decisions = [d for d, _ in CASES.values()]
    assert {d.verdict for d in decisions} == set(Verdict)
    assert {d.reason for d in decisions if d.verdict is Verdict.UNSCREENED} >= set(UnscreenedReason)
    reasons = [r for d in decisions for o in d.objects for r in o.reasons]
    assert {r.kind for r in reasons} == set(ReasonKind)
    objects = [o for d in decisions for o in d.objects]
    assert any(len(o.polygon_xray) >= 3 for o in objects) and any(not o.polygon_xray for o in objects)
    assert any(not o.isascii() for d in decisions for o in (d.item_id, d.scanner_id))
    assert any(len(d.item_id) > 64 for d in decisions)
    assert {bool(k.get("include_benign")) for _, k in CASES.values()} == {True, False}
    sizes = [len(encode_machine_tdr(d, **k)) for d, k in CASES.values()]
    assert min(sizes) < 2_000 and max(sizes) > 20_000


def test_a_custom_reasons_function_is_honoured() -> None:
    def every_object_alarms(obj: ObjectResult) -> Sequence[ReasonLike]:
        return (AlarmReason(ReasonKind.CLASSIFIER, None, 0.7, 0.5),)

    (slow, _), (fast, _) = _both(_CLEAR, {"reasons_of": every_object_alarms})
    assert fast == slow
    assert read_tdr(fast).number_of_alarm_objects == 6


def test_the_audit_store_writes_pydicoms_bytes(tmp_path: Path) -> None:
    """The store's own call path: what lands on disk is ``encode(build_tdr(...))`` with the store's settings."""
    store = AuditStore(AuditConfig(directory=tmp_path / "audit", min_free_mb=0, tdr=TdrConfig(include_benign=True)),
                       "hub-7 Zürich", prune_every=10_000)
    try:
        for name in ("clear, 6 benign objects", "alarm, three ptos among benign", "unscreened, deadline_missed",
                     "alarm, long and non-ASCII ids"):
            d, _ = CASES[name]
            d = replace(d, item_id=f"case-{len(name)}")
            store.publish(d)
            (path,) = (tmp_path / "audit").glob(f"*/case-{len(name)}{TDR_SUFFIX}")
            assert path.read_bytes() == encode(build_tdr(d, include_benign=True, site_id="hub-7 Zürich")), name
    finally:
        store.close(1.0)
