"""Threat library of the virtual scanner: firearm components, knives and concealment inserts.

Where it sits: beside ``sim/objects.py`` (same :class:`~sim.objects.Drawn` output), used by ``sim/scene.py``.
Firearm parts are drawn as they lie on the belt (on their side, so the X-ray sees the side profile); dimensions
follow common 9 mm pistols and AR-pattern bolt carriers. Steel path lengths are the sum of both walls the beam
crosses. Knives taper from spine to edge (a bevel) and have a tang through the handle. Concealment inserts
(screw clusters, metal plates, dense organic blocks) are sized to fit the ``cavities`` of electronics hosts.

Must not: know about item layout or output formats; do I/O. Geometry is silhouette-level on purpose: the
virtual scanner needs believable shapes and materials, not manufacturing drawings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from sim.objects import Drawn, Group, Rng, _u
from sim.shapes import Canvas


def _firearm(kind: str, canvas: Canvas, height_mm: float = 30.0) -> Drawn:
    return Drawn(kind, canvas, group=Group.FIREARM, threat=True, height_mm=height_mm)


def _draw_barrel(c: Canvas, x0: float, y: float, length: float) -> None:
    c.cylinder("steel", x0 + length / 2, y, length, 7.0, wall=2.5, axis="x")
    c.rect("steel", x0 + 18, y, 36, 15, 20)  # chamber block


def _draw_slide(c: Canvas, x0: float, y: float, length: float, height: float) -> None:
    prof = [(x0, y - height / 2), (x0 + length, y - height / 2), (x0 + length, y + height / 2 - 4),
            (x0 + length - 6, y + height / 2), (x0, y + height / 2)]
    c.polygon("steel", prof, 9.0)
    c.rect("steel", x0 + length * 0.55, y, length * 0.25, height * 0.45, -5.0)  # ejection port removes steel
    c.rect("steel", x0 + length - 8, y - height / 2 - 2, 3, 4, 6)  # front sight
    c.rect("steel", x0 + 8, y - height / 2 - 2, 8, 4, 10)  # rear sight


def _draw_spring(c: Canvas, x0: float, y: float, length: float, coil_d: float, wire_d: float, turns: int) -> None:
    xs = np.linspace(x0, x0 + length, 2 * turns + 1)
    pts = [(float(x), y + (coil_d / 2 if k % 2 else -coil_d / 2)) for k, x in enumerate(xs)]
    c.wire("steel", pts, wire_d)


def _draw_magazine(c: Canvas, x: float, y: float, rounds: int, angle_in_grip: bool = False) -> None:
    w, ln = 33.0, 128.0
    c.frame("steel", x, y, w, ln, 1.2, 22.0)  # body side walls seen edge-on (front/back)
    c.rect("steel", x, y, w, ln, 2 * 0.9)  # both large walls
    c.rect("pom", x, y + ln / 2 - 6, w + 4, 12, 22)  # floor plate
    _draw_spring_vertical(c, x, y + 10, 70, 26, 1.0, 7)
    for k in range(rounds):  # cartridges stacked double-stack in side view: brass case + lead/copper bullet
        cy = y - ln / 2 + 8 + k * 8.5
        if cy > y + ln / 2 - 50:
            break
        cx = x + (3 if k % 2 else -3)
        c.cylinder("brass", cx - 4, cy, 19, 4.9, wall=0.45, axis="x")
        c.cylinder("lead", cx + 11, cy, 12, 4.5, axis="x")
        c.cylinder("copper", cx + 11, cy, 13, 4.6, wall=0.4, axis="x")


def _draw_spring_vertical(c: Canvas, x: float, y: float, length: float, coil_w: float, wire_d: float,
                          turns: int) -> None:
    ys = np.linspace(y - length / 2, y + length / 2, 2 * turns + 1)
    pts = [(x + (coil_w / 2 if k % 2 else -coil_w / 2), float(yy)) for k, yy in enumerate(ys)]
    c.wire("steel", pts, wire_d)


def barrel(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 95, 125)
    c = Canvas(length + 6, 30, pitch)
    _draw_barrel(c, -length / 2, 0, length)
    return _firearm("barrel", c, 22)


def slide(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 165, 195)
    c = Canvas(length + 6, 45, pitch)
    _draw_slide(c, -length / 2, 0, length, _u(rng, 27, 32))
    return _firearm("slide", c, 25)


def bolt_carrier(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 170, 190)
    c = Canvas(length + 40, 50, pitch)
    c.cylinder("steel", 0, 0, length, 12.5, axis="x")
    c.cylinder("steel", -length / 2 + 30, 0, 40, 12.5, axis="x", fill=-0.35)  # cam-pin window and lightening
    c.rect("steel", -length / 2 + 60, -16, 45, 8, 12)  # gas key on top
    c.cylinder("steel", length / 2 + 15, 0, 30, 8, axis="x")  # bolt head
    c.cylinder("steel", -length / 2 - 10, 0, 25, 4, axis="x")  # firing pin tail
    return _firearm("bolt_carrier", c, 25)


def spring(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 70, 110)
    c = Canvas(length + 10, 20, pitch)
    _draw_spring(c, -length / 2, 0, length, _u(rng, 8, 12), _u(rng, 0.9, 1.4), int(rng.integers(12, 20)))
    if rng.random() < 0.5:  # guide rod
        c.cylinder("steel", 0, 0, length, 2.0, axis="x")
    return _firearm("spring", c, 12)


def spring_pin(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(40, 14, pitch)
    for k in range(int(rng.integers(1, 4))):
        c.cylinder("steel", 0, -4 + 4 * k, _u(rng, 14, 25), 1.6, wall=0.5, axis="x")
    return _firearm("spring_pin", c, 4)


def magazine(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(45, 140, pitch)
    _draw_magazine(c, 0, 0, int(rng.integers(0, 16)))
    return _firearm("magazine", c, 35)


def trigger_assembly(rng: Rng, pitch: float) -> Drawn:
    c = Canvas(75, 55, pitch)
    c.polygon("steel", [(-30, -10), (20, -12), (25, -4), (-28, 0)], 6)  # trigger bar
    c.polygon("steel", [(-5, -2), (5, -2), (8, 20), (0, 24), (-6, 12)], 6)  # trigger shoe
    c.rect("steel", 22, 5, 18, 22, 8)  # housing
    c.disc("steel", -20, 12, 5, 6)  # pivot
    _draw_spring(c, -30, 18, 22, 5, 0.6, 6)
    c.cylinder("steel", 5, -18, 30, 1.5, axis="x")  # pin
    return _firearm("trigger_assembly", c, 15)


def _draw_frame(c: Canvas, x0: float, y0: float, length: float) -> None:
    grip = [(x0 + 5, y0), (x0 + length, y0), (x0 + length, y0 + 22), (x0 + 60, y0 + 24), (x0 + 45, y0 + 110),
            (x0 + 8, y0 + 112), (x0 + 14, y0 + 24), (x0 + 5, y0 + 18)]
    c.polygon("nylon", grip, 26)
    guard = [(x0 + 58, y0 + 22), (x0 + 100, y0 + 22), (x0 + 96, y0 + 50), (x0 + 60, y0 + 48)]
    c.polygon("nylon", guard, 10)
    c.polygon("nylon", [(x0 + 64, y0 + 26), (x0 + 92, y0 + 26), (x0 + 89, y0 + 44), (x0 + 66, y0 + 42)], -10)
    c.rect("steel", x0 + 20, y0 + 4, 20, 5, 8)  # rail inserts
    c.rect("steel", x0 + length - 30, y0 + 4, 20, 5, 8)


def pistol_frame(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 160, 190)
    c = Canvas(length + 10, 125, pitch)
    _draw_frame(c, -length / 2, -56, length)
    return _firearm("pistol_frame", c, 30)


def pistol(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 170, 200)
    c = Canvas(length + 10, 150, pitch)
    x0, y0 = -length / 2, -60.0
    _draw_frame(c, x0, y0 + 30, length)
    _draw_slide(c, x0, y0 + 15, length, 30)
    _draw_barrel(c, x0 + length * 0.3, y0 + 15, length * 0.65)
    _draw_spring(c, x0 + length * 0.45, y0 + 24, length * 0.45, 8, 1.0, 14)
    c.polygon("steel", [(x0 + 62, y0 + 52), (x0 + 72, y0 + 52), (x0 + 74, y0 + 70), (x0 + 64, y0 + 72)], 5)
    if rng.random() < 0.8:
        _draw_magazine(c, x0 + 30, y0 + 95, int(rng.integers(5, 16)))
    return _firearm("pistol", c, 35)


# -- knives --------------------------------------------------------------------------------------------------
def _knife(kind: str, canvas: Canvas) -> Drawn:
    return Drawn(kind, canvas, group=Group.KNIFE, threat=True, height_mm=20)


def kitchen_knife(rng: Rng, pitch: float) -> Drawn:
    blade_l, blade_w = _u(rng, 140, 240), _u(rng, 28, 48)
    handle_l = _u(rng, 100, 130)
    c = Canvas(blade_l + handle_l + 6, blade_w + 6, pitch)
    x0 = -(blade_l + handle_l) / 2 + handle_l
    y_spine = -blade_w / 2
    # straight spine, edge curving up to a point level with the spine (a chef's knife)
    edge = [(x0 + blade_l * f, y_spine + blade_w * (1.0 - max(0.0, (f - 0.45) / 0.55) ** 1.6 * 0.92))
            for f in np.linspace(0.95, 0.0, 12)]
    blade = [(x0, y_spine), (x0 + blade_l * 0.9, y_spine + blade_w * 0.02), (x0 + blade_l, y_spine + blade_w * 0.08),
             *edge]
    c.polygon("stainless", blade, _u(rng, 2.0, 3.0), taper_axis="y", taper_from=1.0, taper_to=0.15)
    c.rect("stainless", x0 - handle_l / 2, y_spine + 9, handle_l - 4, 12, 2.5)  # full tang
    c.rect("pom" if rng.random() < 0.5 else "wood", x0 - handle_l / 2, y_spine + 9, handle_l, 22, 16, r=6)
    for k in range(3):
        c.disc("brass", x0 - handle_l * (0.2 + 0.3 * k), y_spine + 9, 2.5, 16)
    return _knife("kitchen_knife", c)


def folding_knife(rng: Rng, pitch: float) -> Drawn:
    handle_l = _u(rng, 90, 125)
    open_blade = rng.random() < 0.5
    blade_l = handle_l * 0.8
    c = Canvas(handle_l + (blade_l if open_blade else 0) + 6, 34, pitch)
    x0 = -(handle_l + (blade_l if open_blade else 0)) / 2
    c.rect("aluminium" if rng.random() < 0.5 else "pom", x0 + handle_l / 2, 0, handle_l, 26, 6, r=8)
    c.rect("stainless", x0 + handle_l / 2, 0, handle_l, 24, 2 * 1.2, r=8)  # liners
    c.disc("steel", x0 + handle_l - 10, -4, 4, 14)  # pivot
    bx = x0 + handle_l - 10 if open_blade else x0 + 8
    blade = [(bx, -10), (bx + blade_l, -8), (bx + blade_l * 1.02, -6), (bx + blade_l * 0.7, 8),
             (bx, 8)]
    c.polygon("stainless", blade, 3.0, taper_axis="y", taper_from=1.0, taper_to=0.2)
    return _knife("folding_knife", c)


def dagger(rng: Rng, pitch: float) -> Drawn:
    blade_l = _u(rng, 120, 200)
    c = Canvas(blade_l + 130, 70, pitch)
    x0 = -(blade_l + 120) / 2 + 120
    c.polygon("stainless", [(x0, -14), (x0 + blade_l, 0), (x0, 14)], 5.0)
    c.polygon("stainless", [(x0, -14), (x0 + blade_l, 0), (x0, 0)], -2.0)  # double bevel, thin edges
    c.rect("brass", x0 - 4, 0, 8, 60, 10)  # guard
    c.rect("stainless", x0 - 55, 0, 100, 8, 6)  # tang
    c.rect("leather", x0 - 55, 0, 100, 26, 20, r=8)
    c.disc("brass", x0 - 108, 0, 10, 18)  # pommel
    return _knife("dagger", c)


def utility_knife(rng: Rng, pitch: float) -> Drawn:
    length = _u(rng, 130, 165)
    c = Canvas(length + 25, 30, pitch)
    c.rect("abs", 0, 0, length, 20, 12, r=5)
    c.rect("steel", 0, 0, length, 18, 1.0)
    c.polygon("steel", [(length / 2 - 30, -9), (length / 2 + 18, -9), (length / 2 - 5, 8), (length / 2 - 30, 8)], 0.6)
    return _knife("utility_knife", c)


# -- concealment inserts -------------------------------------------------------------------------------------
def _conceal(kind: str, canvas: Canvas) -> Drawn:
    return Drawn(kind, canvas, group=Group.CONCEALMENT, threat=True, height_mm=10)


def screw_cluster(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 30, 60), _u(rng, 30, 60)
    c = Canvas(w + 20, ln + 20, pitch)
    for _ in range(int(rng.integers(8, 25))):
        a = _u(rng, 0, np.pi)
        x, y, sl = _u(rng, -w / 2, w / 2), _u(rng, -ln / 2, ln / 2), _u(rng, 10, 30)
        dx, dy = np.cos(a) * sl / 2, np.sin(a) * sl / 2
        c.wire("steel", [(x - dx, y - dy), (x + dx, y + dy)], _u(rng, 2.5, 4.0))
        c.disc("steel", x - dx, y - dy, 3.2, 2.5)
    return _conceal("screw_cluster", c)


def metal_plate(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 30, 90), _u(rng, 25, 70)
    c = Canvas(w, ln, pitch)
    c.rect("steel" if rng.random() < 0.7 else "lead", 0, 0, w, ln, _u(rng, 1.5, 4.0), r=2)
    return _conceal("metal_plate", c)


def organic_block(rng: Rng, pitch: float) -> Drawn:
    w, ln = _u(rng, 30, 90), _u(rng, 25, 70)
    c = Canvas(w, ln, pitch)
    c.rect("organic_block", 0, 0, w, ln, _u(rng, 12, 35), r=4)
    c.rect("pe", 0, 0, w + 2, ln + 2, 0.3, r=4)
    if rng.random() < 0.5:  # wires taped on
        c.wire("copper", [(-w / 2, 0), (0, ln / 3), (w / 2 + 8, ln / 2)], 0.8)
    return _conceal("organic_block", c)


FIREARM_PARTS: Mapping[str, Callable[[Rng, float], Drawn]] = {
    "barrel": barrel,
    "slide": slide,
    "bolt_carrier": bolt_carrier,
    "spring": spring,
    "spring_pin": spring_pin,
    "magazine": magazine,
    "trigger_assembly": trigger_assembly,
    "pistol_frame": pistol_frame,
    "pistol": pistol,
}
KNIVES: Mapping[str, Callable[[Rng, float], Drawn]] = {
    "kitchen_knife": kitchen_knife,
    "folding_knife": folding_knife,
    "dagger": dagger,
    "utility_knife": utility_knife,
}
CONCEALMENTS: Mapping[str, Callable[[Rng, float], Drawn]] = {
    "screw_cluster": screw_cluster,
    "metal_plate": metal_plate,
    "organic_block": organic_block,
}
CONCEALABLE_FIREARM_PARTS: tuple[str, ...] = ("barrel", "spring", "spring_pin", "trigger_assembly", "magazine")
"""Parts small enough to be hidden inside a laptop, hairdryer or toaster."""

THREATS: Mapping[str, Callable[[Rng, float], Drawn]] = {**FIREARM_PARTS, **KNIVES, **CONCEALMENTS}
