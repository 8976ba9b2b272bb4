"""Input bounds: read what an item file *declares* (array header, image header, DICOM attributes, file size)
and refuse it before anything of that size is allocated.

Where it sits: called by every file frame source (spool, VOTI, DICOS) before decoding. Why: a 3.5 MB ``.npz``
of zeros can declare two 30000x30000 uint16 arrays (3.6 GB once decoded); decoding it under the unit's
``MemoryMax=2G`` OOM-killed the service, and since the file stayed in the spool, again on every start. The
declared size is cheap to read and is an upper bound of what the decoder allocates (``numpy.load`` reads
exactly the count its ``.npy`` header declares; OpenCV and pydicom allocate rows x columns x samples).

An item over a limit raises :class:`OversizeError` (a ``ValueError``, so a source's existing "unreadable item"
path delivers it with its problem); :func:`problem_reason` tells the source to mark it UNSCREENED ``oversize``
rather than ``corrupt_frame``. Limits come from ``source.max_lines``, ``source.max_channels`` and
``source.max_item_bytes`` (defaults measured in docs/performance.md, "Memory per item").

Must not: decode pixel data, or trust one declaration alone where two exist (a zip member's declared size and
the ``.npy`` header inside it are both checked).
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
from numpy.lib import format as npy_format

from edge.records import UnscreenedReason

DEFAULT_MAX_LINES: Final = 20_000
"""Belt lines per item (16 m of belt at 0.8 mm pitch; a 2 m bag is 2,500 lines). An item costs about 22 bytes a
pixel while it is screened (docs/performance.md, "Memory per item"): with two workers on such items and the
intake queue full of them, the service stays near 1.3 GB, well inside ``MemoryMax=2G``."""
DEFAULT_MAX_CHANNELS: Final = 4_096
"""Detector channels per energy (the widest scanners we know have about 2,300)."""
DEFAULT_MAX_ITEM_BYTES: Final = 20_000 * 640 * 2 * 2
"""Raw bytes of one item, both energies together (51.2 MB: ``max_lines`` lines of 640 uint16 channels); the
limit that bounds memory whatever the detector's width."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The largest item a source decodes.

    Attributes:
        max_lines: image rows (belt lines) per energy.
        max_channels: image columns (detector channels) per energy.
        max_item_bytes: decoded bytes of the whole item (both energies, or the one degraded image); also the
            largest file a source opens.
    """

    max_lines: int = DEFAULT_MAX_LINES
    max_channels: int = DEFAULT_MAX_CHANNELS
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES

    def __post_init__(self) -> None:
        if min(self.max_lines, self.max_channels, self.max_item_bytes) < 1:
            raise ValueError(f"input limits must be positive, got {self}")

    def check(self, what: str, lines: int, channels: int, item_bytes: int) -> None:
        """Raise :class:`OversizeError` if a declared ``lines x channels`` image or item of ``item_bytes``
        (decoded, whole item) exceeds a limit; ``what`` names the file or member in the message."""
        if lines > self.max_lines:
            raise OversizeError(f"{what}: declares {lines} lines; at most {self.max_lines} (source.max_lines)")
        if channels > self.max_channels:
            raise OversizeError(
                f"{what}: declares {channels} channels; at most {self.max_channels} (source.max_channels)"
            )
        if item_bytes > self.max_item_bytes:
            raise OversizeError(f"{what}: declares {item_bytes} bytes; at most {self.max_item_bytes} "
                                "(source.max_item_bytes)")


class OversizeError(ValueError):
    """An item declares more data than the configured limits allow; it is refused before it is decoded."""


def problem_reason(exc: BaseException) -> UnscreenedReason | None:
    """The UNSCREENED reason a source should carry for an unreadable item (``RawItem.problem_reason``):
    ``oversize`` when :class:`OversizeError` is the error or its cause, else None (``corrupt_frame``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OversizeError):
            return UnscreenedReason.OVERSIZE
        seen = seen.__cause__
    return None


FILE_OVERHEAD_BYTES: Final = 1024 * 1024
"""What a file may hold beyond its item's data: zip directories, ``.npy``/DICOM headers, VOTI header lines."""


def check_file_size(path: Path, limits: InputLimits) -> int:
    """Size of ``path`` in bytes; raises :class:`OversizeError` when it exceeds ``max_item_bytes`` (plus
    ``FILE_OVERHEAD_BYTES`` of headers)."""
    size = path.stat().st_size
    if size > limits.max_item_bytes + FILE_OVERHEAD_BYTES:
        raise OversizeError(f"{path.name}: file of {size} bytes; at most {limits.max_item_bytes} "
                            f"(source.max_item_bytes) + {FILE_OVERHEAD_BYTES} of headers")
    return size


