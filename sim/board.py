"""The cross-modal calibration target as built: one ChArUco board seen alike by the X-ray line and the exit camera.

Commissioning uses the target's definition (``calib.target`` writes its printable and laser-cut files from it,
``edge calibrate homography`` detects it); the virtual scanner (``sim.target``) renders the same board. It lives
in ``sim`` because both need it and commissioning may import the virtual scanner (``--from-sim`` calibrations),
never the reverse (docs/architecture.md, package table). The
physical target is a stack, bottom to top:

1. a rigid substrate sheet (default 3 mm PE) that keeps the board flat on the belt,
2. every black region of the ChArUco pattern cut from thin steel sheet (default 1 mm) and glued in register,
3. the same pattern printed on paper at true scale and glued on top, hiding the steel.

The camera therefore sees the print and the X-ray sees the steel: the same chessboard corners (with the same
ids) are found in both modalities, which is what the homography needs. Marker cells are large (DICT_4X4_50,
40 mm markers, 6.7 mm cells = 8 detector pixels at 0.8 mm pitch) so that the X-ray image resolves them.

Board coordinates are millimetres with the origin at the board's top-left corner, x to the right, y down,
exactly OpenCV's ``CharucoBoard`` object coordinates. Pixel convention: pixel ``i`` covers ``[i, i+1)`` so a
point at ``u`` mm lies at image coordinate ``u * px_per_mm - 0.5`` (OpenCV's centre convention).

Must not: do I/O (writing files is ``calib.target``'s job) or import ``calib/`` or another ``sim`` module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TargetGeometry:
    """The board as built. Stored in every calibration file so a result can be traced to its target.

    Attributes:
        squares_x: chessboard squares across (columns).
        squares_y: chessboard squares along (rows).
        square_mm: side of one chessboard square.
        marker_mm: side of one ArUco marker (including its one-cell black border).
        dictionary: OpenCV predefined dictionary name, e.g. ``DICT_4X4_50``.
        steel_mm: thickness of the steel layer (X-ray contrast).
        substrate_material: material name of the backing sheet, as the physics names it.
        substrate_mm: thickness of the backing sheet.
        paper_mm: thickness of the printed paper layer.
    """

    squares_x: int = 9
    squares_y: int = 6
    square_mm: float = 50.0
    marker_mm: float = 40.0
    dictionary: str = "DICT_4X4_50"
    steel_mm: float = 1.0
    substrate_material: str = "pe"
    substrate_mm: float = 3.0
    paper_mm: float = 0.2

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise ValueError(f"board needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_mm < self.square_mm:
            raise ValueError(f"marker_mm {self.marker_mm} must lie between 0 and square_mm {self.square_mm}")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r}; expected e.g. DICT_4X4_50")
        needed = (self.squares_x * self.squares_y) // 2
        if needed > _dictionary_size(self.dictionary):
            raise ValueError(f"{self.dictionary} has too few markers for a {self.squares_x}x{self.squares_y} board")

    @property
    def width_mm(self) -> float:
        return self.squares_x * self.square_mm

    @property
    def height_mm(self) -> float:
        return self.squares_y * self.square_mm

    @property
    def thickness_mm(self) -> float:
        """Height of the printed top surface above the belt: the plane the homography is valid for."""
        return self.substrate_mm + self.steel_mm + self.paper_mm

    def board(self) -> cv2.aruco.CharucoBoard:
        """A fresh OpenCV board in millimetres (OpenCV objects are not shareable across threads)."""
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_mm, self.marker_mm, d)

    def corners_mm(self) -> FloatArray:
        """(N, 2) inner chessboard corners in board mm; row ``i`` is ChArUco corner id ``i``."""
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64)[:, :2].copy()

    def black_mask(self, px_per_mm: float) -> npt.NDArray[np.uint8]:
        """(H, W) uint8, 255 where the board is black (steel and ink), 0 where white."""
        return black_mask_cached(self, float(px_per_mm)).copy()

    def printed_image(self, px_per_mm: float) -> npt.NDArray[np.uint8]:
        """(H, W) uint8 print layer: black pattern on white (what the camera sees)."""
        return np.where(self.black_mask(px_per_mm) > 0, 18, 240).astype(np.uint8)

    def steel_outlines_mm(self) -> list[FloatArray]:
        """Closed outlines of every steel piece, board mm, for the laser-cut file.

        Each chessboard square is one piece; each marker is its black cells merged into as few closed loops as
        the bit pattern allows (loops that touch only at a corner stay separate pieces).
        """
        loops: list[FloatArray] = []
        s = self.square_mm
        for j in range(self.squares_y):
            for i in range(self.squares_x):
                if (i + j) % 2 == 0:
                    loops.append(np.array([[i * s, j * s], [(i + 1) * s, j * s], [(i + 1) * s, (j + 1) * s],
                                           [i * s, (j + 1) * s]], dtype=np.float64))
        board = self.board()
        d = board.getDictionary()
        bits = d.markerSize + 2
        cell = self.marker_mm / bits
        for marker_id, obj in zip(np.asarray(board.getIds()).ravel(), board.getObjPoints(), strict=True):
            origin = np.asarray(obj, dtype=np.float64)[0, :2]
            img = d.generateImageMarker(int(marker_id), bits, borderBits=1)
            for loop in _cell_loops(img < 128):
                loops.append(origin + loop * cell)
        return loops


@lru_cache(maxsize=8)
def black_mask_cached(geometry: TargetGeometry, px_per_mm: float) -> npt.NDArray[np.uint8]:
    w = round(geometry.width_mm * px_per_mm)
    h = round(geometry.height_mm * px_per_mm)
    img = geometry.board().generateImage((w, h), marginSize=0, borderBits=1)
    out = np.where(img < 128, 255, 0).astype(np.uint8)
    out.setflags(write=False)
    return out


def _dictionary_size(name: str) -> int:
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
    return int(d.bytesList.shape[0])


def _cell_loops(black: npt.NDArray[np.bool_]) -> list[FloatArray]:
    """Boundary loops (cell units) of the black cells of a small grid.

    Every black cell contributes its four edges counter-clockwise (in a y-down frame, clockwise on screen);
    an edge shared by two black cells appears once each way and cancels. The remaining directed edges are
    chained into loops; at a vertex with two ways out (cells touching at a corner) the loop turns to keep the
    black cell on the same side, which keeps corner-touching pieces separate.
    """
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    h, w = black.shape
    directed: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    for y in range(h):
        for x in range(w):
            if not black[y, x]:
                continue
            ring = [(x, y), (x + 1, y), (x + 1, y + 1), (x, y + 1)]
            for k in range(4):
                a, b = ring[k], ring[(k + 1) % 4]
                if (b, a) in directed:
                    directed.remove((b, a))
                else:
                    directed.add((a, b))
    for a, b in directed:
        edges.setdefault(a, []).append(b)
    loops: list[FloatArray] = []
    while edges:
        start = next(iter(edges))
        loop = [start]
        prev_dir: tuple[int, int] | None = None
        cur = start
        while True:
            outs = edges[cur]
            if len(outs) > 1 and prev_dir is not None:
                # turn right (y-down frame) first: stays inside the same cell's corner
                def turn_rank(nxt: tuple[int, int], pd: tuple[int, int] = prev_dir,
                              at: tuple[int, int] = cur) -> int:
                    d = (nxt[0] - at[0], nxt[1] - at[1])
                    cross = pd[0] * d[1] - pd[1] * d[0]
                    return 0 if cross > 0 else 1
                outs.sort(key=turn_rank)
            nxt = outs.pop(0)
            if not outs:
                del edges[cur]
            prev_dir = (nxt[0] - cur[0], nxt[1] - cur[1])
            cur = nxt
            if cur == start:
                break
            loop.append(cur)
        loops.append(_simplify(np.array(loop, dtype=np.float64)))
    return loops


def _simplify(loop: FloatArray) -> FloatArray:
    """Drop collinear vertices of an axis-aligned loop."""
    keep = []
    n = len(loop)
    for i in range(n):
        a, b, c = loop[i - 1], loop[i], loop[(i + 1) % n]
        if abs((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])) > 1e-12:
            keep.append(b)
    return np.array(keep, dtype=np.float64)
