"""Without the optional ``dicos-jpeg`` extra (pylibjpeg-libjpeg is GPLv3, so the base install lacks it), a
JPEG-compressed DX image is a FrameError that names the extra; native DICOS still reads. Each case runs in a fresh
interpreter in which pylibjpeg and libjpeg cannot be imported, as on a box installed without the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from edge.dicos.dx_source import read_dx, write_dx_pair

REPO_ROOT = Path(__file__).resolve().parents[2]

_WITHOUT_EXTRA = """
import sys

class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pylibjpeg", "libjpeg"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _Absent())
from edge.dicos.dx_source import read_dx
from edge.errors import FrameError

try:
    image = read_dx(sys.argv[1])
except FrameError as exc:
    print("FrameError:", exc)
else:
    print("decoded", image.pixels.shape)
"""


def _read_without_extra(path: Path) -> str:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_EXTRA, str(path)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, check=True)
    return done.stdout.strip()


def _pair(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    high = rng.integers(1000, 60000, (16, 24), dtype=np.uint16)
    low = rng.integers(1000, 60000, (16, 24), dtype=np.uint16)
    return write_dx_pair(tmp_path, "bag", high, low).high


def test_jpeg_dx_without_the_extra_names_the_extra(tmp_path: Path) -> None:
    native = _pair(tmp_path)
    ds = pydicom.dcmread(native)
    # A JPEG Lossless file as a scanner would send it: the transfer syntax says so and the data is encapsulated.
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(64) + b"\xff\xd9"])
    jpeg = tmp_path / "bag_jpeg.dcs"
    ds.save_as(jpeg, enforce_file_format=True)
    out = _read_without_extra(jpeg)
    assert out.startswith(f"FrameError: {jpeg}: pixel data is JPEG Lossless"), out
    assert "pip install 'xray-edge[dicos-jpeg]'" in out


def test_native_dx_reads_without_the_extra(tmp_path: Path) -> None:
    native = _pair(tmp_path)
    assert _read_without_extra(native) == "decoded (16, 24)"
    assert read_dx(native).pixels.shape == (16, 24)  # and here, with the extra