def npy_header(fp: BinaryIO, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype an ``.npy`` stream declares (reads the header only; ``fp`` is left after it).

    Raises:
        ValueError: not an ``.npy`` header, an unsupported version, or a Fortran-ordered/object array.
    """
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"npy format version {version}")
    except ValueError as exc:
        raise ValueError(f"{what}: not a readable .npy header ({exc})") from exc
    if dtype.hasobject:
        raise ValueError(f"{what}: object arrays are not accepted")
    return tuple(int(n) for n in shape), dtype


def check_npz(path: Path, members: tuple[str, ...], limits: InputLimits) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Check the declared size of each named array of an ``.npz`` before ``numpy.load`` allocates it.

    Both the zip member's declared uncompressed size and the ``.npy`` header inside it are checked; the arrays
    of one item count together against ``max_item_bytes``. Returns each member's declared (shape, dtype).

    Raises:
        OversizeError: a declared size exceeds a limit.
        ValueError: not a zip archive, a member is missing, or its header is unreadable.
    """
    check_file_size(path, limits)
    declared: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = member_total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in members:
                entry = f"{member}.npy"
                if entry not in names:
                    found = sorted(n.removesuffix(".npy") for n in names)
                    raise ValueError(f"archive holds {found}, expected {list(members)}")
                info = archive.getinfo(entry)
                what = f"{path.name}:{entry}"
                with archive.open(info) as fp:  # inflates only the header's few hundred bytes
                    shape, dtype = npy_header(fp, what)  # type: ignore[arg-type]  # a zip member is a stream
                    header_bytes = fp.tell()
                lines = shape[0] if shape else 1
                channels = shape[1] if len(shape) > 1 else 1
                count = int(np.prod(shape, dtype=np.float64))  # float: a crafted header must not overflow
                limits.check(f"{what} {shape}", lines, channels, total + count * dtype.itemsize)
                # The member's own declaration (data after the header), checked as well: both must fit.
                member_total += info.file_size - header_bytes
                limits.check(f"{what} (zip member)", 0, 0, member_total)
                total += count * dtype.itemsize
                declared[member] = (shape, dtype)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"unreadable archive ({exc})") from exc
    return declared


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_SAMPLES: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel by PNG colour type (grey, RGB, palette, grey+alpha, RGBA)."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image file declares: ``height`` rows, ``width`` columns, ``samples`` per pixel of ``bits`` each."""

    height: int
    width: int
    bits: int
    samples: int

    @property
    def decoded_bytes(self) -> int:
        return self.height * self.width * self.samples * max(1, self.bits // 8)


def image_header(path: Path) -> ImageHeader:
    """Read a PNG's IHDR chunk or a TIFF's first IFD (no pixel data is read).

    Raises:
        ValueError: neither a PNG nor a TIFF, or a damaged header.
        OSError: the file cannot be read.
    """
    with path.open("rb") as fp:
        head = fp.read(33)
        if head.startswith(_PNG_SIGNATURE):
            if len(head) < 33 or head[12:16] != b"IHDR":
                raise ValueError(f"{path.name}: PNG without an IHDR chunk")
            width, height, bits, colour = struct.unpack(">IIBB", head[16:26])
            if colour not in _PNG_SAMPLES:
                raise ValueError(f"{path.name}: PNG colour type {colour} is not valid")
            return ImageHeader(height, width, bits, _PNG_SAMPLES[colour])
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_header(fp, path.name, "<" if head[:2] == b"II" else ">")
    raise ValueError(f"{path.name}: not a PNG or TIFF image")


_TIFF_TYPES: Final = {3: "H", 4: "I"}  # SHORT, LONG: the types width/height/bits/samples come in


def _tiff_header(fp: BinaryIO, name: str, order: str) -> ImageHeader:
    fp.seek(4)
    (ifd,) = struct.unpack(order + "I", fp.read(4))
    fp.seek(ifd)
    raw = fp.read(2)
    if len(raw) < 2:
        raise ValueError(f"{name}: TIFF IFD offset {ifd} is past the end of the file")
    (count,) = struct.unpack(order + "H", raw)
    tags: dict[int, int] = {}
    for _ in range(min(count, 512)):
        entry = fp.read(12)
        if len(entry) < 12:
            raise ValueError(f"{name}: TIFF IFD is truncated")
        tag, kind, _n = struct.unpack(order + "HHI", entry[:8])
        if kind in _TIFF_TYPES:  # first value, stored in the entry itself
            (tags[tag],) = struct.unpack(order + _TIFF_TYPES[kind], entry[8:8 + struct.calcsize(_TIFF_TYPES[kind])])
    if 256 not in tags or 257 not in tags:
        raise ValueError(f"{name}: TIFF without ImageWidth/ImageLength")
    return ImageHeader(height=tags[257], width=tags[256], bits=tags.get(258, 1), samples=tags.get(277, 1))


def check_images(paths: tuple[Path, ...], limits: InputLimits) -> tuple[ImageHeader, ...]:
    """Check the declared sizes of the images of one item (they count together against ``max_item_bytes``)."""
    headers = tuple(image_header(p) for p in paths)
    total = 0
    for path, header in zip(paths, headers, strict=True):
        total += header.decoded_bytes
        limits.check(path.name, header.height, header.width, total)
    return headers
