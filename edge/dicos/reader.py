"""DICOS Threat Detection Report reader: a TDR file (ours or another toolkit's) → a small typed record.

Where it sits: beside the writer in ``edge.dicos``; used by tests to interpret third-party reports and to
round-trip ours, and by ``edge dicos show``. It is not on the screening hot path.
What it must not do: trust a report's summary fields blindly. Third-party reports can contradict
themselves (a real sample says CLEAR while flagging a THREAT object), so ``TdrReport.verdict`` is the
fail-safe reading (any threat flag or alarm count wins over CLEAR) and ``inconsistencies`` says what
disagreed. Every element is addressed by number, so the reader does not need ``register_dicos_tags``.

Errors: an unreadable, truncated or non-TDR file raises ``edge.errors.FrameError`` naming the file.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.valuerep import DT, PersonName

from edge.dicos.tags import (
    SOP_CLASS_TDR,
    TAG_PTO_PROCESSING_END_TIME,
    TAG_PTO_PROCESSING_START_TIME,
    TAG_PTO_PROCESSING_TIME_MS,
    abort_reason_codes,
)
from edge.errors import FrameError
from edge.records import BoxXyxy, UnscreenedReason, Verdict

# Tag numbers (group << 16 | element), DICOS v03 as the real files carry them.
_SOP_CLASS_UID: Final = 0x00080016
_SOP_INSTANCE_UID: Final = 0x00080018
_STUDY_UID: Final = 0x0020000D
_SERIES_UID: Final = 0x0020000E
_PATIENT_ID: Final = 0x00100020
_REFERENCED_INSTANCE_SEQ: Final = 0x0008114A
_REFERENCED_SOP_INSTANCE_UID: Final = 0x00081155
_THREAT_ROI_VOXEL_SEQ: Final = 0x40101001
_THREAT_ROI_BASE: Final = 0x40101004
_THREAT_ROI_EXTENTS: Final = 0x40101005
_THREAT_ROI_BITMAP: Final = 0x40101006
_PTO_ID: Final = 0x40101010
_THREAT_SEQ: Final = 0x40101011
_THREAT_CATEGORY: Final = 0x40101012
_THREAT_CATEGORY_DESCRIPTION: Final = 0x40101013
_ATD_ABILITY: Final = 0x40101014
_ATD_FLAG: Final = 0x40101015
_ATD_PROBABILITY: Final = 0x40101016
_MASS: Final = 0x40101017
_DENSITY: Final = 0x40101018
_BOUNDING_POLYGON: Final = 0x4010101D
_ABORT_REASON: Final = 0x40101021
_ABORT_FLAG: Final = 0x40101024
_TDR_TYPE: Final = 0x40101027
_ALGORITHM: Final = 0x40101029
_ALARM_DECISION_TIME: Final = 0x4010102B
_ALARM_DECISION: Final = 0x40101031
_TOTAL_OBJECTS: Final = 0x40101033
_ALARM_OBJECTS: Final = 0x40101034
_PTO_REPRESENTATION_SEQ: Final = 0x40101037
_ATD_ASSESSMENT_SEQ: Final = 0x40101038
_TOTAL_PROCESSING_TIME: Final = 0x40101069
_OPERATORS_NAME: Final = 0x00081070

_REQUIRED: Final = (
    (_SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)"),
    (_ABORT_FLAG, "Abort Flag (4010,1024)"),
    (_TDR_TYPE, "TDR Type (4010,1027)"),
    (_ALARM_DECISION, "Alarm Decision (4010,1031)"),
    (_TOTAL_OBJECTS, "Number of Total Objects (4010,1033)"),
    (_ALARM_OBJECTS, "Number of Alarm Objects (4010,1034)"),
)
"""Present in every TDR seen (ours and the Stratovan samples). pydicom drops a cut-off trailing element without
a word, so a missing one of these is how a truncated report shows; a cut that loses only later elements
(e.g. Total Processing Time) leaves those fields None."""

THREAT_FLAGS: Final = frozenset({"THREAT", "HIGH_THREAT"})
"""ATD Assessment Flag values that mean the object alarmed."""

_MODEL_PARAM = re.compile(r"^(?P<role>[^=]+)=(?P<name>.*)@(?P<version>[^@#]*)#(?P<sha>[0-9a-fA-F]*)$")


@dataclass(frozen=True, slots=True)
class TdrAssessment:
    """One ATD Assessment item (4010,1038). ``probability`` in [0, 1] when present."""

    flag: str | None
    category: str | None
    description: str | None
    ability: str | None
    probability: float | None

    @property
    def is_threat(self) -> bool:
        return self.flag in THREAT_FLAGS


@dataclass(frozen=True, slots=True)
class TdrRoi:
    """One Threat ROI Voxel item: base (x, y, z) and extents (w, h, d) in image pixels/voxels.

    ``bitmap`` is the unpacked (d, h, w) mask (read-only), or None when the file carries none (zero length)
    or one that does not fit the extents.
    """

    base: tuple[float, float, float]
    extents: tuple[float, float, float]
    bitmap: NDArray[np.bool_] | None

    @property
    def box(self) -> BoxXyxy:
        """The in-plane box (x, y, x + w, y + h); for a 2-D DX report z is 0 and d is 1."""
        x, y, _ = self.base
        w, h, _ = self.extents
        return BoxXyxy(x, y, x + w, y + h)


@dataclass(frozen=True, slots=True)
class TdrObject:
    """One Potential Threat Object (an item of Threat Sequence 4010,1011)."""

    pto_id: int
    rois: tuple[TdrRoi, ...]
    polygon: tuple[tuple[float, float, float], ...]
    referenced_uids: tuple[str, ...]
    assessments: tuple[TdrAssessment, ...]
    mass: float | None
    density: float | None
    processing_time_ms: float | None
    processing_start: datetime | None
    processing_end: datetime | None

    @property
    def is_threat(self) -> bool:
        return any(a.is_threat for a in self.assessments)

    @property
    def box(self) -> BoxXyxy | None:
        return self.rois[0].box if self.rois else None


@dataclass(frozen=True, slots=True)
class TdrModel:
    """A model bundle named in our algorithm parameters (``role=name@version#sha256-prefix``)."""

    role: str
    name: str
    version: str
    sha256_prefix: str


@dataclass(frozen=True, slots=True)
class TdrAlgorithm:
    """Threat Detection Algorithm and Version (4010,1029): ``[name, version, parameters...]``."""

    name: str | None
    version: str | None
    parameters: tuple[str, ...]

    @property
    def models(self) -> tuple[TdrModel, ...]:
        """The parameters that follow our ``role=name@version#sha`` layout (empty for other toolkits)."""
        found = []
        for param in self.parameters:
            m = _MODEL_PARAM.match(param)
            if m:
                found.append(TdrModel(m["role"], m["name"], m["version"], m["sha"]))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class TdrReport:
    """What a TDR says, as written, plus the fail-safe reading of it (``verdict``)."""

    sop_instance_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    item_id: str | None
    tdr_type: str | None
    alarm_decision: str | None
    alarm_decision_time: datetime | None
    abort_flag: str | None
    abort_reasons: tuple[str, ...]
    algorithm: TdrAlgorithm
    total_processing_time_ms: float | None
    number_of_total_objects: int | None
    number_of_alarm_objects: int | None
    objects: tuple[TdrObject, ...]
    operators: tuple[str, ...] = ()
    """Operators' Name (0008,1070): who decided an OPERATOR report."""
    referenced_uids: tuple[str, ...] = ()
    """SOP Instance UIDs the report itself refers to (an OPERATOR report: the MACHINE report it reviews)."""

    @property
    def threat_objects(self) -> tuple[TdrObject, ...]:
        return tuple(o for o in self.objects if o.is_threat)

    @property
    def verdict(self) -> Verdict:
        """Fail-safe: ABORT → UNSCREENED; ALARM, any THREAT flag or a positive alarm count → ALARM;
        CLEAR only when nothing contradicts it; a missing or unknown decision → UNSCREENED."""
        if self.abort_flag == "ABORT":
            return Verdict.UNSCREENED
        if self.alarm_decision == "ALARM" or self.threat_objects or (self.number_of_alarm_objects or 0) > 0:
            return Verdict.ALARM
        if self.alarm_decision == "CLEAR":
            return Verdict.CLEAR
        return Verdict.UNSCREENED

    @property
    def unscreened_reason(self) -> UnscreenedReason | None:
        """Our reason for an aborted report written by us; INTERNAL_ERROR for other aborts; None if not."""
        if self.verdict is not Verdict.UNSCREENED:
            return None
        by_code = {code: reason for reason, code in abort_reason_codes().items()}
        for code in self.abort_reasons:
            if code in by_code:
                return UnscreenedReason(by_code[code])
        return UnscreenedReason.INTERNAL_ERROR

    @property
    def inconsistencies(self) -> tuple[str, ...]:
        """Human-readable disagreements between the summary fields and the objects."""
        found = []
        n_threat = len(self.threat_objects)
        if self.alarm_decision == "CLEAR" and n_threat:
            found.append(f"Alarm Decision is CLEAR but {n_threat} object(s) are flagged THREAT")
        if self.alarm_decision == "CLEAR" and (self.number_of_alarm_objects or 0) > 0:
            found.append(f"Alarm Decision is CLEAR but Number of Alarm Objects is {self.number_of_alarm_objects}")
        if self.number_of_total_objects is not None and self.number_of_total_objects != len(self.objects):
            found.append(
                f"Number of Total Objects is {self.number_of_total_objects} but the Threat Sequence "
                f"holds {len(self.objects)}"
            )
        if self.number_of_alarm_objects is not None and self.number_of_alarm_objects != n_threat:
            found.append(
                f"Number of Alarm Objects is {self.number_of_alarm_objects} but {n_threat} object(s) are flagged THREAT"
            )
        if self.alarm_decision not in ("ALARM", "CLEAR"):
            found.append(f"Alarm Decision is {self.alarm_decision!r}; expected ALARM or CLEAR")
        return tuple(found)


def _get(ds: Dataset, tag: int) -> object | None:
    element = ds.get(tag)
    if element is None:
        return None
    value: object = element.value
    if value is None or value == b"" or value == "":
        return None
    return value


def _str(ds: Dataset, tag: int) -> str | None:
    value = _get(ds, tag)
    if value is None:
        return None
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        value = "\\".join(str(v) for v in value)
    return str(value).strip() or None


def _strs(ds: Dataset, tag: int) -> tuple[str, ...]:
    value = _get(ds, tag)
    if value is None:
        return ()
    if isinstance(value, str | PersonName):
        return (str(value).strip(),)
    if isinstance(value, Iterable):
        return tuple(str(v).strip() for v in value)
    return (str(value),)


def _floats(ds: Dataset, tag: int) -> tuple[float, ...]:
    value = _get(ds, tag)
    if value is None:
        return ()
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return tuple(float(v) for v in value)
    return (float(value),)  # type: ignore[arg-type]


def _float(ds: Dataset, tag: int) -> float | None:
    values = _floats(ds, tag)
    return values[0] if values else None


def _int(ds: Dataset, tag: int) -> int | None:
    value = _get(ds, tag)
    if value is None:
        return None
    return int(value)  # type: ignore[call-overload]


def _datetime(ds: Dataset, tag: int) -> datetime | None:
    text = _str(ds, tag)
    if text is None:
        return None
    try:
        return DT(text)
    except ValueError:
        return None


def _seq(ds: Dataset, tag: int) -> list[Dataset]:
    value = _get(ds, tag)
    return list(value) if isinstance(value, Iterable) else []


def _triple(values: tuple[float, ...]) -> tuple[float, float, float]:
    padded = (*values, 0.0, 0.0, 0.0)[:3]
    return padded[0], padded[1], padded[2]


def _roi(item: Dataset) -> TdrRoi:
    base = _triple(_floats(item, _THREAT_ROI_BASE))
    extents = _triple(_floats(item, _THREAT_ROI_EXTENTS))
    raw = _get(item, _THREAT_ROI_BITMAP)
    bitmap = None
    if isinstance(raw, bytes | bytearray):
        w, h, d = extents
        dims_ok = all(v > 0 and math.isfinite(v) and v == int(v) for v in (w, h, d))
        n_bits = int(w) * int(h) * int(d) if dims_ok else 0
        if dims_ok and len(raw) * 8 >= n_bits:
            bits = np.unpackbits(np.frombuffer(bytes(raw), dtype=np.uint8), bitorder="little")[:n_bits]
            bitmap = bits.reshape(int(d), int(h), int(w)).astype(bool)
            bitmap.flags.writeable = False
    return TdrRoi(base=base, extents=extents, bitmap=bitmap)


def _assessment(item: Dataset) -> TdrAssessment:
    return TdrAssessment(
        flag=_str(item, _ATD_FLAG),
        category=_str(item, _THREAT_CATEGORY),
        description=_str(item, _THREAT_CATEGORY_DESCRIPTION),
        ability=_str(item, _ATD_ABILITY),
        probability=_float(item, _ATD_PROBABILITY),
    )


def _object(pto: Dataset) -> TdrObject:
    rois: list[TdrRoi] = []
    polygon: list[tuple[float, float, float]] = []
    refs: list[str] = []
    mass = density = None
    for rep in _seq(pto, _PTO_REPRESENTATION_SEQ):
        for ref in _seq(rep, _REFERENCED_INSTANCE_SEQ):
            uid = _str(ref, _REFERENCED_SOP_INSTANCE_UID)
            if uid:
                refs.append(uid)
        rois.extend(_roi(item) for item in _seq(rep, _THREAT_ROI_VOXEL_SEQ))
        flat = _floats(rep, _BOUNDING_POLYGON)
        polygon.extend((flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat) - 2, 3))
        mass = mass if mass is not None else _float(rep, _MASS)
        density = density if density is not None else _float(rep, _DENSITY)
    return TdrObject(
        pto_id=_int(pto, _PTO_ID) or 0,
        rois=tuple(rois),
        polygon=tuple(polygon),
        referenced_uids=tuple(refs),
        assessments=tuple(_assessment(a) for a in _seq(pto, _ATD_ASSESSMENT_SEQ)),
        mass=mass,
        density=density,
        processing_time_ms=_float(pto, TAG_PTO_PROCESSING_TIME_MS),
        processing_start=_datetime(pto, TAG_PTO_PROCESSING_START_TIME),
        processing_end=_datetime(pto, TAG_PTO_PROCESSING_END_TIME),
    )


