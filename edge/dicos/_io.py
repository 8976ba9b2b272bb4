"""Encoding and atomic file writes for DICOS output (a reader never sees half a file), and the check that a
compressed DX image can be decoded on this installation.

Where it sits: used by ``edge.dicos.tdr`` and ``edge.dicos.dx_source`` writers and by the DX reader. Must not
create directories it was not asked to write into.
"""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from edge.files import atomic_write_bytes


def encode(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part 10 file (preamble, file meta, the meta's transfer syntax)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temporary file, fsync, rename, directory fsync).

    The directory must exist (``FileNotFoundError`` otherwise): DICOS output never creates folders it was not
    asked to write into.
    """
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    atomic_write_bytes(path, data)


DICOS_JPEG_EXTRA = "pip install 'xray-edge[dicos-jpeg]'"
"""What installs the JPEG decoder for compressed DICOS images (the ``dicos-jpeg`` extra of pyproject.toml)."""


def missing_jpeg_decoder(ds: Dataset) -> str | None:
    """Why ``ds``'s pixel data cannot be decoded here because the optional JPEG decoder is not installed, or None.

    The base install reads native (uncompressed) DICOS only: the decoder pydicom uses for JPEG Baseline, Extended,
    Lossless and JPEG-LS (pylibjpeg with pylibjpeg-libjpeg) is GPLv3 and opt-in. Without this check such a file
    fails deep in pydicom with a list of plugins; with it the error names the extra. None as well when the data is
    native, a decoder is available, or the syntax needs something else (JPEG 2000: pydicom's own message).
    """
    uid = ds.get("file_meta", Dataset()).get("TransferSyntaxUID")
    if uid is None or not UID(str(uid)).is_compressed:
        return None
    from pydicom.pixels import get_decoder
    from pydicom.pixels.decoders.pylibjpeg import DECODER_DEPENDENCIES

    uid = UID(str(uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return None
    if decoder.is_available or not any("libjpeg" in dep for dep in DECODER_DEPENDENCIES.get(uid, ())):
        return None
    return (f"pixel data is {uid.name}, and the JPEG decoder for compressed DICOS (pylibjpeg with "
            f"pylibjpeg-libjpeg, GPLv3, the 'dicos-jpeg' extra) is not installed: {DICOS_JPEG_EXTRA}")
