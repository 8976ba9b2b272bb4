"""DICOS constants shared by the TDR writer, the TDR reader and the DX source.

Where it sits: below ``edge.dicos.tdr``, ``edge.dicos.reader`` and ``edge.dicos.dx_source``; imports only pydicom.
What it must not do: touch pydicom's data dictionary on import. ``register_dicos_tags`` does that, and only
when a caller asks (the CLI and tests do; the writer and reader address every element by number and work
without it).

Tag numbers and VRs follow DICOS (NEMA IIC 1 v03) as the Stratovan toolkit writes them (see
``docs/dicos.md``). Most DICOS attributes are in pydicom's dictionary; the ones below are not.
"""

from __future__ import annotations

from typing import Final

SOP_CLASS_TDR: Final = "1.2.840.10008.5.1.4.1.1.501.3"
"""DICOS Threat Detection Report Storage."""
SOP_CLASS_CT: Final = "1.2.840.10008.5.1.4.1.1.501.1"
"""DICOS CT Image Storage."""
SOP_CLASS_DX_PRESENTATION: Final = "1.2.840.10008.5.1.4.1.1.501.2.1"
"""DICOS Digital X-Ray Image Storage - For Presentation."""
SOP_CLASS_DX_PROCESSING: Final = "1.2.840.10008.5.1.4.1.1.501.2.2"
"""DICOS Digital X-Ray Image Storage - For Processing (raw intensities: what the pipeline reads)."""
DICOM_DX_SOP_CLASSES: Final = ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1")
"""Plain DICOM DX (presentation, processing): accepted by the DX reader, never written."""
DX_SOP_CLASSES: Final = (SOP_CLASS_DX_PRESENTATION, SOP_CLASS_DX_PROCESSING, *DICOM_DX_SOP_CLASSES)

DICOS_VERSION: Final = "V03"

# Elements the Stratovan toolkit writes that pydicom 3.0.2 does not name. The meanings of the 4010,108x
# elements are inferred from where the toolkit puts them (inside each PTO item, next to the toolkit's
# "PTO processing time" API: two date-times and a duration); (4300,0902) sits in every image IOD and its
# meaning is unknown. We read them, we never write them.
TAG_PTO_PROCESSING_START_TIME: Final = 0x40101080
TAG_PTO_PROCESSING_END_TIME: Final = 0x40101081
TAG_PTO_PROCESSING_TIME_MS: Final = 0x40101082
TAG_DICOS_4300_0902: Final = 0x43000902

_EXTRA_ENTRIES: Final[dict[int, tuple[str, str, str, str, str]]] = {
    TAG_PTO_PROCESSING_START_TIME: ("DT", "1", "PTO Processing Start Time", "", "PTOProcessingStartTime"),
    TAG_PTO_PROCESSING_END_TIME: ("DT", "1", "PTO Processing End Time", "", "PTOProcessingEndTime"),
    TAG_PTO_PROCESSING_TIME_MS: ("FL", "1", "PTO Processing Time", "", "PTOProcessingTime"),
    TAG_DICOS_4300_0902: ("FL", "1", "DICOS Unknown 4300,0902", "", "DICOSUnknown43000902"),
}


def register_dicos_tags() -> tuple[int, ...]:
    """Teach pydicom the DICOS elements it lacks, so that they print with a name and read as their VR.

    Idempotent. Changes pydicom's process-wide dictionary, which is why nothing calls it on import.

    Returns:
        The tags that were added by this call (empty when already registered).
    """
    from pydicom.datadict import DicomDictionary, add_dict_entries

    missing = {tag: entry for tag, entry in _EXTRA_ENTRIES.items() if tag not in DicomDictionary}
    if missing:
        add_dict_entries(missing)
    return tuple(sorted(missing))


def abort_reason_codes() -> dict[str, str]:
    """``UnscreenedReason`` value → Abort Reason (4010,1021) code, each a valid CS (≤ 16 chars, A-Z 0-9 _).

    Abort Reason takes defined terms, which a site may extend; these are ours. The mapping is a function,
    not a module constant, so that this module stays free of the ``edge.records`` import at load time.
    """
    from edge.records import UnscreenedReason as R

    codes = {
        R.CORRUPT_FRAME: "CORRUPT_FRAME",
        R.MODEL_ERROR: "MODEL_ERROR",
        R.MISSING_CALIBRATION: "NO_CALIBRATION",
        R.LINK_DOWN: "LINK_DOWN",
        R.DEADLINE_MISSED: "DEADLINE_MISSED",
        R.OVERLOAD: "OVERLOAD",
        R.SOURCE_STALLED: "SOURCE_STALLED",
        R.SHUTDOWN: "SHUTDOWN",
        R.INTERNAL_ERROR: "INTERNAL_ERROR",
        R.RESTART: "RESTART",
        R.OVERSIZE: "OVERSIZE",
        R.NO_XRAY: "NO_XRAY",
        R.SATURATED: "SATURATED",
        R.LINES_MISSING: "LINES_MISSING",
        R.DEAD_COLUMNS: "DEAD_COLUMNS",
    }
    return {str(reason.value): code for reason, code in codes.items()}
