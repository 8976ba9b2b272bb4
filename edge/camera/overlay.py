"""The one overlay renderer: screening results on an exit-camera frame or on the X-ray itself, as a capped JPEG.

Where it sits: the end of the *map* stage; its bytes go to MQTT (``images/<item_id>``) and the audit store.
Inputs are plain frozen dataclasses in X-ray pixels, so this module does not depend on the pipeline's records.
One palette for both pictures: anomalous objects red, benign ones green, sub-component parts thinner, the item
outline white-on-black. On the camera frame lens distortion bends straight X-ray edges the way the lens does.
``overlay_for_item`` never raises on camera trouble and waits only when asked (``wait_until_mono_s``: for an item
still on its way to the camera, bounded by the caller): it returns an ``Overlay`` whose ``jpeg`` is
``None`` with a ``reason``. Every outline is mapped onto the frame once (``map_outline``) and the same points serve
the drawing and the ``polygon_camera`` outlines published with the decision (``Overlay.outlines``).

:func:`fit_image` is the one JPEG size cap: the map stage applies it once, so the MQTT sink's own check
(``edge.publish.images.fit_jpeg``) finds the picture under its cap and never decodes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.camera.mapping import CameraMapper, map_outline
from edge.camera.ring import FrameRing
from edge.camera.select import FrameChoice, ItemTravel, NoFrame, await_frame, select_frame

FloatArray = npt.NDArray[np.float64]
RED = (40, 40, 235)
"""BGR of anomalous objects and parts (both pictures)."""
GREEN = (60, 200, 60)
"""BGR of benign objects and parts (both pictures)."""
ORANGE = (0, 150, 255)
MAGENTA = (220, 60, 220)
REASON_COLOURS: dict[str, tuple[int, int, int]] = {"known": RED, "classifier": ORANGE, "anomaly": MAGENTA}
"""BGR of an alarming object by its first reason (known threat class, classifier, anomaly scorer), so the
operator sees at a glance which signal raised it; the legend names them."""
REASON_NAMES = {"known": "known threat class", "classifier": "classifier", "anomaly": "anomaly"}
WHITE = (245, 245, 245)
JPEG_QUALITIES = (90, 85, 80, 70, 60, 50, 40, 30)
"""Qualities tried, best first, before the picture is halved in size."""


def _poly(a: npt.ArrayLike) -> FloatArray:
    arr = np.array(a, dtype=np.float64).reshape(-1, 2)
    if arr.shape[0] < 3 or not np.all(np.isfinite(arr)):
        raise ValueError(f"a polygon needs >= 3 finite (x, y) points, got {arr.shape[0]}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True)
class OverlayObject:
    """One screened object.

    Attributes:
        polygon_px: (N, 2) outline in X-ray px (column, row), N >= 3.
        anomalous: red when true, green otherwise.
        label: short text drawn beside it (kind, score).
        thin: a sub-component part of an object: drawn with a thinner line.
        colour: BGR of an anomalous object (its reason's, ``REASON_COLOURS``); None = red.
    """

    polygon_px: FloatArray
    anomalous: bool
    label: str = ""
    thin: bool = False
    colour: tuple[int, int, int] | None = None

    @property
    def drawn_colour(self) -> tuple[int, int, int]:
        """Its reason's colour (red by default) when anomalous, green otherwise."""
        return (self.colour or RED) if self.anomalous else GREEN

    def __post_init__(self) -> None:
        object.__setattr__(self, "polygon_px", _poly(self.polygon_px))


@dataclass(frozen=True, slots=True)
class ItemOverlayInput:
    """What to draw for one item.

    Attributes:
        item_id: for the caption.
        outline_px: (N, 2) item outline in X-ray px; ``None`` = whole scanned area (all rows, all channels).
        objects: screened objects.
        verdict: caption text, e.g. ``ALARM``.
        height_mm: height above the belt of the surface to map onto (parcel top); ``None`` = calibration plane.
    """

    item_id: str
    objects: tuple[OverlayObject, ...]
    outline_px: FloatArray | None = None
    verdict: str = ""
    height_mm: float | None = None
    legend: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    """(text, BGR) entries drawn bottom left: the colours of the alarm reasons on this picture."""

    def __post_init__(self) -> None:
        if self.outline_px is not None:
            object.__setattr__(self, "outline_px", _poly(self.outline_px))


@dataclass(frozen=True, slots=True)
class Overlay:
    """Result of an overlay attempt: ``jpeg`` or a ``reason`` why there is none.

    ``outlines`` holds, per ``ItemOverlayInput.objects`` entry in order, its vertices mapped onto the chosen
    frame ((N, 2) distorted camera px, the same N as ``polygon_px``); empty when no frame was chosen.
    """

    jpeg: bytes | None
    reason: str | None = None
    frame_t_mono_s: float | None = None
    travel_mm: float | None = None
    quality: int | None = None
    outlines: tuple[FloatArray, ...] = ()


@dataclass(frozen=True, slots=True)
class FittedJpeg:
    """A picture encoded under a byte cap: the bytes, the quality used and the encoded size in pixels."""

    jpeg: bytes
    quality: int
    width: int
    height: int


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> FloatArray:
    """Axis-aligned box (X-ray px, inclusive pixel bounds) as a 4-point polygon on the pixel edges."""
    return np.array([[x0 - 0.5, y0 - 0.5], [x1 + 0.5, y0 - 0.5], [x1 + 0.5, y1 + 0.5], [x0 - 0.5, y1 + 0.5]])


def mask_polygons(mask: npt.NDArray[np.bool_] | npt.NDArray[np.uint8], offset_px: tuple[float, float] = (0.0, 0.0),
                  min_area_px: float = 4.0) -> list[FloatArray]:
    """Outer contours of a binary mask as polygons in X-ray px (``offset_px`` = mask's top-left pixel)."""
    m = (np.asarray(mask, dtype=np.float64) > 0).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        if float(cv2.contourArea(c)) < min_area_px or len(c) < 3:
            continue
        out.append(c.reshape(-1, 2).astype(np.float64) + np.asarray(offset_px, dtype=np.float64))
    return out


def draw_overlay(
    frame: npt.NDArray[np.uint8],
    mapper: CameraMapper,
    travel_mm: float,
    item: ItemOverlayInput,
    xray_shape: tuple[int, int] | None = None,
) -> npt.NDArray[np.uint8]:
    """Draw on a copy of ``frame``; ``xray_shape`` (rows, channels) gives the default outline."""
    return _draw_camera(frame, mapper, travel_mm, item, xray_shape)[0]


def _draw_camera(
    frame: npt.NDArray[np.uint8],
    mapper: CameraMapper,
    travel_mm: float,
    item: ItemOverlayInput,
    xray_shape: tuple[int, int] | None,
) -> tuple[npt.NDArray[np.uint8], tuple[FloatArray, ...]]:
    """The drawn frame and each object's vertices on it (input order), every outline mapped once."""
    img = np.array(frame, dtype=np.uint8, copy=True)
    h, w = img.shape[:2]
    thick = max(2, round(min(h, w) / 300))
    outline = item.outline_px
    if outline is None and xray_shape is not None:
        outline = box_polygon(0, 0, xray_shape[1] - 1, xray_shape[0] - 1)
    if outline is not None:
        pts = _to_int(map_outline(mapper, outline, travel_mm, item.height_mm)[0])
        cv2.polylines(img, [pts], True, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, WHITE, thick, cv2.LINE_AA)
    shade = img.copy()
    outlines = [map_outline(mapper, o.polygon_px, travel_mm, item.height_mm) for o in item.objects]
    order = sorted(range(len(item.objects)), key=lambda i: item.objects[i].anomalous)  # red on top
    mapped = [(item.objects[i], _to_int(outlines[i][0])) for i in order]
    for o, pts in mapped:
        if o.anomalous:
            cv2.fillPoly(shade, [pts], o.drawn_colour, cv2.LINE_AA)
    img = np.asarray(cv2.addWeighted(shade, 0.35, img, 0.65, 0), dtype=np.uint8)
    for o, pts in mapped:
        colour = o.drawn_colour
        cv2.polylines(img, [pts], True, colour, max(1, thick // 2) if o.thin else thick, cv2.LINE_AA)
        if o.label:
            x, y = pts[:, 0, 0].min(), pts[:, 0, 1].min()
            _text(img, o.label, (int(x), int(max(y - 6, 14))), colour)
    caption = " ".join(s for s in (item.verdict, item.item_id) if s)
    if caption:
        _text(img, caption, (10, 30), RED if item.verdict.upper() == "ALARM" else WHITE, scale=0.9)
    draw_legend(img, item.legend)
    return np.asarray(img, dtype=np.uint8), tuple(vertices for _, vertices in outlines)


def draw_legend(img: npt.NDArray[np.uint8], legend: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    """Colour swatches and their meaning, bottom left, on a dark band (in place)."""
    if not legend:
        return
    h = img.shape[0]
    scale = max(0.4, min(0.7, h / 900))
    step = int(22 * scale / 0.6)
    top = h - 8 - step * len(legend)
    width = 40 + max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t, _ in legend)
    cv2.rectangle(img, (2, max(0, top - 6)), (min(img.shape[1] - 1, width + 8), h - 2), (20, 20, 20), -1)
    for k, (text, colour) in enumerate(legend):
        y = top + k * step + step // 2
        cv2.rectangle(img, (8, y - 6), (26, y + 6), colour, -1)
        cv2.putText(img, text, (34, y + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, 1, cv2.LINE_AA)


def draw_on_xray(canvas: npt.NDArray[np.uint8], objects: Sequence[OverlayObject],
                 legend: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> npt.NDArray[np.uint8]:
    """Draw ``objects`` on a BGR X-ray picture (in place; returned): the camera overlay's palette, outlines only.

    Parts (``thin``) first, benign before anomalous so that a shared edge reads red; then the objects' own
    outlines, anomalous ones thicker.
    """
    parts = sorted((o for o in objects if o.thin), key=lambda o: o.anomalous)
    whole = sorted((o for o in objects if not o.thin), key=lambda o: o.anomalous)
    for o in parts + whole:
        points = np.round(o.polygon_px).astype(np.int32).reshape(-1, 1, 2)
        thickness = 1 if o.thin else (3 if o.anomalous else 2)
        cv2.polylines(canvas, [points], True, o.drawn_colour, thickness, cv2.LINE_AA)
        if o.label and not o.thin and o.anomalous:
            x, y = int(points[:, 0, 0].min()), int(points[:, 0, 1].min())
            _text(canvas, o.label, (max(x, 0), max(y - 4, 12)), o.drawn_colour, scale=0.4)
    draw_legend(canvas, legend)
    return canvas


def fit_image(img: npt.NDArray[np.uint8], max_bytes: int, quality: int = 90) -> FittedJpeg:
    """The one JPEG size cap: encode at ``quality``, then at falling qualities, then halve the size, until the
    bytes fit ``max_bytes``.

    Raises:
        ValueError: the cap is under 2,000 bytes, or even a 64-pixel picture does not fit.
    """
    if max_bytes < 2000:
        raise ValueError(f"max_bytes {max_bytes} is too small for any useful JPEG (>= 2000)")
    cur = img
    while True:
        for q in (quality, *(q for q in JPEG_QUALITIES if q < quality)):
            ok, buf = cv2.imencode(".jpg", cur, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and buf.size <= max_bytes:
                return FittedJpeg(buf.tobytes(), q, int(cur.shape[1]), int(cur.shape[0]))
        if min(cur.shape[:2]) < 64:
            raise ValueError(f"cannot fit the overlay into {max_bytes} bytes")
        cur = np.asarray(cv2.resize(cur, (cur.shape[1] // 2, cur.shape[0] // 2), interpolation=cv2.INTER_AREA),
                         dtype=np.uint8)


def encode_jpeg(img: npt.NDArray[np.uint8], max_bytes: int, quality: int = 90) -> tuple[bytes, int]:
    """JPEG no larger than ``max_bytes`` (:func:`fit_image`). Returns (bytes, quality)."""
    fitted = fit_image(img, max_bytes, quality)
    return fitted.jpeg, fitted.quality


def overlay_for_item(
    ring: FrameRing,
    mapper: CameraMapper | None,
    item: ItemOverlayInput,
    travel: ItemTravel,
    mm_per_count: float,
    *,
    xray_shape: tuple[int, int] | None = None,
    max_bytes: int = 250_000,
    tolerance_mm: float = 120.0,
    wait_until_mono_s: float | None = None,
) -> Overlay:
    """Select a frame, draw, encode; every failure becomes ``Overlay(None, reason)``, never an exception.

    ``wait_until_mono_s``: while the item has not reached the camera, wait for it until then
    (:func:`edge.camera.select.await_frame`); ``None`` never waits.
    """
    if mapper is None:
        return Overlay(None, "camera not calibrated: no homography (run `edge calibrate homography`)")
    view = mapper.view_centre_travel_mm(item.height_mm)
    if wait_until_mono_s is None:
        choice = select_frame(ring, travel, view, mm_per_count, tolerance_mm)
    else:
        choice = await_frame(ring, travel, view, mm_per_count, tolerance_mm, wait_until_mono_s)
    if isinstance(choice, NoFrame):
        return Overlay(None, choice.reason)
    return _render_choice(choice, mapper, item, xray_shape, max_bytes)


def _render_choice(choice: FrameChoice, mapper: CameraMapper, item: ItemOverlayInput,
                   xray_shape: tuple[int, int] | None, max_bytes: int) -> Overlay:
    try:
        img, outlines = _draw_camera(choice.frame.image, mapper, choice.travel_mm, item, xray_shape)
        jpeg, q = encode_jpeg(img, max_bytes)
    except (cv2.error, ValueError) as exc:
        return Overlay(None, f"overlay rendering failed: {exc}", choice.frame.t_mono_s, choice.travel_mm)
    return Overlay(jpeg, None, choice.frame.t_mono_s, choice.travel_mm, q, outlines)


def _to_int(pts: FloatArray) -> npt.NDArray[np.int32]:
    # cv2 drawing with shift=0 wants integers; clip so that wild points far outside the frame stay drawable
    return np.clip(np.rint(pts), -10_000, 10_000).astype(np.int32).reshape(-1, 1, 2)


def _text(img: npt.NDArray[np.uint8], text: str, org: tuple[int, int], colour: tuple[int, int, int],
          scale: float = 0.6) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)


def objects_from_boxes(boxes: Sequence[tuple[float, float, float, float]], anomalous: Sequence[bool],
                       labels: Sequence[str] | None = None) -> tuple[OverlayObject, ...]:
    """Convenience: (x0, y0, x1, y1) X-ray px boxes to overlay objects."""
    labels = labels if labels is not None else [""] * len(boxes)
    return tuple(OverlayObject(box_polygon(*b), bool(a), lab) for b, a, lab in zip(boxes, anomalous, labels,
                                                                                       strict=True))