def _interpret(ds: Dataset) -> TdrReport:
    algorithm = _strs(ds, _ALGORITHM)
    return TdrReport(
        sop_instance_uid=_str(ds, _SOP_INSTANCE_UID) or "",
        study_instance_uid=_str(ds, _STUDY_UID),
        series_instance_uid=_str(ds, _SERIES_UID),
        item_id=_str(ds, _PATIENT_ID),
        tdr_type=_str(ds, _TDR_TYPE),
        alarm_decision=_str(ds, _ALARM_DECISION),
        alarm_decision_time=_datetime(ds, _ALARM_DECISION_TIME),
        abort_flag=_str(ds, _ABORT_FLAG),
        abort_reasons=_strs(ds, _ABORT_REASON),
        algorithm=TdrAlgorithm(
            name=algorithm[0] if algorithm else None,
            version=algorithm[1] if len(algorithm) > 1 else None,
            parameters=algorithm[2:],
        ),
        total_processing_time_ms=_float(ds, _TOTAL_PROCESSING_TIME),
        number_of_total_objects=_int(ds, _TOTAL_OBJECTS),
        number_of_alarm_objects=_int(ds, _ALARM_OBJECTS),
        objects=tuple(_object(pto) for pto in _seq(ds, _THREAT_SEQ)),
        operators=_strs(ds, _OPERATORS_NAME),
        referenced_uids=tuple(uid for ref in _seq(ds, _REFERENCED_INSTANCE_SEQ)
                              if (uid := _str(ref, _REFERENCED_SOP_INSTANCE_UID))),
    )


