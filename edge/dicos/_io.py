"""Encoding and atomic file writes for DICOS output: a reader never sees half a file.

Where it sits: used by ``edge.dicos.tdr`` and ``edge.dicos.dx_source`` writers. Must not create directories
it was not asked to write into.
"""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

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
