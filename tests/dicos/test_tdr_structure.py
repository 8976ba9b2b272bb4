"""Our TDRs have the module and sequence structure of the real Stratovan reports (../shared/realdata/dicos).

An element is compared by its *path*: the chain of sequence tags from the top of the dataset down to it (the
Threat ROI Base lives at Threat Sequence / PTO Representation Sequence / Threat ROI Voxel Sequence / Base). A
workstation finds elements by these paths, so ours must sit where the toolkit puts them, and every element that
all the real reports with objects carry must be in ours, except the few listed below with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from edge.dicos import OperatorReview, build_operator_tdr, build_tdr, encode
from edge.records import UnscreenedReason, Verdict
from tests.dicos.dicos_helpers import T0, decision
from tests.dicos.test_dicos_tdr import TDR_TAGS

Path_ = tuple[tuple[int, int], ...]

REAL_WITH_OBJECTS = ("CTwithTDR_TDR.dcs", "MultiplePTOsTDR.dcs", "SimpleBaggageTDR.dcs")

NOT_WRITTEN: dict[Path_, str] = {
    ((0x0018, 0x1200),): "Date of Last Calibration: the calibration's date is not passed to the report yet",
    ((0x0018, 0x1201),): "Time of Last Calibration: as above",
    ((0x4010, 0x1075),): "Image Scale Representation: the toolkit writes FD where the dictionary says DS",
    ((0x4010, 0x1011), (0x4010, 0x1037), (0x4010, 0x1017)): "Mass: not measured by a 2-D X-ray box",
    ((0x4010, 0x1011), (0x4010, 0x1037), (0x4010, 0x1018)): "Density: not measured by a 2-D X-ray box",
    ((0x4010, 0x1011), (0x4010, 0x1080)): "toolkit-private PTO processing start (not in the DICOS dictionary)",
    ((0x4010, 0x1011), (0x4010, 0x1081)): "toolkit-private PTO processing end",
    ((0x4010, 0x1011), (0x4010, 0x1082)): "toolkit-private PTO processing time",
}
OURS_ONLY: set[Path_] = {
    ((0x0008, 0x0005),),  # Specific Character Set: we write UTF-8 text (labels, notes)
    ((0x4010, 0x1021),),  # Abort Reason: no real sample aborted
}


def _paths(ds: Dataset, prefix: Path_ = ()) -> set[Path_]:
    out: set[Path_] = set()
    for element in ds:
        here = (*prefix, (element.tag.group, element.tag.element))
        out.add(here)
        if element.VR == "SQ":
            for item in element.value:
                out |= _paths(item, here)
    return out


def _ours() -> dict[str, Dataset]:
    alarm = build_tdr(decision(Verdict.ALARM), dx_uids=("1.2.3.4", "1.2.3.5"), site_id="hub-7")
    review = OperatorReview("0b4e7f52-3c1d-4a8e-9f00-1a2b3c4d5e6f", "cleared", "jdoe", "operator", T0 + 5,
                            "parcel-000123", "hub-7/line-2", T0)
    return {
        "alarm": alarm,
        "clear": build_tdr(decision(Verdict.CLEAR), site_id="hub-7"),
        "unscreened": build_tdr(decision(Verdict.UNSCREENED, objects=(), reason=UnscreenedReason.NO_XRAY)),
        "operator": build_operator_tdr(review, alarm),
    }


@pytest.fixture(scope="module")
def real_paths(real_dicos: Path) -> dict[str, set[Path_]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the toolkit's leading-zero UIDs
        return {name: _paths(pydicom.dcmread(real_dicos / name)) for name in REAL_WITH_OBJECTS}


def test_every_element_sits_where_the_real_reports_put_it(real_paths: dict[str, set[Path_]]) -> None:
    anywhere = set.union(*real_paths.values())
    for name, ds in _ours().items():
        extra = _paths(ds) - anywhere - OURS_ONLY
        if name == "operator":
            extra -= {((0x0008, 0x1070),), ((0x0008, 0x114A),), ((0x0008, 0x114A), (0x0008, 0x1150)),
                      ((0x0008, 0x114A), (0x0008, 0x1155))}  # who decided, and the machine report reviewed
        assert extra == set(), f"{name}: {sorted(extra)}"


def test_what_every_real_report_carries_is_in_ours(real_paths: dict[str, set[Path_]]) -> None:
    common = set.intersection(*real_paths.values())
    ours = _paths(_ours()["alarm"])
    missing = {p: NOT_WRITTEN.get(p) for p in common - ours}
    assert {p for p, why in missing.items() if why is None} == set(), missing
    assert set(NOT_WRITTEN) <= common  # the list names only what the real reports do carry


def test_every_report_we_write_uses_the_dicos_vrs() -> None:
    for name, ds in _ours().items():
        data = encode(ds)
        back = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        written = {(el.tag.group, el.tag.element): el.VR for el in back.iterall()}
        assert {t: vr for t, vr in written.items() if TDR_TAGS.get(t) != vr} == {}, name
