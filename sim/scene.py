"""Scene builder: one screened item = one or more parcels/bags on the belt, filled with cluttered objects.

Where it sits: between the object libraries (``sim/objects.py``, ``sim/threats.py``) and the physics
(``sim/physics.py``). :func:`build_item` draws a random item for a preset and returns its per-material path-length
maps plus complete ground truth (:class:`ItemTruth`): every object's box and mask in X-ray pixels, kind, group and
threat flag, the host of a concealed object, the true effective-Z and dominant-material maps, and each parcel's
:class:`ParcelFootprint` on the belt (what ``sim/camera.py`` draws the outside of).

Coordinates: columns are detector channels, rows are belt lines from the item-start line. Belt millimetres are
``x_mm = (channel + 0.5) * pitch_mm`` across and ``y_mm = (line + 0.5) * pitch_mm`` along. A footprint's
``rotation_deg`` turns its width axis to ``(cos a, -sin a)`` and its length axis to ``(sin a, cos a)`` in (x, y),
the convention of ``sim/camera.py``.

Determinism: everything is drawn from the ``numpy.random.Generator`` passed in; the same generator state gives
the same item. Must not: render noise, write files, or import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from sim.objects import BENIGN, HOSTS, Drawn, Group, Rng, _u
from sim.physics import MATERIALS, Material, effective_z_map
from sim.shapes import Canvas, Placed
from sim.threats import CONCEALABLE_FIREARM_PARTS, CONCEALMENTS, FIREARM_PARTS, KNIVES, THREATS


class Preset(StrEnum):
    """Kind of item stream."""

    PARCELS = "parcels"
    BAGGAGE = "baggage"
    ELECTRONICS = "electronics"


@dataclass(frozen=True, slots=True)
class ParcelFootprint:
    """A parcel's outline on the belt, in item millimetres (see module docstring for axes and rotation).

    Attributes:
        centre_x_mm: centre across the belt from the channel-0 edge.
        centre_y_mm: centre along the belt from the item-start line.
        width_mm, length_mm, height_mm: outer size (width along the rotated x axis).
        rotation_deg: rotation on the belt.
        surface_seed: seed of the outside's print, labels and tape (camera rendering).
        kind: container kind (``box``, ``envelope``, ``polybag``, ``suitcase``, ``backpack``, ``tray``).
    """

    centre_x_mm: float
    centre_y_mm: float
    width_mm: float
    length_mm: float
    height_mm: float
    rotation_deg: float
    surface_seed: int
    kind: str = "box"

    def corners_mm(self) -> NDArray[np.float64]:
        """``(4, 2)`` corners (x, y) in item mm."""
        a = np.deg2rad(self.rotation_deg)
        u = np.array([np.cos(a), -np.sin(a)])
        v = np.array([np.sin(a), np.cos(a)])
        c = np.array([self.centre_x_mm, self.centre_y_mm])
        hw, hl = self.width_mm / 2, self.length_mm / 2
        return np.array([c - u * hw - v * hl, c + u * hw - v * hl, c + u * hw + v * hl, c - u * hw + v * hl])


@dataclass(frozen=True, slots=True)
class ObjectTruth:
    """Ground truth of one object in an item.

    Attributes:
        object_id: 1-based id within the item (0 is background in label images).
        kind: library kind (the COCO category).
        group: ``benign``, ``electronics``, ``firearm``, ``knife``, ``concealment`` or ``container``.
        threat: True for threats.
        parcel_index: which footprint holds the object (index into ``ItemTruth.footprints``).
        host_id: the electronics object a concealed object sits inside, else None.
        bbox_xywh: tight box of the mask in pixels ``(x=col, y=row, w, h)``, COCO convention.
        mask_origin: ``(row0, col0)`` of ``mask`` in the item.
        mask: ``(h, w) bool`` window of the object's own footprint (amodal: X-rays see through overlaps).
        effective_z: electron-weighted power-law Z of the object's own materials.
        materials: the materials the object is made of.
        centre_mm: ``(x, y)`` centre in item mm.
        rotation_deg: rotation on the belt.
    """

    object_id: int
    kind: str
    group: str
    threat: bool
    parcel_index: int
    host_id: int | None
    bbox_xywh: tuple[int, int, int, int]
    mask_origin: tuple[int, int]
    mask: NDArray[np.bool_] = field(repr=False)
    effective_z: float
    materials: tuple[str, ...]
    centre_mm: tuple[float, float]
    rotation_deg: float

    def __post_init__(self) -> None:
        self.mask.flags.writeable = False

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def full_mask(self, shape: tuple[int, int]) -> NDArray[np.bool_]:
        """The mask as an ``(H, W)`` array of the whole item."""
        out = np.zeros(shape, bool)
        r0, c0 = self.mask_origin
        h, w = self.mask.shape
        out[r0:r0 + h, c0:c0 + w] = self.mask
        return out


@dataclass(frozen=True, slots=True)
class ItemTruth:
    """Everything known about one generated item.

    Attributes:
        item_index: index in the generated stream.
        preset: the preset it was drawn from.
        shape: ``(H, W)`` of the X-ray image (lines, channels).
        pitch_mm: pixel pitch.
        footprints: one per parcel/bag, item mm.
        objects: every object, containers included (group ``container``).
        path_mm: material → ``(H, W) float32`` path length (mm).
        z_eff: ``(H, W) float32`` true effective Z of everything crossed; 0 in air.
        material_map: ``(H, W) uint8`` index into ``material_names`` of the material with most electrons
            along the ray (0 = air).
        material_names: ``("air", ...)`` names for ``material_map``.
    """

    item_index: int
    preset: str
    shape: tuple[int, int]
    pitch_mm: float
    footprints: tuple[ParcelFootprint, ...]
    objects: tuple[ObjectTruth, ...]
    path_mm: dict[str, NDArray[np.float32]] = field(repr=False)
    z_eff: NDArray[np.float32] = field(repr=False)
    material_map: NDArray[np.uint8] = field(repr=False)
    material_names: tuple[str, ...]

    @property
    def threat(self) -> bool:
        """True when any object in the item is a threat."""
        return any(o.threat for o in self.objects)


@dataclass(frozen=True, slots=True)
class SceneConfig:
    """Knobs of the item generator.

    Attributes:
        channels: detector channels (image width).
        pitch_mm: pixel pitch.
        threat_rate: probability that an item carries at least one threat.
        margin_lines: empty belt lines before and after the parcels.
    """

    channels: int = 640
    pitch_mm: float = 0.8
    threat_rate: float = 0.2
    margin_lines: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.threat_rate <= 1.0:
            raise ValueError(f"threat_rate={self.threat_rate}: expected 0.0 to 1.0")
        if self.channels * self.pitch_mm < 250:
            raise ValueError(f"belt width {self.channels * self.pitch_mm} mm is too narrow for parcels (>= 250)")


# -- containers ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Container:
    drawn: Drawn
    width: float
    length: float
    height: float
    interior: tuple[float, float]  # usable (w, ln) around the centre


def _box(rng: Rng, pitch: float, w: float, ln: float) -> _Container:
    h = _u(rng, 80, 300)
    c = Canvas(w, ln, pitch)
    board = _u(rng, 0.7, 1.2)  # solid-equivalent of one corrugated wall (mm of board at 0.7 g/cm³)
    c.rect("cardboard", 0, 0, w, ln, 2 * board)  # top and bottom
    c.rect("cardboard", 0, 0, w, ln, 2 * board)  # outer flaps top and bottom
    flap = min(w / 2, ln / 2)
    c.rect("cardboard", 0, -ln / 2 + flap / 2, w, flap, 2 * board)  # inner flaps
    c.rect("cardboard", 0, ln / 2 - flap / 2, w, flap, 2 * board)
    c.frame("cardboard", 0, 0, w, ln, 4.0, h * board / 4.0)  # walls along the beam: the dark outline
    c.rect("pp", 0, 0, 50, ln + 60, 0.1)  # tape over the seam and down the ends
    if rng.random() < 0.5:
        c.rect("paper", _u(rng, -w / 4, w / 4), _u(rng, -ln / 4, ln / 4), 100, 150, 0.2)  # label and docs pouch
    if rng.random() < 0.35:  # packing filler
        c.rect("pe", 0, 0, w - 10, ln - 10, _u(rng, 0.5, 3.0), r=20)
    return _Container(Drawn("box", c, Group.CONTAINER, height_mm=h), w, ln, h, (w - 16, ln - 16))


def _envelope(rng: Rng, pitch: float, w: float, ln: float) -> _Container:
    c = Canvas(w, ln, pitch)
    c.rect("paper", 0, 0, w, ln, 2 * 0.15, r=3)
    c.rect("pe", 4, 4, w - 12, ln - 12, 2 * _u(rng, 0.3, 0.8), r=3)  # bubble lining
    c.rect("paper", 0, -ln / 2 + 30, w, 60, 0.15)  # flap
    return _Container(Drawn("envelope", c, Group.CONTAINER, height_mm=40), w, ln, 40, (w - 20, ln - 40))


def _polybag(rng: Rng, pitch: float, w: float, ln: float) -> _Container:
    c = Canvas(w, ln, pitch)
    c.ellipse("pe", 0, 0, w / 2, ln / 2, 2 * 0.08)
    c.rect("pe", 0, 0, w * 0.9, ln * 0.9, 2 * 0.06, r=40)
    return _Container(Drawn("polybag", c, Group.CONTAINER, height_mm=80), w, ln, 80, (w * 0.8, ln * 0.8))


def _suitcase(rng: Rng, pitch: float, w: float, ln: float) -> _Container:
    h = _u(rng, 200, 280)
    c = Canvas(w, ln, pitch)
    hard = rng.random() < 0.5
    c.rect("abs" if hard else "polyester", 0, 0, w, ln, 2 * (2.5 if hard else 1.5), r=25)
    c.frame("abs" if hard else "polyester", 0, 0, w, ln, 3.0, h * (0.8 if hard else 0.4))
    c.wire("steel", [(-w / 2 + 12, -ln / 2 + 12), (w / 2 - 12, -ln / 2 + 12), (w / 2 - 12, ln / 2 - 12),
                     (-w / 2 + 12, ln / 2 - 12), (-w / 2 + 12, -ln / 2 + 14)], 2.0)  # zip around
    for sx in (-1, 1):  # trolley rails: two aluminium tubes along the length
        c.cylinder("aluminium", sx * w / 5, 0, ln * 0.85, 9, wall=1.2)
        c.cylinder("aluminium", sx * w / 5, 0, ln * 0.6, 7, wall=1.0)
    c.rect("abs", 0, -ln / 2 + 15, w / 2.5, 30, 20, r=6)  # handle housing
    for sx in (-1, 1):  # wheels with steel axles
        c.disc("pe", sx * (w / 2 - 30), ln / 2 - 30, 24, 40)
        c.disc("steel", sx * (w / 2 - 30), ln / 2 - 30, 4, 45)
    if not hard:
        c.rect("pp", 0, 0, w - 40, ln - 40, 3.0)  # base board
    return _Container(Drawn("suitcase", c, Group.CONTAINER, height_mm=h), w, ln, h, (w - 60, ln - 70))


def _backpack(rng: Rng, pitch: float, w: float, ln: float) -> _Container:
    c = Canvas(w, ln, pitch)
    c.ellipse("polyester", 0, 0, w / 2, ln / 2, 2 * 1.2)
    c.rect("polyester", 0, 0, w * 0.85, ln * 0.85, 2 * 1.2, r=50)
    for sx in (-1, 1):
        c.wire("polyester", [(sx * w / 4, -ln / 2 + 20), (sx * w / 3, 0), (sx * w / 4, ln / 2 - 20)], 40 * 0.15)
        c.frame("zinc", sx * w / 4, ln / 2 - 40, 30, 20, 4, 3)  # strap buckles
    c.wire("steel", [(-w / 2.5, -ln / 3), (0, -ln / 2.2), (w / 2.5, -ln / 3)], 2.0)  # zip
    return _Container(Drawn("backpack", c, Group.CONTAINER, height_mm=180), w, ln, 180, (w * 0.75, ln * 0.75))


def _tray(rng: Rng, pitch: float, w: float, ln: float) -> _Container:
    c = Canvas(w, ln, pitch)
    c.rect("pp", 0, 0, w, ln, 2 * 3.0, r=30)
    c.frame("pp", 0, 0, w, ln, 8.0, 90 * 3.0 / 8.0 * 2)
    return _Container(Drawn("tray", c, Group.CONTAINER, height_mm=90), w, ln, 90, (w - 30, ln - 30))


_ContainerBuilder = Callable[[Rng, float, float, float], _Container]
_CONTAINERS: Mapping[str, _ContainerBuilder] = {
    "box": _box, "envelope": _envelope, "polybag": _polybag, "suitcase": _suitcase, "backpack": _backpack,
    "tray": _tray,
}

# Container kind, probability, (w range, ln range) in mm, target coverage of the interior by objects, per preset.
_PRESETS: Mapping[Preset, tuple[tuple[str, float, tuple[float, float], tuple[float, float], float], ...]] = {
    Preset.PARCELS: (
        ("box", 0.65, (200, 450), (220, 600), 1.2),
        ("envelope", 0.2, (180, 330), (230, 420), 0.7),
        ("polybag", 0.15, (220, 400), (280, 500), 0.8),
    ),
    Preset.BAGGAGE: (
        ("suitcase", 0.5, (330, 470), (480, 720), 1.3),
        ("backpack", 0.3, (280, 380), (380, 500), 1.1),
        ("tray", 0.2, (380, 460), (520, 640), 0.5),
    ),
    Preset.ELECTRONICS: (
        ("box", 0.7, (280, 460), (300, 600), 1.3),
        ("backpack", 0.3, (280, 380), (380, 500), 1.3),
    ),
}

# Benign kinds and their relative weights per preset.
_CONTENTS: Mapping[Preset, Mapping[str, float]] = {
    Preset.PARCELS: {k: 1.0 for k in BENIGN} | {"clothing": 3.0, "book": 2.0, "food": 1.5, "toaster": 0.4,
                                                   "iron": 0.4, "hairdryer": 0.5, "laptop": 0.5, "wallet": 0.3},
    Preset.BAGGAGE: {k: 1.0 for k in BENIGN} | {"clothing": 6.0, "shoes": 2.0, "cosmetics": 2.0, "cable": 2.0,
                                                   "charger": 1.5, "toaster": 0.1, "iron": 0.2, "food_tin": 0.5,
                                                   "pen": 2.0, "glasses": 1.5, "wallet": 1.5, "power_bank": 1.5},
    Preset.ELECTRONICS: {k: 0.3 for k in BENIGN} | {"laptop": 3.0, "tablet": 2.0, "phone": 2.0, "charger": 2.0,
                                                       "cable": 3.0, "hairdryer": 1.5, "toaster": 1.0, "iron": 1.0,
                                                       "headphones": 1.5, "batteries": 1.0},
}


@dataclass(slots=True)
class _Pending:
    drawn: Drawn
    placed: Placed
    parcel_index: int
    host: int | None  # index into the pending list
    centre_mm: tuple[float, float]
    rotation_deg: float
    mirror: bool = False


def _choice(rng: Rng, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _local_to_item(cx: float, cy: float, rot_deg: float, lx: float, ly: float) -> tuple[float, float]:
    a = np.deg2rad(rot_deg)
    c, s = np.cos(a), np.sin(a)
    return (float(cx + lx * c + ly * s), float(cy - lx * s + ly * c))


def _extent(w: float, ln: float, rot_deg: float) -> tuple[float, float]:
    """Axis-aligned (x, y) extent of a w x ln rectangle rotated by ``rot_deg``."""
    a = np.deg2rad(rot_deg)
    c, s = abs(np.cos(a)), abs(np.sin(a))
    return (w * c + ln * s, w * s + ln * c)


def _threat_kind(rng: Rng, preset: Preset) -> tuple[str, bool]:
    """Pick a threat kind; the flag says whether it must be concealed inside an electronics host."""
    p_conceal = 0.6 if preset is Preset.ELECTRONICS else 0.25
    r = rng.random()
    if r < p_conceal:
        pool = list(CONCEALMENTS) + list(CONCEALABLE_FIREARM_PARTS)
        return pool[int(rng.integers(0, len(pool)))], True
    if r < p_conceal + (1 - p_conceal) * 0.55:
        return list(FIREARM_PARTS)[int(rng.integers(0, len(FIREARM_PARTS)))], False
    return list(KNIVES)[int(rng.integers(0, len(KNIVES)))], False


def build_item(rng: Rng, preset: Preset | str = Preset.PARCELS, config: SceneConfig | None = None,
               item_index: int = 0, materials: Mapping[str, Material] = MATERIALS) -> ItemTruth:
    """Draw one item (parcels with contents, threats at ``config.threat_rate``) and its ground truth."""
    cfg = config if config is not None else SceneConfig()
    preset = Preset(preset)
    pitch = cfg.pitch_mm
    belt_w = cfg.channels * pitch
    n_parcels = 1
    if preset is Preset.PARCELS:
        n_parcels = int(rng.choice([1, 2, 3], p=[0.75, 0.2, 0.05]))
    pending: list[_Pending] = []
    footprints: list[ParcelFootprint] = []
    y_cursor = cfg.margin_lines * pitch
    containers: list[tuple[_Container, float, float, float]] = []
    for _ in range(n_parcels):
        spec = _PRESETS[preset]
        k = int(rng.choice(len(spec), p=np.asarray([s[1] for s in spec]) / sum(s[1] for s in spec)))
        kind, _, wr, lr, density = spec[k]
        shrink = 0.7 if n_parcels > 1 else 1.0
        w = min(_u(rng, *wr) * shrink, belt_w - 40)
        ln = _u(rng, *lr) * shrink
        rot = float(rng.normal(0, 8)) if rng.random() < 0.8 else _u(rng, -45, 45)
        ex, ey = _extent(w, ln, rot)
        while ex > belt_w - 20:
            rot *= 0.5
            ex, ey = _extent(w, ln, rot)
            if abs(rot) < 0.5:
                rot, w = 0.0, belt_w - 40
                ex, ey = _extent(w, ln, rot)
        cx = _u(rng, ex / 2 + 8, belt_w - ex / 2 - 8)
        cy = y_cursor + ey / 2
        y_cursor += ey + _u(rng, 0, 60)
        cont = _CONTAINERS[kind](rng, pitch, w, ln)
        containers.append((cont, cx, cy, rot))
        footprints.append(ParcelFootprint(cx, cy, w, ln, cont.height, rot, int(rng.integers(0, 2**31 - 1)), kind))
        pending.append(_Pending(cont.drawn, cont.drawn.canvas.place(cx, cy, rot), len(footprints) - 1, None,
                                (cx, cy), rot))
        # Fill the interior up to a target coverage (sum of object footprints / interior area): clutter without
        # piling everything into one impenetrable heap.
        target = cont.interior[0] * cont.interior[1] * density * _u(rng, 0.6, 1.2)
        covered, tries = 0.0, 0
        while covered < target and tries < 60:
            tries += 1
            kind_b = _choice(rng, _CONTENTS[preset])
            covered += _add_object(rng, pitch, pending, BENIGN[kind_b], cont, cx, cy, rot, len(footprints) - 1)
    if rng.random() < cfg.threat_rate:
        for _ in range(1 if rng.random() < 0.8 else 2):
            kind, concealed = _threat_kind(rng, preset)
            p_idx = int(rng.integers(0, len(containers)))
            cont, cx, cy, rot = containers[p_idx]
            if concealed:
                hosts = [i for i, p in enumerate(pending) if p.drawn.kind in HOSTS and p.drawn.cavities]
                if not hosts:
                    host_kind = _choice(rng, {h: 1.0 for h in HOSTS if h != "iron"})
                    before = len(pending)
                    _add_object(rng, pitch, pending, BENIGN[host_kind], cont, cx, cy, rot, p_idx, force=True)
                    hosts = [before]
                _conceal(rng, pitch, pending, int(hosts[int(rng.integers(0, len(hosts)))]), THREATS[kind])
            else:
                _add_object(rng, pitch, pending, THREATS[kind], cont, cx, cy, rot, p_idx, force=True)
    height = int(np.ceil(y_cursor / pitch)) + cfg.margin_lines
    return _assemble(pending, footprints, (height, cfg.channels), pitch, preset, item_index, materials)


def _add_object(rng: Rng, pitch: float, pending: list[_Pending], builder: Callable[[Rng, float], Drawn],
                cont: _Container, pcx: float, pcy: float, prot: float, parcel_index: int,
                force: bool = False) -> float:
    """Draw an object and lay it inside the container; returns its footprint area (mm²), 0 if it did not fit.

    An object that fits in neither orientation is dropped, unless ``force`` (threats, concealment hosts), in
    which case it is centred and may press against the walls, as a too-large item in a soft bag does.
    """
    drawn = builder(rng, pitch)
    box = _content_box(drawn, pitch)
    if box is None:
        return 0.0
    ow, ol, off_x0, off_y = box
    iw, il = cont.interior
    local_rot = float(rng.choice([0.0, 90.0, 180.0, 270.0])) + float(rng.normal(0, 15))
    ex, ey = _extent(ow, ol, local_rot)
    if ex > iw or ey > il:
        square = float(np.round(local_rot / 90.0) * 90.0)
        for alt in (local_rot + 90.0, square, square + 90.0):
            ex2, ey2 = _extent(ow, ol, alt)
            if ex2 <= iw and ey2 <= il:
                local_rot, ex, ey = alt, ex2, ey2
                break
    if (ex > iw or ey > il) and not force:
        return 0.0
    # object centre offset of its material inside the canvas (canvases carry margins and cables)
    lx = _u(rng, -(iw - ex) / 2, (iw - ex) / 2) if ex < iw else 0.0
    ly = _u(rng, -(il - ey) / 2, (il - ey) / 2) if ey < il else 0.0
    mirror = bool(rng.random() < 0.5)
    off_x = off_x0 * (-1.0 if mirror else 1.0)
    a = np.deg2rad(local_rot)
    lx -= off_x * np.cos(a) + off_y * np.sin(a)
    ly -= -off_x * np.sin(a) + off_y * np.cos(a)
    cx, cy = _local_to_item(pcx, pcy, prot, lx, ly)
    rot = prot + local_rot
    placed = drawn.canvas.place(cx, cy, rot, mirror=mirror)
    pending.append(_Pending(drawn, placed, parcel_index, None, (cx, cy), rot, mirror))
    return float(ow * ol)


def _content_box(drawn: Drawn, pitch: float) -> tuple[float, float, float, float] | None:
    """Size ``(w, l)`` of what is actually drawn on a canvas and its centre offset ``(dx, dy)`` from the canvas
    centre, in mm (canvases carry margins and dangling cables); None for an empty canvas."""
    total = np.zeros((drawn.canvas.h, drawn.canvas.w), np.float32)
    for layer in drawn.canvas.layers.values():
        total += layer
    rows = np.flatnonzero((total > 0.05).any(axis=1))
    cols = np.flatnonzero((total > 0.05).any(axis=0))
    if rows.size == 0:
        return None
    return ((cols[-1] - cols[0] + 1) * pitch, (rows[-1] - rows[0] + 1) * pitch,
            ((cols[0] + cols[-1]) / 2 - (drawn.canvas.w - 1) / 2) * pitch,
            ((rows[0] + rows[-1]) / 2 - (drawn.canvas.h - 1) / 2) * pitch)


def _conceal(rng: Rng, pitch: float, pending: list[_Pending], host_index: int,
             builder: Callable[[Rng, float], Drawn]) -> None:
    """Hide a threat inside one of the host's cavities; redraw a few times until one fits."""
    host = pending[host_index]
    best: tuple[float, Drawn, tuple[float, float, float, float], float, tuple[float, float, float, float]] | None
    best = None
    for _ in range(8):
        drawn = builder(rng, pitch)
        box = _content_box(drawn, pitch)
        if box is None:
            continue
        for cav in host.drawn.cavities:
            for rot in (0.0, 90.0):
                ex, ey = _extent(box[0], box[1], rot)
                over = max(ex / cav[2], ey / cav[3])
                if best is None or over < best[0]:
                    best = (over, drawn, cav, rot, box)
        if best is not None and best[0] <= 1.0:
            break
    if best is None:
        return
    _, drawn, (cx_l, cy_l, cw, cl), local_rot, (ow, ol, off_x, off_y) = best
    ex, ey = _extent(ow, ol, local_rot)
    local_rot += float(rng.normal(0, 4))
    lx = _u(rng, -1, 1) * max(cw - ex, 0.0) / 2
    ly = _u(rng, -1, 1) * max(cl - ey, 0.0) / 2
    # A mirrored host has its local x flipped: its cavity at (x, y) lies at (-x, y) of the unmirrored frame.
    lx += -cx_l if host.mirror else cx_l
    ly += cy_l
    a = np.deg2rad(local_rot)
    lx -= off_x * np.cos(a) + off_y * np.sin(a)
    ly -= -off_x * np.sin(a) + off_y * np.cos(a)
    cx, cy = _local_to_item(host.centre_mm[0], host.centre_mm[1], host.rotation_deg, lx, ly)
    rot = host.rotation_deg + local_rot
    pending.append(_Pending(drawn, drawn.canvas.place(cx, cy, rot), host.parcel_index, host_index, (cx, cy), rot))


