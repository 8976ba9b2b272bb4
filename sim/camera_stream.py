"""The virtual exit camera as a live video stream: MJPEG over HTTP, the way many IP cameras serve it.

Why a stream and not frames handed to the ring: the box's capture thread (``edge.camera.capture``) opens a camera
by URL with ``cv2.VideoCapture`` and stamps each frame with the belt position when it reads it; the demo and the
tests must go through that same port, with its real latency, so that what they measure is what a lane gets.

A render thread makes a frame for every ``1 / fps`` s instant: the belt travel then comes from ``travel_mm_at``
(the same belt clock that makes the encoder counts the firmware reports), parcels are those added with
``add_parcel`` (placed at the belt travel where their X-ray line 0 was), and the frame is JPEG-encoded and handed
to every connected client (``multipart/x-mixed-replace``) at its instant (rendered ahead; see
``_render_loop``). Each frame's truth (its instant and belt travel, and a
small thumbnail) is kept in ``history`` so tests can tell which frame the box used and where the parcel really
was in it.

Must not: be imported by ``edge/``.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection

import cv2
import numpy as np
import numpy.typing as npt

from sim.camera import CameraSpec, ExitCamera, PlacedFootprint

THUMB_SIZE = (96, 54)
"""Width, height of the thumbnails kept per frame (frame identification in tests)."""


@dataclass(frozen=True, slots=True)
class StreamedFrame:
    """Truth of one frame the stream served: its number, exposure instant, belt travel and a grey thumbnail."""

    seq: int
    t_mono_s: float
    travel_mm: float
    thumb: npt.NDArray[np.uint8] = field(repr=False)


class VirtualCameraStream:
    """Serves ``camera`` at ``http://127.0.0.1:<port>/video.mjpg`` while started."""

    def __init__(self, camera: ExitCamera, travel_mm_at: Callable[[float], float], *, quality: int = 90,
                 history: int = 2000, view_margin_mm: float = 1500.0, lead_s: float = 2.5, max_late_s: float = 0.03,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.camera = camera
        self._travel_at = travel_mm_at
        self._quality = quality
        self._margin = view_margin_mm
        self._clock = clock
        self._parcels: list[PlacedFootprint] = []
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._latest: tuple[int, bytes] | None = None
        self.history: collections.deque[StreamedFrame] = collections.deque(maxlen=history)
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []
        self._lead = lead_s
        self._ahead: queue.Queue[tuple[float, float, bytes, npt.NDArray[np.uint8]]] = queue.Queue()
        self._max_late = max_late_s
        self.render_cpu_s = 0.0
        self.dropped = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/video.mjpg"

    def add_parcel(self, placed: PlacedFootprint) -> None:
        """A parcel now on the belt (``item_start_travel_mm`` on the travel scale of ``travel_mm_at``)."""
        with self._lock:
            self._parcels.append(placed)

    def start(self) -> VirtualCameraStream:
        for name, target in (("virtual-camera-http", self._server.serve_forever),
                             ("virtual-camera", self._render_loop), ("virtual-camera-out", self._release_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._new:
            self._new.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5.0)

    def _visible(self, travel_mm: float) -> list[PlacedFootprint]:
        view = self.camera.view_centre_travel_mm()
        with self._lock:
            # parcels long past the camera never come back: forget them
            self._parcels = [p for p in self._parcels if travel_mm - p.item_start_travel_mm < view + 3 * self._margin]
            return [p for p in self._parcels
                    if abs(travel_mm - p.item_start_travel_mm - view) < self._margin]

    def _render_loop(self) -> None:
        """Frame k is exposed at ``t0 + k / fps`` and delivered at that instant (``_release_loop``). It is rendered
        up to ``lead_s`` ahead (the belt is a clock, so its position then is known; the sim frame source renders
        items ahead the same way), so that render time (tens of ms, seconds on a starved machine) neither delays
        a frame beyond what the box can know of nor loses frames to short stalls. Instants the renderer could
        not reach in time are dropped (``dropped``), as a camera drops frames it cannot deliver, rather than
        delivered stale."""
        period = 1.0 / self.camera.spec.fps
        rng = np.random.default_rng(self.camera.seed + 1000)
        t0 = self._clock() + min(self._lead, 0.5)
        k = 0
        while not self._stop.is_set():
            t = t0 + k * period
            wait = t - self._lead - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return
            now = self._clock()
            if now > t:  # fell behind: skip to the next instant still ahead
                skip = int(np.ceil((now - t0) / period)) - k
                self.dropped += skip
                k += skip
                continue
            started = time.process_time()
            travel = self._travel_at(t)
            img = self.camera.render(travel, parcels=self._visible(travel), rng=rng)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
            thumb = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), THUMB_SIZE, interpolation=cv2.INTER_AREA)
            self.render_cpu_s += time.process_time() - started
            k += 1
            if ok:
                self._ahead.put((t, travel, buf.tobytes(), np.asarray(thumb, np.uint8)))

    def _release_loop(self) -> None:
        """Hand each rendered frame to the clients at its instant (late by more than ``max_late_s``: dropped)."""
        seq = 0
        while not self._stop.is_set():
            try:
                t, travel, jpeg, thumb = self._ahead.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = t - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return
            if self._clock() > t + self._max_late:
                self.dropped += 1
                continue
            with self._new:
                self.history.append(StreamedFrame(seq, t, travel, thumb))
                self._latest = (seq, jpeg)
                self._new.notify_all()
            seq += 1

    def _next_frame(self, after: int) -> tuple[int, bytes] | None:
        with self._new:
            while not self._stop.is_set():
                if self._latest is not None and self._latest[0] > after:
                    return self._latest
                self._new.wait(1.0)
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/video.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                last = -1
                while True:
                    got = stream._next_frame(last)
                    if got is None:
                        return
                    last, jpeg = got
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away

            def log_message(self, format: str, *args: object) -> None:
                return None

        return Handler

    def identify(self, image: npt.NDArray[np.uint8]) -> tuple[StreamedFrame, float, float]:
        """See :func:`identify_frame`."""
        with self._lock:
            frames = list(self.history)
        return identify_frame(frames, image)


