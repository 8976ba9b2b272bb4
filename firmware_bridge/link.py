"""Link: a self-healing session with the scanner firmware (handshake, heartbeats, acks, retries, reconnects).

Top layer of the bridge (transport -> framing -> codec -> **link**), and the only one with a thread. It opens the
port through an ``Opener``, says Hello, keeps heartbeats going both ways, delivers events with belt positions,
retries commands until acknowledged or timed out, and when the port vanishes (USB unplug) or goes silent it
records the gap and reopens with exponential backoff. It must not decide anything about items: the pipeline
asks ``history.down_between(t0, t1)`` and marks items UNSCREENED itself.

Ordering guarantee: state changes (DOWN, then UP) are recorded in ``history`` and reported before any event
received after them is delivered, all from the one I/O thread.

Trace hooks instead of subclassing: ``on_bytes(direction, data)`` sees every chunk read or written,
``on_message(direction, seq, message)`` every decoded or sent message.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from firmware_bridge.codec import decode_frame, encode_message
from firmware_bridge.errors import (
    CodecError,
    CommandError,
    CommandRejected,
    CommandTimeout,
    HandshakeError,
    TransportError,
)
from firmware_bridge.framing import FrameDecoder, RejectReason
from firmware_bridge.history import LinkHistory, LinkState, LinkStatus
from firmware_bridge.messages import (
    COMMAND_TYPES,
    EVENT_TYPES,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    Ack,
    AckStatus,
    Command,
    Event,
    Heartbeat,
    Hello,
    Message,
)
from firmware_bridge.transport import Opener, Transport

log = logging.getLogger(__name__)


class LinkConfig(Protocol):
    """What :meth:`LinkSettings.from_config` reads of the runtime's ``firmware:`` section
    (``edge.config.firmware.FirmwareConfig``); structural, so the bridge never imports ``edge``'s config."""

    @property
    def heartbeat_s(self) -> float: ...
    @property
    def link_timeout_s(self) -> float: ...
    @property
    def reconnect_min_s(self) -> float: ...
    @property
    def reconnect_max_s(self) -> float: ...
    @property
    def command_timeout_s(self) -> float: ...
    @property
    def command_retry_s(self) -> float: ...
    @property
    def encoder_counts_per_mm(self) -> float: ...


class Direction(StrEnum):
    """Which way a traced chunk or message went."""

    RX = "rx"
    TX = "tx"


ByteHook = Callable[[Direction, bytes], None]
REJECT_LOG_INTERVAL_S = 5.0
"""At most one warning about garbled serial segments per this many seconds (the counters keep every one)."""
MessageHook = Callable[[Direction, int, Message], None]


def counts_to_mm(counts: int, counts_per_mm: float) -> float:
    """Encoder counts (a position or a per-second speed) to millimetres (or mm/s)."""
    return counts / counts_per_mm


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Timing of the link; ``from_config`` builds it from the ``firmware:`` YAML section.

    Attributes:
        heartbeat_s: our heartbeat period, and the Hello repeat period during the handshake.
        link_timeout_s: no valid frame for this long = link down (also the handshake deadline).
        reconnect_min_s: first reopen delay; doubled after each failed attempt.
        reconnect_max_s: longest reopen delay.
        command_timeout_s: default deadline of a command, retries included.
        command_retry_s: resend an unacknowledged command after this long (same ``seq``).
        encoder_counts_per_mm: belt encoder resolution, for ``position_mm``.
        poll_s: longest the I/O thread blocks in a read; bounds command and heartbeat latency.
    """

    heartbeat_s: float = 0.5
    link_timeout_s: float = 2.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0
    command_timeout_s: float = 1.0
    command_retry_s: float = 0.25
    encoder_counts_per_mm: float = 10.0
    poll_s: float = 0.01

    @classmethod
    def from_config(cls, cfg: LinkConfig) -> LinkSettings:
        return cls(heartbeat_s=cfg.heartbeat_s, link_timeout_s=cfg.link_timeout_s,
                   reconnect_min_s=cfg.reconnect_min_s, reconnect_max_s=cfg.reconnect_max_s,
                   command_timeout_s=cfg.command_timeout_s, command_retry_s=cfg.command_retry_s,
                   encoder_counts_per_mm=cfg.encoder_counts_per_mm)


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """A firmware event as the pipeline gets it.

    Attributes:
        event: the decoded event.
        seq: the firmware's frame sequence number.
        received_at: monotonic time (s) the frame was decoded; compare with ``LinkHistory``.
        encoder_count: the event's encoder count.
        position_mm: ``encoder_count`` in millimetres of belt travel.
    """

    event: Event
    seq: int
    received_at: float
    encoder_count: int
    position_mm: float


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Counters since the link was created, for health metrics."""

    status: LinkStatus
    frames_rx: int
    frames_tx: int
    frames_rejected: int
    bytes_dropped: int
    codec_errors: int
    unexpected_messages: int
    events_before_handshake: int
    sessions: int
    open_failures: int
    command_retries: int
    commands_timed_out: int
    stale_acks: int
    last_error: str | None


