"""Input bombs for the fault tests: small files that declare (and decode to) huge arrays.

``npz_bomb`` writes what issue 29 point 4 found: an ``.npz`` of two 30000x30000 uint16 arrays of zeros, 3.6 GB
decoded, about 3.5 MB on disk. Deflating 3.6 GB takes ~25 s, so the deflate stream of one 16 MiB chunk of zeros
is made once, ended with a full flush (which resets the compressor's window, so the next chunk compresses to the
same bytes) and repeated; the CRC is still computed over every byte. The result is a valid zip that ``zipfile``
and ``numpy.load`` decode completely.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from numpy.lib import format as npy_format

_CHUNK = 16 * 1024 * 1024


def npz_bomb(path: Path, lines: int = 30_000, channels: int = 30_000) -> Path:
    """Write ``path``: ``high`` and ``low`` ``(lines, channels)`` uint16 zeros, deflated at the maximum ratio."""
    zeros = bytes(_CHUNK)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("high", "low"):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                npy_format.write_array_header_1_0(
                    member, {"descr": "<u2", "fortran_order": False, "shape": (lines, channels)})
                left = lines * channels * 2
                full, rest = divmod(left, _CHUNK)
                # zipfile's writer keeps size, CRC and compressor on the member object. Flush what the header
                # left in its compressor with a full flush (its window is then empty, as after each precompressed
                # chunk), then feed the precompressed chunks directly.
                tail = member._compressor.flush(zlib.Z_FULL_FLUSH)  # type: ignore[attr-defined]
                member._compress_size += len(tail)  # type: ignore[attr-defined]
                member._fileobj.write(tail)  # type: ignore[attr-defined]
                for _ in range(full):
                    member._file_size += _CHUNK  # type: ignore[attr-defined]
                    member._crc = zlib.crc32(zeros, member._crc)  # type: ignore[attr-defined]
                    member._compress_size += len(block)  # type: ignore[attr-defined]
                    member._fileobj.write(block)  # type: ignore[attr-defined]
                if rest:
                    member.write(bytes(rest))
    return path