def identify_frame(frames: list[StreamedFrame], image: npt.NDArray[np.uint8]) -> tuple[StreamedFrame, float, float]:
    """The served frame ``image`` (a frame, or an overlay drawn on one) most likely is.

    Returns the frame, its mean absolute thumbnail difference (grey levels) and the runner-up's (a clear match
    has the first well below the second).
    """
    if not frames:
        raise LookupError("the stream has served no frames")
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    thumb = cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    diffs = [float(np.mean(np.abs(f.thumb.astype(np.float32) - thumb))) for f in frames]
    order = np.argsort(diffs)
    second = diffs[int(order[1])] if len(order) > 1 else float("inf")
    return frames[int(order[0])], diffs[int(order[0])], second


@dataclass(frozen=True, slots=True)
class BeltClock:
    """A belt at constant ``speed_mm_s`` since ``t0_mono_s`` (``time.monotonic`` is one clock for every process
    on the machine, so a camera process and the firmware agree on where the belt is)."""

    t0_mono_s: float
    speed_mm_s: float

    def travel_mm_at(self, t_mono_s: float) -> float:
        return (t_mono_s - self.t0_mono_s) * self.speed_mm_s


def _serve(spec: CameraSpec, pitch_mm: float, seed: int, belt: BeltClock, conn: Connection) -> None:
    """The camera process: stream until told to stop; answer ``add`` and ``history`` requests on ``conn``."""
    cv2.setNumThreads(1)
    stream = VirtualCameraStream(ExitCamera(spec, pitch_mm, seed), belt.travel_mm_at).start()
    conn.send(stream.url)
    try:
        while True:
            try:
                op, arg = conn.recv()
            except EOFError:
                return  # the parent went away
            if op == "add":
                stream.add_parcel(arg)
            elif op == "history":
                with stream._lock:
                    conn.send((list(stream.history), stream.dropped, stream.render_cpu_s))
            elif op == "stop":
                return
    finally:
        stream.stop()


class CameraProcess:
    """The virtual camera in a process of its own, as a real camera is a device of its own.

    Why: rendering is numpy work in many small steps; in the service's process every step waits for the GIL
    behind the screening threads, so frames came late and were dropped (render 30 ms of CPU took up to seconds
    of wall time on a loaded machine). Same interface as ``VirtualCameraStream`` where the demo needs it.
    """

    def __init__(self, spec: CameraSpec, belt: BeltClock, pitch_mm: float = 0.8, seed: int = 0) -> None:
        import multiprocessing

        self.camera = ExitCamera(spec, pitch_mm, seed)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._lock = threading.Lock()
        self._proc = ctx.Process(target=_serve, args=(spec, pitch_mm, seed, belt, child), name="virtual-camera",
                                 daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(60.0):
            self._proc.kill()
            raise RuntimeError("the virtual camera process did not start within 60 s")
        self.url: str = self._conn.recv()

    def add_parcel(self, placed: PlacedFootprint) -> None:
        with self._lock:
            self._conn.send(("add", placed))

    def history(self) -> tuple[list[StreamedFrame], int, float]:
        """Every frame served (truth), frames dropped, render CPU seconds."""
        with self._lock:
            self._conn.send(("history", None))
            frames, dropped, cpu = self._conn.recv()
        return frames, int(dropped), float(cpu)

    def identify(self, image: npt.NDArray[np.uint8]) -> tuple[StreamedFrame, float, float]:
        """See ``VirtualCameraStream.identify``."""
        return identify_frame(self.history()[0], image)

    def stop(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._conn.send(("stop", None))
        self._proc.join(timeout=10.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5.0)
        self._conn.close()
