"""DICOS Threat Detection Report (TDR) writer: one ``Decision`` in, one TDR file (and its bytes) out.

Where it sits: the publish stage calls ``write_tdr`` after a decision is final, to put a standard report in
the audit store and optionally hand its bytes to a publisher. It reads only ``edge.records``.
What it must not do: change or drop the decision. An UNSCREENED item is reported as ALARM with the abort
flag set, so a workstation that reads only Alarm Decision (4010,1031) still sends the item to a person.

Layout written (DICOS v03, tag numbers as the Stratovan toolkit writes them; see ``docs/dicos.md``):

* TDR Type (4010,1027) ``MACHINE``; Alarm Decision (4010,1031) ``ALARM``/``CLEAR``; Alarm Decision Time
  (4010,102B) from ``decided_wall`` (UTC); Abort Flag (4010,1024) ``SUCCESS``/``ABORT`` and, when aborted,
  Abort Reason (4010,1021); Total Processing Time (4010,1069) = ``latency_ms``; Threat Detection Algorithm
  and Version (4010,1029) = ``["xray-edge", <version>, "<role>=<name>@<version>#<sha256[:12]>", ...]``.
* Threat Sequence (4010,1011): one Potential Threat Object per anomalous object (all objects with
  ``include_benign``). Each holds its ID (4010,1010) = ``object_id``, a PTO Representation item (4010,1037)
  with the referenced DX images (0008,114A), the 2-D box as Threat ROI Base (x1, y1, 0) and Extents
  (w, h, 1) in X-ray pixels (snapped outward to whole pixels), the outline as Bounding Polygon (4010,101D)
  (x, y, 0 triplets) and, rasterised from that outline, a Threat ROI Bitmap (4010,1006) packed 1 bit per
  pixel, x fastest, least significant bit first; and one ATD Assessment (4010,1038): flag ``THREAT`` /
  ``NO_THREAT``, category ``ANOMALY`` or the detector's class, probability = the anomaly score clipped to
  [0, 1] (the detector score when there is no anomaly score).
* Number of Total Objects (4010,1033) = PTOs written; Number of Alarm Objects (4010,1034) = PTOs flagged THREAT.
* Reasons (why an object alarmed: a known class, the classifier, the anomaly scorer): one ATD Assessment item per
  reason, category ``KNOWN_<CLASS>``/``CLASSIFIER``/``ANOMALY``, description ``<code>: score s >= threshold t``,
  probability = the reason's score. They come from :func:`object_reasons`, the one place that reads them from
  an ``ObjectResult``.

How a MACHINE report is made: ``_machine_report`` describes it once, as ``(keyword, value)`` elements;
``build_tdr`` turns them into a pydicom ``Dataset`` (for ``edge dicos show``, the OPERATOR report and tests) and
``encode_machine_tdr`` straight into the bytes ``encode(build_tdr(...))`` would give, at a tenth of the CPU
(``edge.dicos._explicit``; the audit store and ``write_tdr`` use it, ``tests/dicos/test_tdr_fast.py`` proves the bytes
equal).

``build_operator_tdr`` writes the OPERATOR report of a verdict sent back from the control room: the machine
report's item, study and objects, TDR Type ``OPERATOR``, the operator's decision and time, Operators' Name, and a
reference to the machine report it reviews.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Final, Protocol, TypeVar, cast

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import VALIDATORS

from edge.dicos._explicit import Element, Elements, Unencodable, encode_part10, vr_of
from edge.dicos._io import encode, write_atomic
from edge.dicos.tags import DICOS_VERSION, SOP_CLASS_DX_PROCESSING, SOP_CLASS_TDR, abort_reason_codes
from edge.records import Decision, ObjectResult, Verdict

ALGORITHM_NAME: Final = "xray-edge"
_CHARACTER_SET: Final = "ISO_IR 192"
"""Specific Character Set of every report: UTF-8, so item and scanner ids keep their characters."""
_CS_BAD = re.compile(r"[^A-Z0-9 _]")
_LO_MAX: Final = 64
_SH_MAX: Final = 16


@lru_cache(maxsize=1)
def edge_version() -> str:
    """The installed xray-edge version, or ``0+unknown`` when run from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xray-edge")
    except PackageNotFoundError:
        return "0+unknown"


