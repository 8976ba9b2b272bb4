"""The places where hardware, runtimes and subscribers plug into the pipeline.

Implementations do not inherit from these protocols; a conformance suite runs each through the same cases, as
pymodbus runs every framer through one: ``tests/conformance/test_frame_source.py`` (every ``FrameSource``: spool,
VOTI, DICOS, the virtual scanner, the input-saving wrapper, the bench and eval replays),
``tests/conformance/test_result_sink.py`` (every ``ResultSink``: audit store, memory, MQTT against a real broker)
and ``tests/conformance/test_inference_session.py`` (the inference port, ``edge.backends.base.InferenceSession``:
OpenVINO and ONNX Runtime on a real bundle). A new implementation joins by one factory in that suite.
Each protocol is one to three methods so that a new scanner or sink is a small, obvious piece of code.
"""

from __future__ import annotations

from typing import Protocol

from edge.records import Decision, RawItem


class FrameSource(Protocol):
    """Delivers whole items (a real scanner's spool, raw line files, DICOS, the virtual scanner)."""

    @property
    def exhausted(self) -> bool:
        """True once a finite source (replayed files, a bounded virtual scanner) has delivered everything it will
        ever deliver; a live source (a scanner's spool) is never exhausted. The pipeline stops asking then."""
        ...

    def next_item(self, timeout_s: float) -> RawItem | None:
        """Block up to ``timeout_s`` for the next item; None if none arrived. Never raises for bad data:
        an unreadable item comes back with ``problem`` set. Raises ``SourceError`` only when the source is gone."""
        ...

    def acknowledge(self, source_ref: str) -> None:
        """The item delivered with ``source_ref`` has its decision durably stored: let it go (move the spool file
        to done/). Until then the source keeps the item and never delivers it again in this run; after a crash
        the intake journal settles it. Must not raise for a ref that is already gone."""
        ...

    def close(self) -> None:
        """Release files, threads and devices."""
        ...


class ResultSink(Protocol):
    """Takes every decision exactly once (MQTT outbox, audit store, memory, JSON lines)."""

    def publish(self, decision: Decision) -> None:
        """Persist ``decision``; returns once it is durably stored, raises ``PublishError`` when it could not be
        (the pipeline calls again later with the same decision, so this must be idempotent). Must not block for
        long (disk-backed queues, not network waits)."""
        ...

    def close(self, timeout_s: float) -> object:
        """Flush what can be flushed within ``timeout_s`` and release resources. What it returns is ignored (the
        MQTT sink says whether everything was flushed)."""
        ...


class LinkMonitor(Protocol):
    """What the pipeline needs from the scanner link: was it down while an item was being scanned?"""

    def down_between(self, t0_mono: float, t1_mono: float) -> bool:
        """True if the link was down at any time in ``[t0_mono, t1_mono]`` (``time.monotonic()`` seconds)."""
        ...