def _settle(future: Future[Ack], outcome: Ack | BaseException) -> None:
    """Resolve a command future unless the caller already cancelled it (a race we must not crash on)."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass


class _SessionEnded(Exception):
    """Internal: the session must end (silence, handshake deadline)."""


@dataclass(slots=True)
class _Pending:
    seq: int
    command: Command
    wire: bytes
    future: Future[Ack]
    deadline: float
    timeout_s: float
    next_send: float
    attempts: int = 0


@dataclass(slots=True)
class _Counters:
    frames_rx: int = 0
    frames_tx: int = 0
    codec_errors: int = 0
    unexpected_messages: int = 0
    events_before_handshake: int = 0
    sessions: int = 0
    open_failures: int = 0
    command_retries: int = 0
    commands_timed_out: int = 0
    stale_acks: int = 0
    rejected: Counter[RejectReason] = field(default_factory=Counter)
    bytes_dropped: int = 0


class FirmwareLink:
    """The host end of the serial protocol, run by one background thread.

    Events go to ``on_event`` if given, else onto ``events`` (a queue); state changes likewise to ``on_state``
    or ``states``. Callbacks run on the I/O thread and must return quickly.
    """

    def __init__(
        self,
        opener: Opener,
        settings: LinkSettings | None = None,
        *,
        on_event: Callable[[ReceivedEvent], None] | None = None,
        on_state: Callable[[LinkState], None] | None = None,
        on_bytes: ByteHook | None = None,
        on_message: MessageHook | None = None,
        history: LinkHistory | None = None,
        clock: Callable[[], float] = time.monotonic,
        software: str = "xray-edge",
    ) -> None:
        self.settings = settings or LinkSettings()
        self.history = history or LinkHistory()
        self.events: queue.Queue[ReceivedEvent] = queue.Queue()
        self.states: queue.Queue[LinkState] = queue.Queue()
        self._opener = opener
        self._on_event = on_event or self.events.put
        self._on_state = on_state or self.states.put
        self._on_bytes = on_bytes
        self._on_message = on_message
        self._clock = clock
        self._software = software
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._up_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._counters = _Counters()
        self._decoder: FrameDecoder | None = None
        self._started_at = clock()
        self._up = False
        self._last_rx: float | None = None
        self._encoder: int | None = None
        self._down_since: float | None = None
        self._encoder_at_down: int | None = None
        self._next_heartbeat = 0.0
        self._last_error: str | None = None

    # ---- public API ---------------------------------------------------------------------------------

    def start(self) -> FirmwareLink:
        """Start the I/O thread; returns self so ``with FirmwareLink(...).start() as link`` reads well."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="firmware-link", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, close the port, and fail every pending command with ``CommandError``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for p in pending:
            _settle(p.future, CommandError(f"link closed before {p.command} was acknowledged"))

    def __enter__(self) -> FirmwareLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_up(self) -> bool:
        return self._up

    def wait_until_up(self, timeout_s: float) -> bool:
        """Block until the handshake has completed (now or later); False on timeout."""
        return self._up_event.wait(timeout_s)

    def command(self, command: Command, timeout_s: float | None = None) -> Future[Ack]:
        """Queue a command; the future resolves to its OK ``Ack``.

        The command is sent as soon as the link is up and resent every ``command_retry_s`` with the same
        ``seq`` (the firmware answers a duplicate without acting twice) until acknowledged. The future fails
        with ``CommandTimeout`` after ``timeout_s`` (default ``command_timeout_s``), or ``CommandRejected`` if
        the firmware answers with a non-OK status. A command waiting while the link is down keeps its deadline.
        """
        if not isinstance(command, COMMAND_TYPES):
            raise CommandError(f"{type(command).__name__} is not a command; expected one of "
                               + ", ".join(c.__name__ for c in COMMAND_TYPES))
        timeout = self.settings.command_timeout_s if timeout_s is None else timeout_s
        future: Future[Ack] = Future()
        now = self._clock()
        with self._lock:
            seq = self._take_seq()
            wire = encode_message(command, seq)  # raises CodecError now, in the caller, if out of range
            self._pending[seq] = _Pending(seq, command, wire, future, now + timeout, timeout, now)
        return future

    def send_command(self, command: Command, timeout_s: float | None = None) -> Ack:
        """Blocking ``command``: returns the OK ``Ack`` or raises ``CommandTimeout`` / ``CommandRejected``."""
        future = self.command(command, timeout_s)
        timeout = self.settings.command_timeout_s if timeout_s is None else timeout_s
        # The I/O thread owns the deadline; the extra margin only guards against a dead thread.
        return future.result(timeout=timeout + 5.0)

    def stats(self) -> LinkStats:
        c = self._counters
        rejected = c.rejected.copy()
        dropped = c.bytes_dropped
        decoder = self._decoder
        if decoder is not None:
            rejected += decoder.rejected
            dropped += decoder.bytes_dropped
        return LinkStats(
            status=LinkStatus.UP if self._up else LinkStatus.DOWN, frames_rx=c.frames_rx, frames_tx=c.frames_tx,
            frames_rejected=sum(rejected.values()), bytes_dropped=dropped, codec_errors=c.codec_errors,
            unexpected_messages=c.unexpected_messages, events_before_handshake=c.events_before_handshake,
            sessions=c.sessions, open_failures=c.open_failures, command_retries=c.command_retries,
            commands_timed_out=c.commands_timed_out, stale_acks=c.stale_acks, last_error=self._last_error)

    # ---- I/O thread ----------------------------------------------------------------------------------

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        return seq

    def _run(self) -> None:
        s = self.settings
        delay = s.reconnect_min_s
        while not self._stop.is_set():
            try:
                transport = self._opener()
            except TransportError as exc:
                self._counters.open_failures += 1
                self._last_error = str(exc)
                self._idle(delay)
                delay = min(delay * 2, s.reconnect_max_s)
                continue
            self._counters.sessions += 1
            reason: str | None = None
            try:
                self._session(transport)
            except HandshakeError as exc:
                reason = str(exc)
                log.error("firmware handshake refused: %s", exc)
                delay = s.reconnect_max_s  # a wrong firmware will not change its mind quickly
            except (TransportError, _SessionEnded) as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must take the link down (items become UNSCREENED), not end the thread
                reason = f"link error: {type(exc).__name__}: {exc}"
                log.exception("firmware link session failed")
            finally:
                transport.close()
                self._retire_decoder()
            if reason is not None:
                self._last_error = reason
            reached_up = self._up
            if reached_up:
                self._go_down(reason or "link closed")
            if self._stop.is_set():
                break
            if reached_up:
                delay = s.reconnect_min_s  # a working port that failed: try again soon
            self._idle(delay)
            if not reached_up:
                delay = min(delay * 2, s.reconnect_max_s)

    def _idle(self, delay: float) -> None:
        """Wait ``delay`` before reopening, still timing out pending commands."""
        end = self._clock() + delay
        while not self._stop.is_set():
            now = self._clock()
            self._service_commands(None, now)
            if now >= end:
                return
            self._stop.wait(min(self.settings.poll_s * 5, end - now))

    def _retire_decoder(self) -> None:
        decoder = self._decoder
        if decoder is not None:
            self._counters.rejected += decoder.rejected
            self._counters.bytes_dropped += decoder.bytes_dropped
            self._decoder = None

    def _send(self, transport: Transport, message: Message) -> None:
        with self._lock:
            seq = self._take_seq()
        wire = encode_message(message, seq)
        self._write(transport, wire)
        self._trace(self._on_message, Direction.TX, seq, message)

    def _write(self, transport: Transport, wire: bytes) -> None:
        transport.write(wire)
        self._counters.frames_tx += 1
        self._trace(self._on_bytes, Direction.TX, wire)

    def _hello(self) -> Hello:
        # the field holds 32 bytes of UTF-8, not 32 characters
        return Hello(PROTOCOL_MAJOR, PROTOCOL_MINOR, 0, self._software.encode()[:32].decode(errors="ignore"))

    @staticmethod
    def _trace(hook: Callable[..., None] | None, *args: object) -> None:
        """Call a diagnostic hook (``on_bytes``/``on_message``); its failure is logged, never taken for a link
        failure."""
        if hook is not None:
            try:
                hook(*args)
            except Exception:
                log.exception("firmware link trace hook failed")

    def _session(self, transport: Transport) -> None:
        """Talk to one opened port until it fails (raises) or the link is closed (returns)."""
        s = self.settings
        decoder = FrameDecoder()
        self._decoder = decoder
        opened = self._clock()
        self._last_rx = None
        self._send(transport, self._hello())
        next_hello = opened + s.heartbeat_s
        logged_rejects, next_reject_log = 0, opened
        while not self._stop.is_set():
            data = transport.read(4096, s.poll_s)
            now = self._clock()
            if data:
                self._trace(self._on_bytes, Direction.RX, data)
                frames = decoder.feed(data)
                rejects = sum(decoder.rejected.values())
                if rejects > logged_rejects and now >= next_reject_log:  # garbage on the wire: say so, not per byte
                    log.warning("firmware link: %d garbled segment(s) dropped (%s; %d bytes dropped this session)",
                                rejects - logged_rejects,
                                ", ".join(f"{r.value} {n}" for r, n in sorted(decoder.rejected.items())),
                                decoder.bytes_dropped)
                    logged_rejects, next_reject_log = rejects, now + REJECT_LOG_INTERVAL_S
                for frame in frames:
                    self._counters.frames_rx += 1
                    self._last_rx = now  # a CRC-valid frame proves the link is alive, known type or not
                    try:
                        message = decode_frame(frame)
                    except CodecError as exc:
                        self._counters.codec_errors += 1
                        log.warning("firmware frame seq %d rejected: %s", frame.seq, exc)
                        continue
                    self._trace(self._on_message, Direction.RX, frame.seq, message)
                    self._handle(transport, frame.seq, message, now)
            if self._up:
                assert self._last_rx is not None
                if now - self._last_rx > s.link_timeout_s:
                    raise _SessionEnded(f"no valid frame for {s.link_timeout_s} s")
                if now >= self._next_heartbeat:
                    uptime_ms = int((now - self._started_at) * 1000) & 0xFFFFFFFF
                    self._send(transport, Heartbeat(uptime_ms, 0))
                    self._next_heartbeat = now + s.heartbeat_s
            else:
                if now - opened > s.link_timeout_s:
                    raise _SessionEnded(f"no Hello from the firmware within {s.link_timeout_s} s")
                if now >= next_hello:
                    self._send(transport, self._hello())
                    next_hello = now + s.heartbeat_s
            self._service_commands(transport, now)

    def _handle(self, transport: Transport, seq: int, message: Message, now: float) -> None:
        if isinstance(message, EVENT_TYPES):
            if not self._up:
                self._counters.events_before_handshake += 1
                return
            self._encoder = message.encoder_count
            self._deliver(ReceivedEvent(message, seq, now, message.encoder_count,
                                        counts_to_mm(message.encoder_count, self.settings.encoder_counts_per_mm)))
        elif isinstance(message, Heartbeat):
            if self._up:
                self._encoder = message.encoder_count
        elif isinstance(message, Ack):
            self._resolve(message)
        elif isinstance(message, Hello):
            if message.protocol_major != PROTOCOL_MAJOR:
                raise HandshakeError(
                    f"firmware '{message.software}' speaks protocol {message.protocol_major}."
                    f"{message.protocol_minor}; expected {PROTOCOL_MAJOR}.x")
            self._encoder = message.encoder_count
            if not self._up:
                self._go_up(message, now, transport)
        else:
            self._counters.unexpected_messages += 1

    def _deliver(self, event: ReceivedEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a consumer bug must not kill the link thread
            log.exception("on_event callback failed for %s", event.event)

    def _notify(self, state: LinkState) -> None:
        try:
            self._on_state(state)
        except Exception:
            log.exception("on_state callback failed for %s", state)

    def _go_up(self, hello: Hello, now: float, transport: Transport) -> None:
        gap = None if self._down_since is None else now - self._down_since
        unobserved = None
        if self._encoder_at_down is not None:
            unobserved = hello.encoder_count - self._encoder_at_down
        state = LinkState(LinkStatus.UP, now, time.time(),
                          f"handshake ok with '{hello.software}' protocol {hello.protocol_major}."
                          f"{hello.protocol_minor}", hello.encoder_count, gap, unobserved)
        self.history.record(state)  # before is_up flips: whoever sees the link up finds the transition recorded
        self._up = True
        self._next_heartbeat = now
        log.info("firmware link up (gap %s s, %s counts unobserved)", gap, unobserved)
        self._notify(state)
        self._up_event.set()

    def _go_down(self, reason: str) -> None:
        now = self._clock()
        since = self._last_rx if self._last_rx is not None else now
        state = LinkState(LinkStatus.DOWN, since, time.time() - (now - since), reason, self._encoder)
        self.history.record(state)  # before is_up flips (as in _go_up)
        self._up = False
        self._up_event.clear()
        self._down_since = since
        self._encoder_at_down = self._encoder
        log.warning("firmware link down: %s", reason)
        self._notify(state)

    def _resolve(self, ack: Ack) -> None:
        with self._lock:
            pending = self._pending.pop(ack.acked_seq, None)
        if pending is None:
            self._counters.stale_acks += 1  # the ack of a retry that was already answered, or of a timeout
            return
        if ack.status is AckStatus.OK:
            _settle(pending.future, ack)
        else:
            _settle(pending.future, CommandRejected(
                f"firmware rejected {pending.command} with {ack.status.name}", int(ack.status)))

    def _service_commands(self, transport: Transport | None, now: float) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for p in pending:
            if p.future.done():  # cancelled by the caller
                with self._lock:
                    self._pending.pop(p.seq, None)
                continue
            if now >= p.deadline:
                with self._lock:
                    self._pending.pop(p.seq, None)
                self._counters.commands_timed_out += 1
                _settle(p.future, CommandTimeout(
                    f"{p.command} not acknowledged within {p.timeout_s} s ({p.attempts} attempts"
                    f"{'' if self._up else ', link down'})"))
                continue
            if transport is not None and self._up and now >= p.next_send:
                self._write(transport, p.wire)
                self._trace(self._on_message, Direction.TX, p.seq, p.command)
                p.attempts += 1
                if p.attempts > 1:
                    self._counters.command_retries += 1
                p.next_send = now + self.settings.command_retry_s
