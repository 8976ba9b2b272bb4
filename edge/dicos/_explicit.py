"""A small explicit VR little endian encoder for element lists, byte for byte what pydicom's ``dcmwrite`` writes.

Why it exists: the audit store writes a MACHINE TDR for every decision, and pydicom spends ~2-4 ms CPU per report
on it (a ``DataElement`` per value with conversion and validation, a buffer per element, a deep copy of the file
meta), far more than the ~45 short values are worth. ``edge.dicos.tdr`` describes a report once, as a list of
``(keyword, value)`` elements; ``build_tdr`` turns that list into a pydicom ``Dataset`` and this module turns the
same list straight into bytes. ``tests/dicos/test_tdr_fast.py`` proves the two give identical bytes.

What it does as pydicom 3 does (``pydicom.filewriter``): elements in ascending tag order; strings joined with
``\\`` and padded to even length (UI with NUL, others with space), text VRs (LO, SH, LT, ST, UT, UC) in the
dataset's character set and the others in the default repertoire; FL and US little endian; OB padded with NUL;
sequences and their items with explicit lengths; empty values as zero-length elements; file meta with its group
length and version ``00 01``.

What it does not do: anything pydicom would do differently from the plain rule (a value too long for a 16-bit
length, which pydicom rewrites as UN with a warning; a string over its VR's maximum length, which pydicom warns
about; a text it cannot encode, which pydicom replaces with a warning; a number that does not fit). For those it
raises :class:`Unencodable`, and the caller hands the report to pydicom instead: the rare odd report then costs
what it always did, with pydicom's own warnings, and none of pydicom's exceptional paths is copied here.
It does not validate values either: its caller passes values that are valid by construction (see
``edge.dicos.tdr.encode_machine_tdr``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Final, TypeAlias

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, MAX_VALUE_LEN

Value: TypeAlias = "str | int | float | bytes | Sequence[str] | Sequence[float] | Sequence[Elements]"
"""An element's value: one string, number or byte string, several strings or numbers, or sequence items."""
Element: TypeAlias = "tuple[str, Value]"
"""One data element: its pydicom keyword (the tag and VR come from pydicom's dictionary) and its value."""
Elements: TypeAlias = "Sequence[Element]"
"""A dataset (or a sequence item): its elements in any order."""

_ASCII_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
"""Strings in the default character repertoire (pydicom's ``write_string``: padding counted in characters)."""
_TEXT_VRS: Final = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
"""Strings in the dataset's Specific Character Set (pydicom's ``write_text``: padding counted in bytes)."""
_DEFAULT_ENCODING: Final = "latin_1"
"""pydicom's ``default_encoding`` (``iso8859``) under Python's canonical name."""
_ITEM: Final = b"\xfe\xff\x00\xe0"
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_FILE_META_VERSION: Final = b"\x00\x01"


class Unencodable(ValueError):
    """A value this encoder does not write the way pydicom would: let pydicom encode the dataset."""


@dataclass(frozen=True, slots=True)
class _Form:
    """How an element is written: its tag, VR and the bytes before its length."""

    tag: int
    vr: str
    head: bytes
    long_length: bool


_FORMS: dict[str, _Form] = {}


def _form(keyword: str) -> _Form:
    """The element's tag and VR from pydicom's dictionary (remembered: keywords are the report's fixed few)."""
    form = _FORMS.get(keyword)
    if form is None:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(f"{keyword!r} is not a DICOM keyword pydicom knows")
        vr = dictionary_VR(tag)
        long_length = vr in EXPLICIT_VR_LENGTH_32
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii") + (b"\0\0" if long_length else b"")
        form = _FORMS[keyword] = _Form(tag, vr, head, long_length)
    return form


def vr_of(keyword: str) -> str:
    """The VR pydicom's dictionary gives the element ``keyword``."""
    return _form(keyword).vr


def _strings(form: _Form, value: Value) -> list[str]:
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        values = [v for v in value if isinstance(v, str)]
    else:
        raise TypeError(f"{form.vr} element {form.tag:08X} takes strings, not {value!r}")
    limit = MAX_VALUE_LEN.get(form.vr, 0)
    if limit and max(map(len, values), default=0) > limit:
        raise Unencodable(f"a value of element {form.tag:08X} is longer than {limit} characters ({form.vr})")
    return values