def read_tdr(source: Path | str | bytes) -> TdrReport:
    """Read a TDR from a path or from the bytes ``write_tdr`` returned.

    Raises:
        FrameError: the file is unreadable, truncated, or not a DICOS TDR (message names the file).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    # The Stratovan toolkit writes UIDs with leading-zero components; pydicom warns on each. They are
    # harmless for reading, so the warnings are silenced here only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
            ds = dcmread(fp)
            sop_class = _str(ds, _SOP_CLASS_UID) or _str(ds.file_meta, 0x00020002)
            if sop_class != SOP_CLASS_TDR:
                raise FrameError(f"{name}: not a DICOS TDR (SOP Class UID {sop_class!r}; expected {SOP_CLASS_TDR})")
            # pydicom stops quietly at a cut-off element; a report without these is not one we can trust.
            missing = [label for tag, label in _REQUIRED if _str(ds, tag) is None]
            if missing:
                raise FrameError(f"{name}: DICOS TDR lacks {', '.join(missing)}; the file is truncated or damaged")
            return _interpret(ds)
        except FrameError:
            raise
        except Exception as exc:  # pydicom raises many types on damaged input; all mean "unreadable"
            raise FrameError(f"{name}: unreadable DICOS TDR ({type(exc).__name__}: {exc})") from exc
