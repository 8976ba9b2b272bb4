"""The element-list encoder behind ``encode_machine_tdr`` against pydicom's ``dcmwrite``, on every VR it writes,
beyond the values a TDR happens to hold: odd and even lengths, empty values, several values, character sets, a
sequence item with a character set of its own; and what it leaves to pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from edge.dicos._explicit import Elements, Unencodable, encode_part10
from edge.dicos._io import encode
from edge.dicos.tdr import _dataset

META: Elements = [
    ("MediaStorageSOPClassUID", "1.2.840.10008.5.1.4.1.1.501.3"),
    ("MediaStorageSOPInstanceUID", "1.2.3.44"),
    ("TransferSyntaxUID", ExplicitVRLittleEndian),
    ("ImplementationClassUID", PYDICOM_IMPLEMENTATION_UID),
    ("ImplementationVersionName", "TEST_1"),
]


def _pydicom(elements: Elements) -> bytes:
    """What pydicom writes for the elements, turned into a dataset as ``build_tdr`` turns them."""
    ds = _dataset(elements, Dataset())
    ds.file_meta = _dataset(META, FileMetaDataset())
    return encode(ds)


def _every_vr(text: str, suffix: str) -> list[tuple[str, Any]]:
    return [
        ("StationAETitle", "AE_" + suffix),  # AE
        ("PatientAge", "042Y"),  # AS
        ("FileSetID", "CS" + suffix.upper()),  # CS
        ("ContentDate", "20261118"), ("ContentTime", "123456.7" + suffix[:1].replace("x", "1")),  # DA, TM
        ("AcquisitionDateTime", "20261118123456.25+0100"),  # DT
        ("ReferencedSOPInstanceUID", "1.2.3" + ".4" * len(suffix)),  # UI, odd and even
        ("SeriesDescription", ["one " + text, "two", text + suffix]),  # LO, several values
        ("AccessionNumber", text[:8]),  # SH
        ("PatientComments", text * 3 + " \\ with a backslash"),  # LT
        ("InstitutionAddress", text + suffix),  # ST
        ("LongCodeValue", text * 5),  # UC
        ("TextValue", text * 40 + suffix),  # UT
        ("RecommendedDisplayFrameRateInFloat", 29.97),  # FL, one value
        ("ThreatROIBase", [1.5, -2.0, float("nan"), 1e30]),  # FL, several
        ("Rows", 512), ("NumberOfFrames", 1 + 10 * len(suffix)),  # US, IS
        ("ThreatROIBitmap", b"\x01\x02\x03"[:len(suffix) % 4]),  # OB, empty to odd
        ("StudyComments", ""), ("OtherPatientIDsSequence", []),  # empty text, empty sequence
    ]


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize("suffix", ["", "x", "xy"])
def test_every_vr_is_written_as_pydicom_writes_it(charset: str | None, suffix: str) -> None:
    text = "Zürich Gepäck" if charset else "plain ascii"
    if charset == "ISO_IR 192":
        text += " 東京 — "
    item: list[tuple[str, Any]] = [("ReferencedSOPClassUID", "1.2.840.10008.5.1.4.1.1.501.2.2"),
                                   ("ReferencedSOPInstanceUID", "1.2.3.5"), ("ReferencedFrameNumber", 3)]
    items = [item, [("SpecificCharacterSet", "ISO_IR 100"), ("ReferencedSOPInstanceUID", "1.2.3.6")],
             [("ReferencedSOPInstanceUID", "1.2.3.7"),
              ("ReferencedImageSequence", [[("ReferencedSOPInstanceUID", "1.2.3.8")]])]]
    elements: list[tuple[str, Any]] = [*_every_vr(text, suffix), ("ReferencedImageSequence", items)]
    if charset is not None:
        elements.append(("SpecificCharacterSet", charset))
    assert encode_part10(META, elements) == _pydicom(elements)


def test_an_item_with_its_own_character_set_encodes_its_text_with_it() -> None:
    elements: Sequence[tuple[str, Any]] = [
        ("SpecificCharacterSet", "ISO_IR 192"),
        ("ReferencedImageSequence", [[("SpecificCharacterSet", "ISO_IR 100"), ("PatientComments", "Gepäck")]]),
    ]
    data = encode_part10(META, elements)
    assert data == _pydicom(elements)
    assert "Gepäck".encode("latin_1") in data and "Gepäck".encode() not in data


@pytest.mark.parametrize("elements", [
    [("SeriesDescription", "x" * 65)],  # over LO's 64 characters: pydicom warns
    [("ThreatROIBase", [1.0] * 20_000)],  # over a 16-bit length: pydicom writes UN
    [("ReferencedSOPInstanceUID", "1.2.東")],  # outside the default repertoire
    [("Rows", 70_000)],  # does not fit US
    [("SpecificCharacterSet", "ISO_IR 192"), ("PatientComments", "a \udc80 b")],  # cannot be encoded
    [("SpecificCharacterSet", ["ISO 2022 IR 6", "ISO 2022 IR 87"])],  # code extensions
], ids=["long LO", "long FL", "UI repertoire", "US range", "surrogate", "code extensions"])
def test_what_pydicom_writes_its_own_way_is_left_to_it(elements: Elements) -> None:
    with pytest.raises(Unencodable):
        encode_part10(META, elements)


def test_a_keyword_twice_or_unknown_is_a_bug() -> None:
    with pytest.raises(ValueError, match="twice"):
        encode_part10(META, [("Rows", 1), ("Rows", 2)])
    with pytest.raises(KeyError):
        encode_part10(META, [("NoSuchKeyword", 1)])