def _cs(text: str, default: str) -> str:
    """A Code String: upper case, A-Z 0-9 space underscore, at most 16 characters (DICOM PS3.5 6.2)."""
    value = _CS_BAD.sub("_", text.strip().upper())[:_SH_MAX].strip()
    return value or default


def _lo(text: str) -> str:
    """A Long String value: no backslash (the value separator), no control characters, at most 64 chars."""
    text = text.replace("\\", "/")
    if not text.isprintable():  # the usual id is all printable: no need to test it character by character
        text = "".join(c for c in text if c.isprintable())
    return text[:_LO_MAX]


def _dt(wall_s: float) -> str:
    """UNIX seconds → DICOM DT in UTC with an explicit offset, as the real TDRs write it."""
    return datetime.fromtimestamp(wall_s, tz=UTC).strftime("%Y%m%d%H%M%S.%f+0000")


def _da_tm(wall_s: float) -> tuple[str, str]:
    moment = datetime.fromtimestamp(wall_s, tz=UTC)
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S.%f")


def algorithm_values(decision: Decision) -> list[str]:
    """Threat Detection Algorithm and Version (4010,1029): name, version, then one value per model bundle.

    The toolkit's layout is ``[manufacturer-or-name, version, parameters...]``; the parameters carry every
    ``ModelRef`` so that a report names exactly which bundles judged the item.
    """
    values = [ALGORITHM_NAME, _lo(edge_version())]
    for model in decision.models:
        values.append(_lo(f"{model.role}={model.name}@{model.version}#{model.sha256[:12]}"))
    return values


