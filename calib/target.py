"""Write the cross-modal calibration target's files: print layer (PNG + PDF at true scale), steel cut file (SVG).

Where it sits: ``edge calibrate target`` (commissioning, step one). The geometry comes from
``sim.board.TargetGeometry`` (the same object the virtual scanner renders) and is written to ``target.yaml``
beside the drawings, so later calibrations record exactly which board they used. This module writes only into
the directory it is given and never overwrites a file half-way (each file is written to a temporary name and
renamed).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import yaml

from calib.detect import BoardSpec
from edge.files import atomic_write_bytes
from sim.target import TargetGeometry

MM_PER_INCH = 25.4


def board_spec(geometry: TargetGeometry) -> BoardSpec:
    return BoardSpec(geometry.squares_x, geometry.squares_y, geometry.square_mm, geometry.marker_mm,
                     geometry.dictionary)


def geometry_to_dict(geometry: TargetGeometry) -> dict[str, Any]:
    return {"kind": "charuco-steel-on-print", **asdict(geometry)}


def geometry_from_dict(data: dict[str, Any]) -> TargetGeometry:
    fields = {k: v for k, v in data.items() if k != "kind"}
    try:
        return TargetGeometry(**fields)
    except TypeError as exc:
        raise ValueError(f"target geometry has unknown or missing keys: {exc}") from None


def load_geometry(path: Path) -> TargetGeometry:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of target geometry")
    return geometry_from_dict(data)


def print_layer(geometry: TargetGeometry, dpi: float, margin_mm: float = 15.0) -> npt.NDArray[np.uint8]:
    """(H, W) uint8 page: the board at exact scale, a margin with caption, 100 mm scale bar and crop marks."""
    ppm = dpi / MM_PER_INCH
    board = np.where(geometry.black_mask(ppm) > 0, 0, 255).astype(np.uint8)
    m = round(margin_mm * ppm)
    page = np.full((board.shape[0] + 2 * m, board.shape[1] + 2 * m), 255, np.uint8)
    page[m:m + board.shape[0], m:m + board.shape[1]] = board
    h, w = page.shape
    tick = max(1, round(0.3 * ppm))
    for x, y in ((m, m), (w - m, m), (m, h - m), (w - m, h - m)):  # crop marks at the board corners
        cv2.line(page, (x - round(8 * ppm), y), (x - round(2 * ppm), y), 0, tick)
        cv2.line(page, (x + round(2 * ppm), y), (x + round(8 * ppm), y), 0, tick)
        cv2.line(page, (x, y - round(8 * ppm)), (x, y - round(2 * ppm)), 0, tick)
        cv2.line(page, (x, y + round(2 * ppm)), (x, y + round(8 * ppm)), 0, tick)
    bar_y = h - round(5 * ppm)
    cv2.line(page, (m, bar_y), (m + round(100 * ppm), bar_y), 0, max(1, round(0.8 * ppm)))
    text = (f"xray-edge cross-modal target {geometry.squares_x}x{geometry.squares_y} {geometry.dictionary} "
            f"square {geometry.square_mm:g} mm marker {geometry.marker_mm:g} mm | bar = 100 mm | print at 100%")
    scale = 0.12 * ppm
    cv2.putText(page, text, (m + round(105 * ppm), bar_y + round(1.5 * ppm)), cv2.FONT_HERSHEY_SIMPLEX, scale / 4,
                0, max(1, round(0.25 * ppm)), cv2.LINE_AA)
    return page


def png_with_dpi(img: npt.NDArray[np.uint8], dpi: float) -> bytes:
    """PNG bytes with a pHYs chunk so that printers and viewers know the true scale."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    data = buf.tobytes()
    ppm = round(dpi / MM_PER_INCH * 1000.0)
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def pdf_page(img: npt.NDArray[np.uint8], dpi: float) -> bytes:
    """A one-page PDF showing a grey image at ``dpi`` (page size = image size, so 100% print is true scale)."""
    h, w = img.shape
    w_pt, h_pt = w * 72.0 / dpi, h * 72.0 / dpi
    stream = zlib.compress(np.ascontiguousarray(img).tobytes(), 9)
    content = f"q {w_pt:.4f} 0 0 {h_pt:.4f} 0 0 cm /Im0 Do Q".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w_pt:.4f} {h_pt:.4f}] "
         "/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>").encode(),
        (f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray "
         f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(stream)} >>\nstream\n").encode()
        + stream + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def steel_svg(geometry: TargetGeometry) -> str:
    """Laser/waterjet cut file of the steel layer in mm (red = cut, blue = board outline for reference)."""
    w, h = geometry.width_mm, geometry.height_mm
    paths = []
    for loop in geometry.steel_outlines_mm():
        d = "M " + " L ".join(f"{x:.3f},{y:.3f}" for x, y in loop) + " Z"
        paths.append(f'    <path d="{d}"/>')
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}mm" height="{h:g}mm" viewBox="0 0 {w:g} {h:g}">',
        f"  <!-- xray-edge cross-modal target: steel {geometry.steel_mm:g} mm, {geometry.squares_x}x"
        f"{geometry.squares_y} {geometry.dictionary}; glue each piece in register on the print's black -->",
        f'  <rect x="0" y="0" width="{w:g}" height="{h:g}" fill="none" stroke="#0000ff" stroke-width="0.1"/>',
        '  <g fill="none" stroke="#ff0000" stroke-width="0.05">',
        *paths,
        "  </g>",
        "</svg>",
        "",
    ])


def write_target(out_dir: Path, geometry: TargetGeometry, dpi: float = 300.0) -> list[Path]:
    """Write print PNG/PDF, steel SVG and geometry YAML; returns the paths written."""
    if not 72 <= dpi <= 1200:
        raise ValueError(f"dpi {dpi} out of range; expected 72 to 1200")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = print_layer(geometry, dpi)
    files = {
        "target-print.png": png_with_dpi(page, dpi),
        "target-print.pdf": pdf_page(page, dpi),
        "target-steel.svg": steel_svg(geometry).encode(),
        "target.yaml": yaml.safe_dump(geometry_to_dict(geometry), sort_keys=False).encode(),
    }
    written = []
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
        written.append(out / name)
    return written