def _assemble(pending: list[_Pending], footprints: list[ParcelFootprint], shape: tuple[int, int], pitch: float,
              preset: Preset, item_index: int, materials: Mapping[str, Material]) -> ItemTruth:
    h, w = shape
    path: dict[str, NDArray[np.float32]] = {}
    objects: list[ObjectTruth] = []
    id_by_pending: dict[int, int] = {}
    for idx, p in enumerate(pending):
        pl = p.placed
        ph, pw = pl.shape
        r0, c0 = max(pl.row0, 0), max(pl.col0, 0)
        r1, c1 = min(pl.row0 + ph, h), min(pl.col0 + pw, w)
        if r0 >= r1 or c0 >= c1:
            continue
        win = (slice(r0 - pl.row0, r1 - pl.row0), slice(c0 - pl.col0, c1 - pl.col0))
        num = 0.0
        den = 0.0
        for mat, layer in pl.layers.items():
            part = layer[win]
            if mat not in path:
                path[mat] = np.zeros(shape, np.float32)
            path[mat][r0:r1, c0:c1] += part
            m = materials[mat]
            electrons = float(part.sum()) * m.electron_density_mol_cm3
            num += electrons * m.effective_z**2.94
            den += electrons
        mask = pl.support()[win]
        if not mask.any():
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        tight = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy()
        origin = (r0 + int(rows[0]), c0 + int(cols[0]))
        host_id = id_by_pending.get(p.host) if p.host is not None else None
        objects.append(ObjectTruth(
            object_id=len(objects) + 1, kind=p.drawn.kind, group=str(p.drawn.group), threat=p.drawn.threat,
            parcel_index=p.parcel_index, host_id=host_id,
            bbox_xywh=(origin[1], origin[0], int(tight.shape[1]), int(tight.shape[0])), mask_origin=origin,
            mask=tight, effective_z=float((num / den) ** (1 / 2.94)) if den > 0 else 0.0,
            materials=tuple(sorted(m for m, layer in pl.layers.items() if float(layer.max()) > 0)),
            centre_mm=p.centre_mm, rotation_deg=float(p.rotation_deg),
        ))
        id_by_pending[idx] = objects[-1].object_id
    if not path:
        path["pe"] = np.zeros(shape, np.float32)
    z = effective_z_map(path, materials)
    names = ("air", *sorted(path))
    material_map = np.zeros(shape, np.uint8)
    best = np.zeros(shape, np.float32)
    for k, n in enumerate(names[1:], start=1):
        e = path[n] * np.float32(materials[n].electron_density_mol_cm3)
        more = e > best
        material_map[more] = k
        np.maximum(best, e, out=best)
    truth = ItemTruth(item_index, str(preset), shape, pitch, tuple(footprints), tuple(objects), path, z,
                      material_map, names)
    return truth