def _value_bytes(form: _Form, value: Value, encoding: str) -> bytes:
    vr = form.vr
    if vr in _ASCII_VRS:
        text = "\\".join(_strings(form, value))
        if len(text) % 2:
            text += "\0" if vr == "UI" else " "
        try:
            return text.encode(_DEFAULT_ENCODING)
        except UnicodeEncodeError as exc:
            raise Unencodable(f"element {form.tag:08X} ({vr}) is not in the default repertoire") from exc
    if vr in _TEXT_VRS:
        try:
            data = b"\\".join(v.encode(encoding) for v in _strings(form, value))
        except UnicodeEncodeError as exc:
            raise Unencodable(f"element {form.tag:08X} ({vr}) cannot be encoded as {encoding}") from exc
        return data + b" " if len(data) % 2 else data
    if vr == "SQ":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"sequence element {form.tag:08X} takes items, not {value!r}")
        out: list[bytes] = []
        for item in value:
            if not isinstance(item, Sequence) or isinstance(item, (str, bytes)):
                raise TypeError(f"an item of sequence {form.tag:08X} is not an element list: {item!r}")
            body = encode_elements(item, encoding)  # type: ignore[arg-type]
            out += (_ITEM, struct.pack("<I", len(body)), body)
        return b"".join(out)
    if vr in ("FL", "US"):
        numbers = value if isinstance(value, (list, tuple)) else [value]
        try:  # what struct takes is what pydicom's write_numbers writes; the rest pydicom writes its own way
            return struct.pack(f"<{len(numbers)}{'f' if vr == 'FL' else 'H'}", *numbers)
        except (struct.error, OverflowError) as exc:
            raise Unencodable(f"element {form.tag:08X} is not {vr}: {exc}") from exc
    if vr == "IS":
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"IS element {form.tag:08X} takes an int here, not {value!r}")
        text = str(value)
        if len(text) > MAX_VALUE_LEN["IS"]:
            raise Unencodable(f"element {form.tag:08X} is longer than an IS may be")
        return (text + " " if len(text) % 2 else text).encode("ascii")
    if vr == "OB":
        if not isinstance(value, bytes):
            raise TypeError(f"OB element {form.tag:08X} takes bytes, not {value!r}")
        return value + b"\0" if len(value) % 2 else value
    raise TypeError(f"VR {vr} (element {form.tag:08X}) is not written by this encoder")


def _element(form: _Form, value: Value, encoding: str) -> bytes:
    body = _value_bytes(form, value, encoding)
    if form.long_length:
        return form.head + struct.pack("<I", len(body)) + body
    if len(body) > 0xFFFF:  # pydicom writes it as UN, with a warning
        raise Unencodable(f"element {form.tag:08X} is {len(body)} bytes, more than a {form.vr} length can say")
    return form.head + struct.pack("<H", len(body)) + body


def encode_elements(elements: Elements, encoding: str) -> bytes:
    """One dataset's elements (no group lengths), explicit VR little endian, ascending tags.

    ``encoding`` is the Python codec of the text of the enclosing dataset (:func:`python_encoding`), used unless
    these elements have a Specific Character Set of their own, as pydicom does.

    Raises:
        Unencodable: pydicom would write some value otherwise than the plain rule (see the module docstring).
        TypeError: a value of a type this encoder does not take.
        KeyError: an unknown keyword.
    """
    ordered = sorted(((_form(keyword), value) for keyword, value in elements), key=_by_tag)
    for (before, _), (after, _) in pairwise(ordered):
        if before.tag == after.tag:
            raise ValueError(f"element {before.tag:08X} appears twice")
    for form, charset in ordered:  # Specific Character Set comes first but for a few group 0004 elements
        if form.tag >= _SPECIFIC_CHARACTER_SET:
            if form.tag == _SPECIFIC_CHARACTER_SET:
                if not isinstance(charset, str):
                    raise Unencodable(f"Specific Character Set {charset!r} has more than one value")
                encoding = python_encoding(charset)
            break
    return b"".join([_element(form, value, encoding) for form, value in ordered])


def _by_tag(form_value: tuple[_Form, Value]) -> int:
    return form_value[0].tag


@lru_cache(maxsize=8)
def python_encoding(specific_character_set: str) -> str:
    """The one Python codec of a single-valued Specific Character Set (``ISO_IR 192`` -> ``UTF8``).

    Raises:
        Unencodable: a character set with code extensions (pydicom switches between its encodings per string).
    """
    encodings = convert_encodings(specific_character_set)
    if len(encodings) != 1:
        raise Unencodable(f"character set {specific_character_set!r} has code extensions")
    return encodings[0]


def encode_part10(meta: Elements, elements: Elements) -> bytes:
    """A DICOM Part 10 file as ``dcmwrite(..., enforce_file_format=True)`` writes it: 128-byte preamble, ``DICM``,
    File Meta Information (group length, version ``00 01``, then ``meta``), then the dataset in explicit VR little
    endian, its text in the dataset's Specific Character Set (the default repertoire without one).

    ``meta`` must hold every other element the caller's file meta holds (pydicom adds only those two, given a
    transfer syntax, the SOP class and instance UIDs and the implementation class UID and version name), with the
    explicit VR little endian transfer syntax.
    """
    meta_body = encode_elements([("FileMetaInformationVersion", _FILE_META_VERSION), *meta], _DEFAULT_ENCODING)
    group_length = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(meta_body))
    dataset = encode_elements(elements, _DEFAULT_ENCODING)
    return b"".join((b"\0" * 128, b"DICM", group_length, meta_body, dataset))
