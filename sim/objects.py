"""Benign object library of the virtual scanner: everyday contents of parcels and bags as thickness maps.

Where it sits: called by ``sim/scene.py`` to fill containers; draws with ``sim/shapes.py``; material names refer to
``sim/physics.MATERIALS``. Each builder takes a random generator and the pixel pitch and returns a :class:`Drawn`
(the object's local canvas and its labels). Sizes, fills and part layouts are randomised within what real items
measure, so that no two phones or bottles are identical.

Electronics (laptop, hairdryer, toaster, …) are built from parts and keep a list of ``cavities``: local
rectangles where a concealed object (``sim/threats.py``) can sit inside the housing, as in seeds 001/002.

Must not: know about item layout, ground truth formats or physics; do I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from sim.shapes import Canvas

Rng = np.random.Generator


class Group(StrEnum):
    """Coarse class of an object, for COCO supercategories and evaluation splits."""

    BENIGN = "benign"
    ELECTRONICS = "electronics"
    FIREARM = "firearm"
    KNIFE = "knife"
    CONCEALMENT = "concealment"
    CONTAINER = "container"


@dataclass(slots=True)
class Drawn:
    """A drawn object before placement.

    Attributes:
        kind: library name (COCO category).
        canvas: local layers.
        group: coarse class.
        threat: True for threat items.
        height_mm: how tall it stands on the belt (for stacking realism and the camera, not the X-ray).
        cavities: local ``(cx, cy, w, ln)`` rectangles (mm) inside the housing where something can be hidden.
    """

    kind: str
    canvas: Canvas
    group: Group = Group.BENIGN
    threat: bool = False
    height_mm: float = 30.0
    cavities: Sequence[tuple[float, float, float, float]] = field(default_factory=list)


def _u(rng: Rng, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _wavy(rng: Rng, x0: float, y0: float, x1: float, y1: float, n: int, amp: float) -> list[tuple[float, float]]:
    """A polyline from (x0, y0) to (x1, y1) with random sideways wander: cables, straps."""
    t = np.linspace(0.0, 1.0, n)
    dx, dy = x1 - x0, y1 - y0
    norm = float(np.hypot(dx, dy)) or 1.0
    nx, ny = -dy / norm, dx / norm
    wobble = np.cumsum(rng.normal(0, amp, n))
    wobble -= np.linspace(wobble[0], wobble[-1], n)
    return [(float(x0 + dx * k + nx * w), float(y0 + dy * k + ny * w)) for k, w in zip(t, wobble, strict=True)]


# -- textiles, paper, food ------------------------------------------------------------------------------------
def clothing(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 150, 320), _u(rng, 180, 380)
    c = Canvas(w, ln, pitch)
    fabric = "cotton" if rng.random() < 0.6 else "polyester"
    fill = _u(rng, 0.12, 0.25)  # folded garments are mostly air
    t = _u(rng, 20, 80) * fill
    c.blob(fabric, rng, 0, 0, w, ln, t * 0.6)
    for _ in range(int(rng.integers(2, 5))):  # folded layers, each a little off
        c.blob(fabric, rng, _u(rng, -w / 8, w / 8), _u(rng, -ln / 8, ln / 8), _u(rng, 0.5, 0.9) * w,
               _u(rng, 0.5, 0.9) * ln, t * 0.25)
    for _ in range(int(rng.integers(1, 4))):  # seams and hems: narrow double layers
        c.rect(fabric, _u(rng, -w / 4, w / 4), _u(rng, -ln / 4, ln / 4), _u(rng, w / 3, w * 0.8), 6, t * 0.3)
    c.wrinkle(fabric, rng, _u(rng, 10, 25), 0.35)
    if rng.random() < 0.5:  # buttons
        x = _u(rng, -w / 4, w / 4)
        for k in range(int(rng.integers(4, 8))):
            c.disc("pe" if rng.random() < 0.7 else "brass", x, -ln / 2 + 25 + k * 30, 6, 2.5)
    if rng.random() < 0.3:  # zip
        c.wire("steel", [(_u(rng, -w / 3, w / 3), -ln / 2 + 10), (_u(rng, -w / 3, w / 3), ln / 2 - 10)], 1.5)
    return Drawn("clothing", c, height_mm=_u(rng, 20, 80))


def book(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 110, 210), _u(rng, 170, 290)
    c = Canvas(w, ln, pitch)
    t = _u(rng, 8, 45)
    c.rect("paper", 0, 0, w, ln, t, r=1.0)
    if rng.random() < 0.5:  # hard cover
        c.rect("cardboard", 0, 0, w + 4, ln + 4, 5.0, r=1.0)
    return Drawn("book", c, height_mm=t)


def shoes(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 170, 230), _u(rng, 250, 320)
    c = Canvas(w, ln, pitch)
    for side in (-1, 1):
        cx = side * w / 4.3
        sole = [(cx - 38, -ln / 2 + 20), (cx + 38, -ln / 2 + 15), (cx + 45, ln / 6), (cx + 30, ln / 2 - 5),
                (cx - 30, ln / 2 - 5), (cx - 42, ln / 6)]
        c.polygon("rubber", sole, _u(rng, 15, 30))
        c.polygon("leather", sole, _u(rng, 6, 14))
        c.rect("steel", cx, ln / 8, 12, 90, 1.2)  # shank
        for k in range(5):  # eyelets
            c.disc("brass", cx - 15, -ln / 2 + 60 + 14 * k, 3, 0.8, hole_r=1.5)
            c.disc("brass", cx + 15, -ln / 2 + 60 + 14 * k, 3, 0.8, hole_r=1.5)
    return Drawn("shoes", c, height_mm=_u(rng, 80, 120))


def food_block(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 60, 160), _u(rng, 80, 220)
    c = Canvas(w, ln, pitch)
    mat = "food" if rng.random() < 0.6 else "sugar"
    c.rect(mat, 0, 0, w, ln, _u(rng, 15, 45), r=_u(rng, 2, 12))
    c.wrinkle(mat, rng, _u(rng, 5, 15), 0.15)
    c.rect("paper" if rng.random() < 0.5 else "aluminium", 0, 0, w + 3, ln + 3, 0.1)
    return Drawn("food", c, height_mm=40)


def food_tin(rng: Rng, pitch: float) -> Drawn:
    r = _u(rng, 35, 55)
    h = _u(rng, 60, 120)
    c = Canvas(2 * r if rng.random() < 0.5 else h, 2 * r, pitch)
    if c.w * pitch > 2 * r + 4:  # lying tin: a cylinder across x
        c.cylinder("tinplate", 0, 0, h, r, wall=0.25, axis="x")
        c.cylinder("food", 0, 0, h - 2, r - 0.3, axis="x")
        c.rect("tinplate", -h / 2 + 1, 0, 2.0, 2 * r, 0.25 * 2 * r / 2)
        c.rect("tinplate", h / 2 - 1, 0, 2.0, 2 * r, 0.25 * 2 * r / 2)
    else:  # standing tin: walls seen end-on, two lids and the food column
        c.disc("tinplate", 0, 0, r, h, hole_r=r - 0.25)
        c.disc("tinplate", 0, 0, r, 0.5)
        c.disc("food", 0, 0, r - 0.3, h - 2)
    return Drawn("food_tin", c, height_mm=h)


# -- bottles, jars, cosmetics -------------------------------------------------------------------------------
def _bottle(rng: Rng, pitch: float, kind: str, liquid: str, glass: bool) -> Drawn:
    r = _u(rng, 30, 45)
    body = _u(rng, 150, 230)
    neck = _u(rng, 50, 90)
    c = Canvas(2 * r + 2, body + neck, pitch)
    wall_mat, wall = ("glass", _u(rng, 2.5, 5.0)) if glass else ("polyester", 0.35)
    y_body = -neck / 2
    fill = _u(rng, 0.75, 1.0)
    c.cylinder(wall_mat, 0, y_body, body, r, wall=wall)
    c.cylinder(liquid, 0, y_body, body - 2 * wall, r - wall, fill=fill)
    c.rect(wall_mat, 0, y_body - body / 2, 2 * r, wall, 2 * r * 0.8)  # base seen edge-on
    c.cylinder(wall_mat, 0, body / 2 - neck / 2 + neck / 2, neck, r * 0.4, wall=wall)
    c.cylinder(liquid, 0, body / 2, neck * 0.5, r * 0.4 - wall, fill=fill)
    c.disc("aluminium" if glass else "pp", 0, body / 2 + neck / 2 - 5, r * 0.42, 3.0)
    return Drawn(kind, c, height_mm=2 * r)


def bottle_water(rng: Rng, pitch: float) -> Drawn:
    return _bottle(rng, pitch, "bottle_water", "water", glass=rng.random() < 0.3)


def bottle_wine(rng: Rng, pitch: float) -> Drawn:
    return _bottle(rng, pitch, "bottle_wine", "water", glass=True)


def bottle_spirits(rng: Rng, pitch: float) -> Drawn:
    return _bottle(rng, pitch, "bottle_spirits", "ethanol", glass=True)


def bottle_oil(rng: Rng, pitch: float) -> Drawn:
    return _bottle(rng, pitch, "bottle_oil", "oil", glass=rng.random() < 0.5)


def jar(rng: Rng, pitch: float) -> Drawn:
    r = _u(rng, 35, 50)
    c = Canvas(2 * r + 4, 2 * r + 4, pitch)
    h = _u(rng, 70, 120)
    c.disc("glass", 0, 0, r, h, hole_r=r - 3.5)
    c.disc("glass", 0, 0, r - 3.5, 4.0)
    c.disc("food", 0, 0, r - 3.5, h * 0.8)
    c.disc("tinplate", 0, 0, r + 1, 0.3)
    c.disc("tinplate", 0, 0, r + 1, 8.0, hole_r=r)
    return Drawn("jar", c, height_mm=h)


def cosmetics(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 110, 180), _u(rng, 140, 220)
    c = Canvas(w, ln, pitch)
    c.rect("polyester", 0, 0, w, ln, 1.5, r=15)  # wash bag
    c.wire("steel", [(-w / 2 + 10, -ln / 2 + 5), (w / 2 - 10, -ln / 2 + 5)], 1.2)
    for _ in range(int(rng.integers(3, 7))):
        x, y = _u(rng, -w / 3, w / 3), _u(rng, -ln / 3, ln / 3)
        choice = rng.integers(0, 4)
        if choice == 0:  # cream jar
            rr = _u(rng, 18, 30)
            c.disc("pp", x, y, rr, 40, hole_r=rr - 2)
            c.disc("cosmetic", x, y, rr - 2, 30)
        elif choice == 1:  # tube
            c.rect("cosmetic", x, y, 28, _u(rng, 80, 140), 12, r=8)
            c.rect("pe", x, y, 30, _u(rng, 80, 140), 0.6, r=8)
        elif choice == 2:  # lipstick / mascara: metal tube
            c.cylinder("aluminium", x, y, 70, 9, wall=0.5)
            c.cylinder("cosmetic", x, y, 50, 5)
        else:  # perfume
            c.rect("glass", x, y, 45, 60, 14, r=4)
            c.rect("ethanol", x, y, 38, 50, 30, r=4)
            c.disc("brass", x, y - 34, 6, 10)
    return Drawn("cosmetics", c, height_mm=60)


# -- small metal items ---------------------------------------------------------------------------------------
def keys(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(110, 110, pitch)
    c.disc("steel", 0, 0, 14, 1.6 * 2, hole_r=12.5)
    for k in range(int(rng.integers(2, 6))):
        a = _u(rng, 0, 2 * np.pi)
        ca, sa = np.cos(a), np.sin(a)
        mat = "brass" if rng.random() < 0.6 else "nickel"
        blade_len = _u(rng, 30, 45)

        def rot(px: float, py: float, ca: float = ca, sa: float = sa) -> tuple[float, float]:
            return (px * ca - py * sa, px * sa + py * ca)

        head = [rot(12, -12), rot(36, -13), rot(36, 13), rot(12, 12)]
        blade = [rot(36, -4), rot(36 + blade_len, -4), rot(38 + blade_len, 0), rot(36 + blade_len, 4),
                 rot(36, 4)]
        c.polygon(mat, head, 2.2)
        c.polygon(mat, blade, 2.0)
        if k == 0 and rng.random() < 0.5:  # car key fob
            c.rect("abs", 0, 38, 30, 55, 12, r=8)
            c.rect("pcb", 0, 38, 22, 40, 1.2)
            c.disc("steel", 0, 45, 10, 3.2)  # coin cell
    return Drawn("keys", c, height_mm=15)


def coins(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(90, 90, pitch)
    for _ in range(int(rng.integers(3, 12))):
        r = _u(rng, 8, 13.5)
        c.disc(["brass", "nickel", "copper", "steel"][int(rng.integers(0, 4))], _u(rng, -30, 30), _u(rng, -30, 30),
               r, _u(rng, 1.5, 2.3))
    return Drawn("coins", c, height_mm=5)


def belt_buckle(rng: Rng, pitch: float) -> Drawn:
    ln = _u(rng, 500, 900)
    c = Canvas(45, min(ln, 420), pitch)
    strap_l = min(ln, 420) - 60
    c.rect("leather", 0, 30, 35, strap_l, 3.5 * 2)
    c.frame("steel" if rng.random() < 0.5 else "zinc", 0, -strap_l / 2, 45, 55, 6, 4.0)
    c.rect("steel", 0, -strap_l / 2, 3, 45, 3.0)
    return Drawn("belt", c, height_mm=8)


def batteries(rng: Rng, pitch: float) -> Drawn:
    n = int(rng.integers(2, 9))
    c = Canvas(15 * n + 10, 56, pitch)
    for k in range(n):
        x = -7.5 * (n - 1) + 15 * k
        c.cylinder("steel", x, 0, 50, 7.2, wall=0.3)
        c.cylinder("zinc", x, 0, 44, 4.0)
        c.cylinder("food", x, 0, 44, 6.8, wall=2.8)  # MnO2 paste approximated by a dense organic-mineral mix
        c.cylinder("brass", x, 0, 40, 0.9)
    c.rect("pe", 0, 0, 15 * n + 6, 58, 0.4)
    return Drawn("batteries", c, height_mm=15)


def umbrella(rng: Rng, pitch: float) -> Drawn:
    ln = _u(rng, 230, 320)
    c = Canvas(60, ln, pitch)
    c.cylinder("nylon", 0, 0, ln - 40, 22, fill=0.1)
    c.cylinder("aluminium", 0, 0, ln, 5, wall=0.7)
    for k in range(8):
        x = -20 + 40 * k / 7
        c.wire("steel", [(x, -ln / 2 + 30), (x * 0.6, ln / 2 - 50)], 1.6)
    c.rect("abs", 0, ln / 2 - 20, 30, 40, 25, r=8)
    return Drawn("umbrella", c, height_mm=50)


def mug(rng: Rng, pitch: float) -> Drawn:
    r = _u(rng, 38, 48)
    c = Canvas(2 * r + 30, 2 * r + 4, pitch)
    h = _u(rng, 85, 105)
    c.disc("ceramic" if rng.random() < 0.7 else "steel", 0, 0, r, h, hole_r=r - 4)
    c.disc("ceramic", 0, 0, r - 4, 6)
    c.rect("ceramic", r + 10, 0, 22, 10, 60)
    return Drawn("mug", c, height_mm=h)


def toy(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 80, 200), _u(rng, 100, 250)
    c = Canvas(w, ln, pitch)
    for _ in range(int(rng.integers(2, 6))):
        if rng.random() < 0.5:
            c.rect("abs", _u(rng, -w / 4, w / 4), _u(rng, -ln / 4, ln / 4), _u(rng, 20, w / 2), _u(rng, 20, ln / 2),
                   3.0, r=4)
        else:
            c.ellipse("pe", _u(rng, -w / 4, w / 4), _u(rng, -ln / 4, ln / 4), _u(rng, 15, w / 4), _u(rng, 15, ln / 4),
                      _u(rng, 20, 50), dome=True)
    if rng.random() < 0.5:  # battery compartment and motor
        c.cylinder("steel", w / 5, 0, 50, 7.2, wall=0.3)
        c.cylinder("steel", w / 5 + 15, 0, 50, 7.2, wall=0.3)
        c.cylinder("copper", -w / 5, 0, 25, 10)
    if rng.random() < 0.5:  # plush filling
        c.ellipse("polyester", 0, 0, w / 2, ln / 2, 80 * 0.03, dome=True)
    return Drawn("toy", c, height_mm=60)


def headphones(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(180, 190, pitch)
    c.wire("abs", [*_wavy(rng, -70, 50, 70, 50, 3, 0), (70, 50)], 10)
    arc = [(80 * np.cos(a), 50 - 80 * np.sin(a)) for a in np.linspace(0.1, np.pi - 0.1, 20)]
    c.wire("steel", arc, 2.0)
    c.wire("abs", arc, 12)
    for side in (-1, 1):
        c.disc("abs", side * 70, 40, 40, 30, hole_r=36)
        c.disc("steel", side * 70, 40, 14, 5)  # magnet and pole piece
        c.disc("copper", side * 70, 40, 9, 3)
        c.disc("polyester", side * 70, 40, 36, 10)
    return Drawn("headphones", c, height_mm=60)


def pen(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(16, 150, pitch)
    c.cylinder("abs" if rng.random() < 0.7 else "aluminium", 0, 0, 140, 5, wall=1.0)
    c.cylinder("pe", 0, 5, 100, 1.5, wall=0.4)  # refill
    c.cylinder("brass", 0, -62, 8, 1.2)  # tip
    c.wire("steel", [(-1.5, 20 + 3 * k) for k in range(0, 12, 2)] + [(1.5, 21 + 3 * k) for k in range(0, 12, 2)],
           0.4)
    c.rect("steel", 5, 40, 2, 40, 1.0)  # clip
    return Drawn("pen", c, height_mm=10)


def glasses(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(150, 60, pitch)
    metal_frame = rng.random() < 0.5
    for sx in (-1, 1):
        c.ellipse("polyester", sx * 33, 0, 26, 20, 2.5)  # lenses (polycarbonate-like)
        if metal_frame:
            c.disc("nickel", sx * 33, 0, 27, 2.0, hole_r=25.8)
        else:
            c.disc("abs", sx * 33, 0, 29, 5.0, hole_r=25.5)
    c.rect("nickel" if metal_frame else "abs", 0, -5, 14, 3, 2.0)
    for sx in (-1, 1):  # folded temples with hinge screws
        c.rect("nickel" if metal_frame else "abs", sx * 20, 14, 55, 3, 4.0)
        c.disc("steel", sx * 58, -4, 1.5, 4)
    return Drawn("glasses", c, height_mm=40)


def watch(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(50, 200, pitch)
    r = _u(rng, 17, 23)
    c.disc("stainless" if rng.random() < 0.6 else "abs", 0, 0, r, 10, hole_r=r - 3)
    c.disc("stainless", 0, 0, r - 3, 1.2)  # case back
    c.disc("glass", 0, 0, r - 3, 1.5)
    c.disc("steel", 4, 3, 6, 2.0)  # battery / movement
    c.rect("brass", -3, -3, 16, 10, 1.0)
    strap_metal = rng.random() < 0.4
    c.rect("stainless" if strap_metal else "leather", 0, -r - 40, 20, 80, 2 * (1.2 if strap_metal else 2.5))
    c.rect("stainless" if strap_metal else "leather", 0, r + 40, 20, 80, 2 * (1.2 if strap_metal else 2.5))
    c.frame("stainless", 0, r + 75, 22, 14, 2, 3)
    return Drawn("watch", c, height_mm=15)


def wallet(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 90, 115), _u(rng, 100, 125)
    c = Canvas(w, ln, pitch)
    c.rect("leather", 0, 0, w, ln, 2 * 2.5, r=6)
    for k in range(int(rng.integers(2, 7))):  # cards
        c.rect("pvc", _u(rng, -5, 5), -ln / 2 + 45 + 4 * k, 86, 54, 0.76, r=3)
    if rng.random() < 0.5:  # a card with a chip
        c.rect("copper", -20, -ln / 2 + 50, 10, 8, 0.3)
    for _ in range(int(rng.integers(0, 6))):
        c.disc(["brass", "nickel", "copper"][int(rng.integers(0, 3))], _u(rng, -w / 3, w / 3),
               _u(rng, ln / 6, ln / 3), _u(rng, 8, 13), 2.0)
    c.rect("paper", 0, -5, w - 10, ln - 20, 0.1 * int(rng.integers(0, 8)))  # notes
    return Drawn("wallet", c, height_mm=20)


def power_bank(rng: Rng, pitch: float) -> Drawn:
    n = int(rng.integers(1, 4))
    c = Canvas(22 * n + 10, 100, pitch)
    c.rect("abs", 0, 0, 22 * n + 8, 98, 2 * 1.5, r=5)
    c.frame("abs", 0, 0, 22 * n + 8, 98, 1.5, 22)
    for k in range(n):  # 18650 cells lying: steel can around the roll
        x = -11 * (n - 1) + 22 * k
        c.cylinder("steel", x, -5, 65, 9, wall=0.25)
        c.cylinder("li_ion", x, -5, 63, 8.7)
    c.rect("pcb", 0, 42, 22 * n, 10, 1.6)
    c.rect("nickel", 0, 40, 22 * n, 2, 0.2)
    return Drawn("power_bank", c, group=Group.ELECTRONICS, height_mm=22)


# -- electronics ---------------------------------------------------------------------------------------------
def cable(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(200, 200, pitch)
    pts = _wavy(rng, -80, -80, 80, 80, 14, 12)
    c.wire("pvc", pts, _u(rng, 3.5, 6))
    c.wire("copper", pts, 1.0)
    c.wire("copper", [(x + 0.8, y) for x, y in pts], 1.0)
    c.rect("abs", pts[0][0], pts[0][1], 14, 30, 8, r=2)
    c.rect("nickel", pts[0][0], pts[0][1] - 18, 8, 12, 2)
    c.rect("abs", pts[-1][0], pts[-1][1], 12, 24, 7, r=2)
    return Drawn("cable", c, group=Group.ELECTRONICS, height_mm=10)


def charger(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 45, 70), _u(rng, 45, 90)
    c = Canvas(w + 200, ln + 200, pitch)
    c.rect("abs", 0, 0, w, ln, 2.5 * 2, r=5)
    c.frame("abs", 0, 0, w, ln, 2.5, 28)
    c.rect("pcb", 0, 0, w - 8, ln - 8, 1.6)
    c.rect("steel", -w / 6, 0, 18, 16, 14)  # transformer core
    c.rect("copper", -w / 6, 0, 20, 10, 5)
    c.cylinder("aluminium", w / 5, ln / 5, 18, 5)  # capacitor
    c.rect("brass", 0, -ln / 2 - 8, 2.5, 16, 6)
    c.rect("brass", 8, -ln / 2 - 8, 2.5, 16, 6)
    pts = _wavy(rng, 0, ln / 2, _u(rng, -90, 90), ln / 2 + 90, 10, 10)
    c.wire("pvc", pts, 3.5)
    c.wire("copper", pts, 1.0)
    return Drawn("charger", c, group=Group.ELECTRONICS, height_mm=30)


def phone(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 66, 78), _u(rng, 140, 165)
    c = Canvas(w, ln, pitch)
    c.rect("glass", 0, 0, w, ln, 0.7 * 2, r=8)
    c.frame("aluminium", 0, 0, w, ln, 2.0, 7.5)
    c.rect("li_ion", 0, ln / 10, w - 14, ln * 0.55, 4.5, r=2)
    c.rect("pcb", 0, -ln / 3, w - 12, ln / 4, 1.2)
    c.rect("steel", 0, -ln / 3, w / 3, 12, 1.0)  # shield cans
    c.disc("steel", -w / 4, -ln / 2 + 18, 7, 6)  # camera module
    c.rect("copper", 0, ln / 10, w - 16, ln * 0.5, 0.15)  # heat spreader
    return Drawn("phone", c, group=Group.ELECTRONICS, height_mm=9)


def tablet(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 160, 190), _u(rng, 240, 280)
    c = Canvas(w, ln, pitch)
    c.rect("glass", 0, 0, w, ln, 1.4, r=10)
    c.rect("aluminium", 0, 0, w, ln, 0.8, r=10)
    c.frame("aluminium", 0, 0, w, ln, 3, 6.5)
    c.rect("li_ion", -w / 5, 0, w * 0.35, ln * 0.6, 3.5, r=2)
    c.rect("li_ion", w / 5, 0, w * 0.35, ln * 0.6, 3.5, r=2)
    c.rect("pcb", 0, -ln / 2 + 30, w * 0.6, 35, 1.2)
    for k in range(6):
        c.disc("steel", (-1) ** k * (w / 2 - 8), -ln / 2 + 20 + k * 40, 1.6, 3)
    return Drawn("tablet", c, group=Group.ELECTRONICS, height_mm=8,
                 cavities=[(0, -ln / 2 + 30, w * 0.6, 35)])


def laptop(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 300, 360), _u(rng, 210, 250)
    c = Canvas(w, ln, pitch)
    metal = rng.random() < 0.6
    shell = "aluminium" if metal else "abs"
    c.rect(shell, 0, 0, w, ln, (1.0 if metal else 2.0) * 2, r=8)
    c.frame(shell, 0, 0, w, ln, 2.5, 18)
    c.rect("glass", 0, 0, w - 10, ln - 10, 1.0)  # display panel
    c.rect("pcb", 0, 0, w - 10, ln - 10, 0.6)  # backlight, keyboard membranes
    c.rect("aluminium", 0, -ln / 6, w - 30, ln / 2.5, 0.8)  # keyboard plate
    n_cells = int(rng.integers(3, 5))
    cell_w = (w - 60) / n_cells
    for k in range(n_cells):
        c.rect("li_ion", -w / 2 + 30 + cell_w * (k + 0.5), ln / 2 - 40, cell_w - 6, 55, 5.5, r=2)
    c.rect("pcb", -w / 6, -ln / 8, w / 2, ln / 3, 1.6)
    c.rect("steel", -w / 6 - 20, -ln / 8, 40, 40, 2.0)  # CPU shield + heatsink clamp
    heat = [(-w / 6 - 20, -ln / 8), (w / 4, -ln / 8 - 10), (w / 3, -ln / 4)]
    c.wire("copper", heat, 6)
    c.disc("aluminium", w / 3, -ln / 4, 28, 8, hole_r=8)  # fan
    for k in range(10):  # screws
        c.disc("steel", (-1) ** k * (w / 2 - 10), -ln / 2 + 12 + k * (ln - 24) / 9, 2.0, 5.0)
    cavities = [(w / 5, -ln / 8, w / 3.5, ln / 3), (-w / 4, ln / 2 - 40, w / 3, 45), (0, 0, w / 3, ln / 4)]
    return Drawn("laptop", c, group=Group.ELECTRONICS, height_mm=20, cavities=cavities)


def hairdryer(rng: Rng, pitch: float) -> Drawn:
    barrel_l, r = _u(rng, 170, 220), _u(rng, 30, 40)
    handle_l = _u(rng, 100, 140)
    c = Canvas(barrel_l + 10, 2 * r + handle_l, pitch)
    y0 = -handle_l / 2
    c.cylinder("abs", 0, y0, barrel_l, r, wall=2.5, axis="x")
    c.rect("abs", -barrel_l / 5, y0 + r + handle_l / 2 - 5, 38, handle_l, 30, r=10)
    c.cylinder("copper", -barrel_l / 4, y0, 30, r * 0.45, axis="x")  # motor windings
    c.cylinder("steel", -barrel_l / 4, y0, 34, r * 0.5, wall=3, axis="x")
    c.cylinder("ceramic", barrel_l / 6, y0, 70, r * 0.7, wall=1.5, axis="x")  # element former
    for k in range(12):  # heating coil
        x = barrel_l / 6 - 35 + 70 * k / 11
        c.wire("nickel", [(x, y0 - r * 0.65), (x + 3, y0 + r * 0.65)], 0.6)
    pts = _wavy(rng, -barrel_l / 5, y0 + r + handle_l, -barrel_l / 5 + _u(rng, -60, 60), y0 + r + handle_l + 5, 4, 3)
    c.wire("pvc", pts, 6)
    c.wire("copper", pts, 1.5)
    cavities = [(barrel_l / 6, y0, 70, 1.6 * r), (-barrel_l / 5, y0 + r + handle_l / 2 - 5, 22, handle_l * 0.7)]
    return Drawn("hairdryer", c, group=Group.ELECTRONICS, height_mm=2 * r, cavities=cavities)


def toaster(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 160, 200), _u(rng, 260, 310)
    c = Canvas(w, ln, pitch)
    h = _u(rng, 170, 200)
    c.rect("steel", 0, 0, w, ln, 0.6 * 2, r=20)  # top and bottom skins
    c.frame("steel", 0, 0, w, ln, 0.6, h)  # side walls seen end-on
    for sx in (-1, 1):  # bread slots: mica boards with nichrome
        x = sx * w / 5
        c.rect("glass", x, 0, 3, ln * 0.7, h * 0.5)
        for k in range(10):
            c.wire("nickel", [(x - 2, -ln * 0.33 + k * ln * 0.07), (x + 2, -ln * 0.30 + k * ln * 0.07)], 0.8)
        c.rect("steel", x - 12, 0, 1.5, ln * 0.7, h * 0.4)
        c.rect("steel", x + 12, 0, 1.5, ln * 0.7, h * 0.4)
    c.rect("abs", 0, ln / 2 - 12, w * 0.6, 18, 30)
    c.rect("pcb", w / 4, ln / 2 - 25, 30, 20, 1.6)
    cavities = [(0, -ln / 2 + 30, w * 0.6, 40), (0, 0, w / 5, ln * 0.6)]
    return Drawn("toaster", c, group=Group.ELECTRONICS, height_mm=h, cavities=cavities)


def iron(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 100, 125), _u(rng, 230, 270)
    c = Canvas(w, ln, pitch)
    plate = [(-w / 2, ln / 2), (w / 2, ln / 2), (w / 2, -ln / 6), (0, -ln / 2), (-w / 2, -ln / 6)]
    c.polygon("aluminium" if rng.random() < 0.6 else "steel", plate, 6.0)
    c.polygon("abs", [(x * 0.9, y * 0.9) for x, y in plate], 8.0)
    c.polygon("water", [(x * 0.6, y * 0.5 - ln / 10) for x, y in plate], 25.0 * _u(rng, 0, 1))
    c.wire("nickel", [(-w / 3, ln / 3), (0, -ln / 3), (w / 3, ln / 3)], 3)
    c.rect("abs", 0, ln / 6, 30, ln / 2, 35, r=10)
    pts = _wavy(rng, 0, ln / 2, _u(rng, -60, 60), ln / 2 + 20, 4, 2)
    c.wire("pvc", pts, 6)
    c.wire("copper", pts, 1.5)
    return Drawn("iron", c, group=Group.ELECTRONICS, height_mm=120, cavities=[(0, ln / 6, 24, ln / 2.5)])


BENIGN: Mapping[str, Callable[[Rng, float], Drawn]] = {
    "clothing": clothing,
    "book": book,
    "shoes": shoes,
    "food": food_block,
    "food_tin": food_tin,
    "bottle_water": bottle_water,
    "bottle_wine": bottle_wine,
    "bottle_spirits": bottle_spirits,
    "bottle_oil": bottle_oil,
    "jar": jar,
    "cosmetics": cosmetics,
    "keys": keys,
    "coins": coins,
    "belt": belt_buckle,
    "batteries": batteries,
    "umbrella": umbrella,
    "pen": pen,
    "glasses": glasses,
    "watch": watch,
    "wallet": wallet,
    "power_bank": power_bank,
    "mug": mug,
    "toy": toy,
    "headphones": headphones,
    "cable": cable,
    "charger": charger,
    "phone": phone,
    "tablet": tablet,
    "laptop": laptop,
    "hairdryer": hairdryer,
    "toaster": toaster,
    "iron": iron,
}
"""Every benign kind, written out (no import-time discovery)."""

HOSTS: tuple[str, ...] = ("laptop", "tablet", "hairdryer", "toaster", "iron")
"""Electronics that can hide a concealed object."""
