"""Live updates for the open pages: the MQTT threads publish events, every page's SSE stream receives them.

Why a hub of asyncio queues: the page is served by uvicorn's event loop, while decisions arrive on paho's
threads. ``publish`` may be called from any thread; it hands the event to the loop
(``call_soon_threadsafe``), which puts it on each connected page's queue. A page too slow to read (its queue
full) is dropped from the hub and its stream ends: the browser's EventSource reconnects and reloads the
queue, so a page never shows a stale queue silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its type (``alarm``, ``update``, ``lane``) and JSON data."""

    kind: str
    data: dict[str, Any]
    sent_wall: float

    def encode(self) -> bytes:
        body = json.dumps({**self.data, "sent_wall": self.sent_wall}, separators=(",", ":"))
        return f"event: {self.kind}\ndata: {body}\n\n".encode()


class Hub:
    """Fan-out of events to the connected pages."""

    QUEUE_MAX = 1000

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once the web server's loop runs (before that, events have no page to go to)."""
        self._loop = loop

    def subscribe(self) -> asyncio.Queue[Event | None]:
        q: asyncio.Queue[Event | None] = asyncio.Queue(self.QUEUE_MAX)
        with self._lock:
            self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        with self._lock:
            self._queues.discard(q)

    @property
    def listeners(self) -> int:
        return len(self._queues)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Thread-safe: queue ``data`` for every connected page."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        event = Event(kind, data, time.time())
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutting down)
            loop.call_soon_threadsafe(self._fan_out, event)

    def _fan_out(self, event: Event) -> None:
        with self._lock:
            queues = list(self._queues)
        for q in queues:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.unsubscribe(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)  # ends that stream; the page reconnects and reloads

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def _end() -> None:
            with self._lock:
                queues = list(self._queues)
            for q in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_end)