class ReasonLike(Protocol):
    """Why an object alarmed, as shared contract 2 defines ``edge.records.AlarmReason`` (read-only fields)."""

    @property
    def kind(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def score(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def code(self) -> str: ...


def object_reasons(obj: ObjectResult) -> Sequence[ReasonLike]:
    """The reasons an object alarmed (``ObjectResult.reasons``, shared contract 2: ``known:<class>``,
    ``classifier``, ``anomaly``, each with its score and threshold): the one function that reads them, so a test
    can hand ``build_tdr`` its own. An object without reasons (a decision journalled before reasons existed) falls
    back to one assessment from ``anomalous``/``label``/``anomaly_score``."""
    return obj.reasons


ReasonsOf = Callable[[ObjectResult], Sequence[ReasonLike]]
"""How ``build_tdr`` learns an object's reasons (``object_reasons``; tests pass their own)."""


def _snapped_box(obj: ObjectResult) -> tuple[int, int, int, int]:
    """The box snapped outward to whole pixels, so base, extents and bitmap agree on one pixel grid."""
    x1 = math.floor(obj.box.x1)
    y1 = math.floor(obj.box.y1)
    x2 = max(math.ceil(obj.box.x2), x1 + 1)
    y2 = max(math.ceil(obj.box.y2), y1 + 1)
    return x1, y1, x2, y2


def polygon_bitmap(
    polygon: Sequence[tuple[float, float]], x1: int, y1: int, width: int, height: int
) -> NDArray[np.bool_]:
    """Rasterise an X-ray-pixel polygon into a (height, width) mask anchored at (x1, y1)."""
    import cv2

    mask = np.zeros((height, width), dtype=np.uint8)
    pts = np.round(np.asarray(polygon, dtype=np.float64) - (x1, y1)).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1)
    return mask.astype(bool)


def pack_bitmap(mask: NDArray[np.bool_]) -> bytes:
    """Pack a (depth, height, width) or (height, width) mask: x fastest, least significant bit first."""
    return np.packbits(mask.astype(np.uint8).ravel(), bitorder="little").tobytes()


def _probability(obj: ObjectResult) -> float | None:
    score = obj.anomaly_score if obj.anomaly_score is not None else obj.detector_score
    if score is None or not math.isfinite(score):
        return None
    return float(min(1.0, max(0.0, score)))


def _description(obj: ObjectResult) -> str:
    if obj.label:
        return obj.label
    if obj.anomaly_score is not None and obj.threshold is not None:
        relation = ">=" if obj.anomalous else "<"
        return f"anomaly score {obj.anomaly_score:.4f} {relation} threshold {obj.threshold:.4f}"
    return "anomaly"


def _reason_category(reason: ReasonLike) -> str:
    if reason.kind == "known" and reason.label:
        return _cs(f"KNOWN_{reason.label}", "KNOWN")
    return _cs(reason.kind, "ANOMALY")


def _reason_assessment(reason: ReasonLike) -> Elements:
    """One ATD Assessment per reason: what fired, with its score against its threshold."""
    fired = math.isfinite(reason.score) and reason.score >= reason.threshold
    relation = ">=" if fired else "<"
    assessment: list[Element] = [
        ("ThreatCategory", _reason_category(reason)),
        ("ThreatCategoryDescription",
         f"{reason.code}: score {reason.score:.4f} {relation} threshold {reason.threshold:.4f}"),
        ("ATDAbilityAssessment", "NO_INTERFERENCE"),
        ("ATDAssessmentFlag", "THREAT" if fired else "NO_THREAT"),
    ]
    if math.isfinite(reason.score):
        assessment.append(("ATDAssessmentProbability", float(min(1.0, max(0.0, reason.score)))))
    return assessment


def _is_threat(obj: ObjectResult, reasons: Sequence[ReasonLike]) -> bool:
    return obj.anomalous or bool(reasons)


def _pto_item(obj: ObjectResult, pto_id: int, dx_uids: Sequence[str], bitmaps: bool,
              reasons: Sequence[ReasonLike] = ()) -> Elements:
    x1, y1, x2, y2 = _snapped_box(obj)
    width, height = x2 - x1, y2 - y1

    bitmap = b""
    if bitmaps and len(obj.polygon_xray) >= 3:
        bitmap = pack_bitmap(polygon_bitmap(obj.polygon_xray, x1, y1, width, height))
    roi: Elements = [
        ("ThreatROIBase", [float(x1), float(y1), 0.0]),
        ("ThreatROIExtents", [float(width), float(height), 1.0]),
        ("ThreatROIBitmap", bitmap),
    ]

    representation: list[Element] = []
    if dx_uids:
        refs: list[Elements] = [
            [("ReferencedSOPClassUID", SOP_CLASS_DX_PROCESSING), ("ReferencedSOPInstanceUID", uid)] for uid in dx_uids
        ]
        representation.append(("ReferencedInstanceSequence", refs))
    representation.append(("ThreatROIVoxelSequence", [roi]))
    if len(obj.polygon_xray) >= 2:
        representation.append(("BoundingPolygon", [float(v) for x, y in obj.polygon_xray for v in (x, y, 0.0)]))

    if reasons:
        assessments = [_reason_assessment(reason) for reason in reasons]
    else:
        assessment: list[Element] = [
            ("ThreatCategory", _cs(obj.label, "ANOMALY") if obj.label else "ANOMALY"),
            ("ThreatCategoryDescription", _description(obj)),
            ("ATDAbilityAssessment", "NO_INTERFERENCE"),
            ("ATDAssessmentFlag", "THREAT" if obj.anomalous else "NO_THREAT"),
        ]
        probability = _probability(obj)
        if probability is not None:
            assessment.append(("ATDAssessmentProbability", probability))
        assessments = [assessment]

    return [
        ("PotentialThreatObjectID", pto_id),
        ("PTORepresentationSequence", [representation]),
        ("ATDAssessmentSequence", assessments),
    ]


def _file_meta(sop_uid: str) -> FileMetaDataset:
    """The file meta of a TDR (machine or operator): its SOP class and instance, explicit little endian, this
    implementation."""
    return _dataset(_file_meta_elements(sop_uid), FileMetaDataset())


def _file_meta_elements(sop_uid: str) -> Elements:
    return [
        ("MediaStorageSOPClassUID", SOP_CLASS_TDR),
        ("MediaStorageSOPInstanceUID", sop_uid),
        ("TransferSyntaxUID", ExplicitVRLittleEndian),
        ("ImplementationClassUID", PYDICOM_IMPLEMENTATION_UID),
        ("ImplementationVersionName", _lo(f"XRAYEDGE_{edge_version()}")[:_SH_MAX]),
    ]


_D = TypeVar("_D", bound=Dataset)


def _dataset(elements: Elements, ds: _D) -> _D:
    """The pydicom dataset of an element list (sequence values become sequences of datasets)."""
    for keyword, value in elements:
        if vr_of(keyword) == "SQ":
            setattr(ds, keyword, DicomSequence([_dataset(item, Dataset()) for item in cast(Sequence[Elements], value)]))
        else:
            setattr(ds, keyword, value)
    return ds


def _uid(*parts: str) -> str:
    """A UID derived from the parts: the same item always gets the same UIDs, so a rewrite is idempotent."""
    return str(generate_uid(entropy_srcs=list(parts)))


def _machine_report(
    decision: Decision,
    *,
    dx_uids: Sequence[str],
    study_uid: str | None,
    ooi_type: str,
    include_benign: bool,
    bitmaps: bool,
    reasons_of: ReasonsOf,
    site_id: str | None,
) -> tuple[str, Elements]:
    """The MACHINE report of a decision as its SOP Instance UID and its elements: the one description that both
    ``build_tdr`` (a pydicom dataset) and ``encode_machine_tdr`` (bytes) turn into a report."""
    key = (decision.scanner_id, decision.item_id, repr(decision.decided_wall))
    sop_uid = _uid("tdr", *key)
    judged = [(obj, tuple(reasons_of(obj))) for obj in decision.objects]
    chosen = [(obj, reasons) for obj, reasons in judged if _is_threat(obj, reasons) or include_benign]
    ptos = [
        _pto_item(obj, obj.object_id if 0 <= obj.object_id <= 0xFFFF else index, dx_uids, bitmaps, reasons)
        for index, (obj, reasons) in enumerate(chosen)
    ]
    aborted = decision.verdict is Verdict.UNSCREENED

    created_da, created_tm = _da_tm(decision.decided_wall)
    start_da, start_tm = _da_tm(decision.scan_start_wall)
    ds: list[Element] = [
        ("SpecificCharacterSet", _CHARACTER_SET),
        ("InstanceCreationDate", created_da), ("InstanceCreationTime", created_tm),
        ("SOPClassUID", SOP_CLASS_TDR),
        ("SOPInstanceUID", sop_uid),
        ("StudyDate", start_da), ("StudyTime", start_tm),
        ("SeriesDate", start_da), ("SeriesTime", start_tm),
        ("ContentDate", created_da), ("ContentTime", created_tm),
        ("Modality", "TDR"),
        # General Equipment, OOI, Study and Frame of Reference modules as the toolkit's reports carry them
        # (tests/dicos/test_tdr_structure.py compares the element paths with the real samples).
        ("Manufacturer", ALGORITHM_NAME),
        ("InstitutionName", _lo(site_id or "unknown")),
        ("InstitutionAddress", ""),
        ("StationName", _lo(decision.scanner_id)[:_SH_MAX]),
        ("InstitutionalDepartmentName", ""),
        ("ManufacturerModelName", ALGORITHM_NAME),
        ("DeviceSerialNumber", _lo(decision.scanner_id)),
        ("SoftwareVersions", _lo(edge_version())),
    ]
    if dx_uids:
        ds.append(("ReferencedStudySequence",
                   [[("ReferencedSOPClassUID", SOP_CLASS_DX_PROCESSING), ("ReferencedSOPInstanceUID", dx_uids[0])]]))
    ds += [
        ("PatientID", _lo(decision.item_id)),
        ("IssuerOfPatientID", _lo(decision.scanner_id)),
        ("TypeOfPatientID", "TEXT"),
        ("PatientSex", "U"),  # the OOI owner's, unknown
        ("OtherPatientIDsSequence", []),
        ("StudyInstanceUID", study_uid or _uid("study", decision.scanner_id, decision.item_id)),
        ("SeriesInstanceUID", _uid("tdr-series", *key)),
        ("StudyID", _uid("study-id", decision.scanner_id, decision.item_id).replace(".", "")[-_SH_MAX:]),
        ("InstanceNumber", 1),
        ("FrameOfReferenceUID", _uid("frame", decision.scanner_id, decision.item_id)),
        ("PositionReferenceIndicator", ""),
        ("DICOSVersion", DICOS_VERSION),
        ("OOIType", _cs(ooi_type, "BAGGAGE")),
    ]
    if decision.verdict is not Verdict.UNSCREENED:  # an aborted item says why in Abort Flag and Abort Reason
        ds.append(("AcquisitionStatus", "SUCCESSFUL"))
    ds += [
        ("ScanType", "OPERATIONAL"),
        ("AlgorithmRoutingCodeSequence", []),
        ("TDRType", "MACHINE"),
        ("AbortFlag", "ABORT" if aborted else "SUCCESS"),
    ]
    if aborted and decision.reason is not None:
        ds.append(("AbortReason", abort_reason_codes()[str(decision.reason.value)]))
    ds += [
        ("ThreatDetectionAlgorithmAndVersion", algorithm_values(decision)),
        # UNSCREENED is reported as ALARM: the box never clears what it did not see (see module docstring).
        ("AlarmDecision", "CLEAR" if decision.verdict is Verdict.CLEAR else "ALARM"),
        ("AlarmDecisionTime", _dt(decision.decided_wall)),
        ("NumberOfTotalObjects", len(ptos)),
        ("NumberOfAlarmObjects", sum(1 for obj, reasons in chosen if _is_threat(obj, reasons))),
        ("TotalProcessingTime", float(decision.latency_ms)),
        ("AdditionalScreeningPerformed", "NO"),
        ("ThreatSequence", ptos),
    ]
    return sop_uid, ds


def build_tdr(
    decision: Decision,
    *,
    dx_uids: Sequence[str] = (),
    study_uid: str | None = None,
    ooi_type: str = "BAGGAGE",
    include_benign: bool = False,
    bitmaps: bool = True,
    reasons_of: ReasonsOf = object_reasons,
    site_id: str | None = None,
) -> Dataset:
    """The TDR dataset for one decision (with file meta), not yet encoded.

    Args:
        decision: the item's final decision.
        dx_uids: SOP Instance UIDs of the DX images the boxes refer to (high, low), when known.
        study_uid: the DX images' Study Instance UID, so the report files into the same study; derived
            from scanner and item id when absent.
        ooi_type: OOI Type (4010,1042) defined term, e.g. BAGGAGE or CARGO.
        include_benign: also write objects judged benign (flag NO_THREAT), not just anomalous ones.
        bitmaps: rasterise each object's outline into a Threat ROI Bitmap.
        reasons_of: an object's alarm reasons (one ATD Assessment each); ``object_reasons`` by default.
        site_id: the site, written as Institution Name (``unknown`` when not given, as the toolkit writes).
    """
    sop_uid, elements = _machine_report(
        decision, dx_uids=dx_uids, study_uid=study_uid, ooi_type=ooi_type, include_benign=include_benign,
        bitmaps=bitmaps, reasons_of=reasons_of, site_id=site_id)
    ds = _dataset(elements, Dataset())
    ds.file_meta = _file_meta(sop_uid)
    return ds


def encode_machine_tdr(
    decision: Decision,
    *,
    dx_uids: Sequence[str] = (),
    study_uid: str | None = None,
    ooi_type: str = "BAGGAGE",
    include_benign: bool = False,
    bitmaps: bool = True,
    reasons_of: ReasonsOf = object_reasons,
    site_id: str | None = None,
) -> bytes:
    """``encode(build_tdr(decision, ...))``, the same bytes, at a fraction of the CPU: what the audit store calls
    for every decision.

    The report's elements go straight to bytes (``edge.dicos._explicit``), without a pydicom ``DataElement`` per
    value and without pydicom's per-value validation, which is redundant here: every value is valid by
    construction (code strings through ``_cs``, long and short strings through ``_lo`` and cut to their VR's
    length, dates and times from ``strftime`` of the decision's times, UIDs from ``generate_uid`` or this module's
    constants, numbers converted to ``float``/``int`` as their VR takes them), except the caller's ``dx_uids`` and
    ``study_uid``, which are checked here, and the free texts of Threat Category Description, whose length the
    encoder checks. A report with any value the encoder would not write as pydicom does (an invalid caller UID, an
    outline too long for a 16-bit length, a text that cannot be encoded) is built and encoded by pydicom instead,
    with its warnings. Arguments as :func:`build_tdr`.
    """
    if all(_valid_uid(uid) for uid in (*dx_uids, *([study_uid] if study_uid else []))):
        sop_uid, elements = _machine_report(
            decision, dx_uids=dx_uids, study_uid=study_uid, ooi_type=ooi_type, include_benign=include_benign,
            bitmaps=bitmaps, reasons_of=reasons_of, site_id=site_id)
        try:
            return encode_part10(_file_meta_elements(sop_uid), elements)
        except Unencodable:
            pass
    return encode(build_tdr(decision, dx_uids=dx_uids, study_uid=study_uid, ooi_type=ooi_type,
                            include_benign=include_benign, bitmaps=bitmaps, reasons_of=reasons_of, site_id=site_id))


def _valid_uid(uid: str) -> bool:
    """pydicom would write ``uid`` without a warning (its own UI check, a value per backslash-separated part)."""
    return isinstance(uid, str) and all(VALIDATORS["UI"]("UI", part)[0] for part in uid.split("\\"))


def write_tdr(
    decision: Decision,
    path: Path,
    *,
    dx_uids: Sequence[str] = (),
    study_uid: str | None = None,
    ooi_type: str = "BAGGAGE",
    include_benign: bool = False,
    bitmaps: bool = True,
    reasons_of: ReasonsOf = object_reasons,
    site_id: str | None = None,
) -> bytes:
    """Write the item's TDR to ``path`` atomically and return the same bytes (for optional publishing).

    Writing the same decision twice gives identical bytes (UIDs and times come from the decision), the bytes of
    ``encode(build_tdr(...))``.

    Raises:
        OSError: the directory is missing or not writable; nothing is left behind.
    """
    data = encode_machine_tdr(decision, dx_uids=dx_uids, study_uid=study_uid, ooi_type=ooi_type,
                              include_benign=include_benign, bitmaps=bitmaps, reasons_of=reasons_of, site_id=site_id)
    write_atomic(Path(path), data)
    return data


# ---------------------------------------------------------------------------------------------- OPERATOR


OPERATOR_ALARM_DECISION: Final = {"threat_confirmed": "ALARM", "sent_to_search": "ALARM", "cleared": "CLEAR"}
"""An operator's verdict (shared contract 3) as the OPERATOR report's Alarm Decision."""


@dataclass(frozen=True, slots=True)
class OperatorReview:
    """What the OPERATOR report needs from a verdict (shared contract 3) and the item it reviews."""

    verdict_id: str
    verdict: str
    operator: str
    role: str
    decided_wall: float
    item_id: str
    scanner_id: str
    machine_decided_wall: float | None = None
    """When the box decided the item: the report's processing time is the operator's review time from then."""


def build_operator_tdr(review: OperatorReview, machine: Dataset | None = None) -> Dataset:
    """The OPERATOR TDR for one verdict: a copy of the machine report's item, study and objects with the
    operator's decision, or (no machine report kept) a report naming the item alone.

    Objects keep their machine assessment when the operator confirms (ALARM) and are flagged ``NO_THREAT`` when
    the operator clears, so the report's counts agree with its decision. The same verdict always gives the same
    bytes (UIDs come from the verdict id), so storing a redelivered verdict again changes nothing.

    Raises:
        ValueError: ``review.verdict`` is not one of the contract's verdicts.
    """
    decision = OPERATOR_ALARM_DECISION.get(review.verdict)
    if decision is None:
        raise ValueError(f"unknown operator verdict {review.verdict!r}; expected one of "
                         f"{', '.join(sorted(OPERATOR_ALARM_DECISION))}")
    ds = copy.deepcopy(machine) if machine is not None else Dataset()
    sop_uid = _uid("operator-tdr", review.verdict_id)
    meta = _file_meta(sop_uid)
    ds.file_meta = meta
    created_da, created_tm = _da_tm(review.decided_wall)
    ds.SpecificCharacterSet = _CHARACTER_SET
    ds.InstanceCreationDate, ds.InstanceCreationTime = created_da, created_tm
    ds.SOPClassUID = SOP_CLASS_TDR
    ds.SOPInstanceUID = sop_uid
    if machine is None:
        ds.StudyDate, ds.StudyTime = created_da, created_tm
        ds.SeriesDate, ds.SeriesTime = created_da, created_tm
    ds.ContentDate, ds.ContentTime = created_da, created_tm
    ds.Modality = "TDR"
    ds.Manufacturer = ALGORITHM_NAME
    ds.StationName = _lo(review.scanner_id)[:_SH_MAX]
    ds.SoftwareVersions = _lo(edge_version())
    ds.OperatorsName = _lo(review.operator)
    if machine is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = SOP_CLASS_TDR
        ref.ReferencedSOPInstanceUID = str(machine.SOPInstanceUID)
        ds.ReferencedInstanceSequence = DicomSequence([ref])
    ds.PatientID = _lo(review.item_id)
    ds.IssuerOfPatientID = _lo(review.scanner_id)
    ds.TypeOfPatientID = "TEXT"
    if machine is None:
        ds.StudyInstanceUID = _uid("study", review.scanner_id, review.item_id)
    ds.SeriesInstanceUID = _uid("operator-tdr-series", review.verdict_id)
    ds.InstanceNumber = 2
    ds.DICOSVersion = DICOS_VERSION
    if machine is None:
        ds.OOIType = "BAGGAGE"
        ds.ScanType = "OPERATIONAL"
    ds.TDRType = "OPERATOR"
    ds.AbortFlag = "SUCCESS"
    for keyword in ("AbortReason", "ThreatDetectionAlgorithmAndVersion"):  # the machine's, not the operator's
        if keyword in ds:
            delattr(ds, keyword)
    ds.AlarmDecision = decision
    ds.AlarmDecisionTime = _dt(review.decided_wall)
    ptos = list(ds.get("ThreatSequence", DicomSequence([])))
    if decision == "CLEAR":
        for pto in ptos:
            for assessment in pto.get("ATDAssessmentSequence", []):
                assessment.ATDAssessmentFlag = "NO_THREAT"
    alarm_objects = sum(
        1 for pto in ptos if any(a.get("ATDAssessmentFlag") == "THREAT" for a in pto.get("ATDAssessmentSequence", []))
    )
    ds.NumberOfTotalObjects = len(ptos)
    ds.NumberOfAlarmObjects = alarm_objects
    review_ms = 0.0
    if review.machine_decided_wall is not None:
        review_ms = max(0.0, (review.decided_wall - review.machine_decided_wall) * 1000.0)
    ds.TotalProcessingTime = float(review_ms)
    ds.AdditionalScreeningPerformed = "NO"
    ds.ThreatSequence = DicomSequence(ptos)
    return ds
