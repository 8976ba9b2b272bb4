"""Encoding and atomic file writes for DICOS output: a reader never sees half a file.

Where it sits: used by ``edge.dicos.tdr`` and ``edge.dicos.dx_source`` writers. Must not create directories
it was not asked to write into.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite


def encode(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part 10 file (preamble, file meta, the meta's transfer syntax)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``.

    The rename is atomic on POSIX within one filesystem, so an audit store or a spool watcher sees either
    the old file or the whole new one. The directory must exist (``FileNotFoundError`` otherwise).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
