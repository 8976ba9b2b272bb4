"""Virtual firmware: the scanner controller's side of the serial protocol, served over a real pty pair.

Used by the demo (``edge sim firmware``), the virtual scanner and the tests, in place of the scanner hardware.
It speaks exactly the protocol in ``docs/serial-protocol.md`` through the same framing and codec as the host,
plays a timeline of ``Scheduled`` messages (anything iterable, even endless, consumed lazily in time order),
answers Hello and commands, sends heartbeats, and on demand raises faults, goes mute, writes garbage, or has
its cable pulled: the pty is closed and its symlink removed, then a new pty is made behind the same symlink,
which is what a USB serial adapter's ``/dev/serial/by-id/...`` path does on unplug/replug.

The diverter (``DiverterModel``, optional): the firmware knows where each item is from the encoder counts of its
own timeline (an item's leading edge is ``encoder_count - ItemStart.encoder_count`` past the photo-eye), arms the
diverter for an item when a ``Divert`` arrives before the leading edge is within ``arm_counts`` of the diverter
(else answers ``TOO_LATE``), and when the leading edge reaches the diverter the item is diverted (``diverted``,
and a ``Diverted`` event to a host that speaks protocol 1.1) or passes on down the main line (``passed``). Without
a model every ``Divert`` is acknowledged OK and nothing is tracked, as before 1.1.

No apt packages needed: ``os.openpty`` plus a symlink this module manages (no socat). It must not be imported by
the runtime pipeline, only by the sim, the CLI and tests.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import tty
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.codec import decode_frame, encode_message
from firmware_bridge.errors import CodecError, TransportError
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.messages import (
    COMMAND_TYPES,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    Ack,
    AckStatus,
    BeltControl,
    Command,
    Divert,
    Diverted,
    Fault,
    FaultSeverity,
    Heartbeat,
    Hello,
    ItemStart,
    Message,
    ReleaseDivert,
)
from firmware_bridge.transport import FdTransport


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A message the virtual firmware sends ``at_s`` seconds after it started."""

    at_s: float
    message: Message


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """A command the virtual firmware carried out (duplicates and ignored attempts are not listed).

    Attributes:
        seq: the host's frame sequence number.
        command: the command.
        at_s: seconds after the firmware started.
    """

    seq: int
    command: Command
    at_s: float


@dataclass(frozen=True, slots=True)
class DiverterModel:
    """Where the virtual diverter stands and how early it must be armed, in encoder counts.

    Attributes:
        at_counts: belt travel from the item photo-eye (the counts ``ItemStart`` carries) to the diverter.
        arm_counts: a ``Divert`` must arrive while the item's leading edge is at least this far before the
            diverter (the arm's swing time at belt speed); later it is answered ``TOO_LATE``.
    """

    at_counts: int
    arm_counts: int = 0


@dataclass(frozen=True, slots=True)
class DivertedItem:
    """An item the virtual diverter took off the main line.

    Attributes:
        item_id: the wire item id.
        gate: the gate it went to.
        encoder_count: encoder count when it was diverted (its leading edge at the diverter).
        at_s: seconds after the firmware started.
    """

    item_id: int
    gate: int
    encoder_count: int
    at_s: float


class PtyPort:
    """A pty pair whose slave is reachable at a fixed symlink, and which can be unplugged and replugged.

    The firmware keeps its own handle on the slave so that the host closing the port does not hang up the
    master; unplugging closes both, so the host's next read or write fails with EIO as on a real unplug.
    """

    def __init__(self, link_path: Path) -> None:
        self.link_path = link_path
        self._slave_fd: int | None = None
        self.master: FdTransport | None = None
        self.device: str | None = None

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> FdTransport:
        """Create a new pty pair and point the symlink at its slave (atomically)."""
        if self.master is not None:
            return self.master
        master_fd, slave_fd = os.openpty()
        tty.setraw(master_fd)
        tty.setraw(slave_fd)
        self._slave_fd = slave_fd
        self.device = os.ttyname(slave_fd)
        self.link_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.device)
        tmp.replace(self.link_path)
        self.master = FdTransport(master_fd)
        return self.master

    def unplug(self) -> None:
        """Remove the symlink and close both ends; the host's open port now fails with EIO."""
        with contextlib.suppress(FileNotFoundError):
            if self.link_path.is_symlink():
                self.link_path.unlink()
        if self.master is not None:
            self.master.close()
            self.master = None
        if self._slave_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._slave_fd)
            self._slave_fd = None
        self.device = None


class VirtualFirmware:
    """A scanner controller in a thread, reachable at ``port`` (a symlink to a pty slave).

    Control methods (``send``, ``raise_fault``, ``pull_cable``, ``plug_cable``, ``write_raw``) are thread-safe
    and run on the firmware thread; the ones that change the port wait until done. Command handling is steered
    by four attributes: ``ack_status`` (what to answer), ``acks_enabled`` (False = never answer),
    ``ignore_commands`` (neither act on nor answer the next N command frames, so the host must retry) and
    ``drop_acks`` (act on the next N commands but lose their acks, so the retry must not act twice).
    """

    def __init__(
        self,
        port: Path,
        timeline: Iterable[Scheduled] = (),
        *,
        heartbeat_s: float = 0.5,
        software: str = "virtual-firmware 1.0",
        protocol_major: int = PROTOCOL_MAJOR,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 0.005,
        diverter: DiverterModel | None = None,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.diverter = diverter
        self.host_minor: int | None = None
        """The protocol minor of the host's last Hello (None before one): 1.1 events go only to a 1.1 host."""
        self.software = software
        self.protocol_major = protocol_major
        self.ack_status = AckStatus.OK
        self.acks_enabled = True
        self.ignore_commands = 0
        self.drop_acks = 0
        self.muted = False
        self.belt_running = True
        self.encoder_count = 0
        self.sent = 0
        self.dropped = 0
        self.duplicates = 0
        self.host_hellos = 0
        self.host_heartbeats = 0
        self.host_garbage_frames = 0
        self._pty = PtyPort(port)
        self._timeline: Iterator[Scheduled] = iter(timeline)
        self._next: Scheduled | None = None
        self._clock = clock
        self._poll_s = poll_s
        self._seq = 0
        self._t0 = clock()
        self._next_heartbeat = 0.0
        self._lock = threading.Lock()
        self._commands: list[ReceivedCommand] = []
        self._seen: OrderedDict[int, AckStatus] = OrderedDict()
        self._upstream: OrderedDict[int, int] = OrderedDict()
        """Items whose leading edge has not reached the diverter yet: wire id -> ItemStart encoder count."""
        self._armed: dict[int, int] = {}
        self._diverted: dict[int, DivertedItem] = {}
        self._passed: list[int] = []
        self._released: list[int] = []
        self._ops: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._decoder = FrameDecoder()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> Path:
        """The path a host opens: stable across cable pulls."""
        return self._pty.link_path

    @property
    def device(self) -> str | None:
        """The current ``/dev/pts/N`` behind ``port``; None while the cable is pulled."""
        return self._pty.device

    @property
    def commands(self) -> list[ReceivedCommand]:
        with self._lock:
            return list(self._commands)

    @property
    def diverted(self) -> list[DivertedItem]:
        """Items the diverter took off the main line, in the order it did."""
        with self._lock:
            return list(self._diverted.values())

    @property
    def passed(self) -> list[int]:
        """Wire ids of items that went past the diverter on the main line (not diverted)."""
        with self._lock:
            return list(self._passed)

    @property
    def released(self) -> list[int]:
        """Wire ids of diverted items released back to the main line (``ReleaseDivert``)."""
        with self._lock:
            return list(self._released)

    def elapsed_s(self) -> float:
        """Seconds since ``start`` on the firmware's clock (the timeline's time base)."""
        return self._clock() - self._t0

    def start(self) -> VirtualFirmware:
        """Create the pty and symlink, then serve in a thread. Returns self."""
        if self._thread is None:
            self._pty.plug()
            self._t0 = self._clock()
            self._next = next(self._timeline, None)
            self._thread = threading.Thread(target=self._run, name="virtual-firmware", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the pty and the symlink."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._pty.unplug()

    def __enter__(self) -> VirtualFirmware:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- control (any thread) --------------------------------------------------------------------------

    def _call(self, op: Callable[[], None], wait: bool = True) -> None:
        done = threading.Event()
        if self._thread is None or not self._thread.is_alive():
            op()
            return
        self._ops.put((op, done))
        if wait:
            done.wait(5.0)

    def send(self, message: Message) -> None:
        """Send a message now (dropped, like any output, while unplugged or muted)."""
        self._call(lambda: self._emit(message))

    def raise_fault(self, code: int, severity: FaultSeverity = FaultSeverity.ERROR, detail: str = "",
                    active: bool = True) -> Fault:
        """Raise (or clear, ``active=False``) a fault now, stamped with the current encoder count."""
        fault = Fault(code, severity, active, self.encoder_count, detail)
        self.send(fault)
        return fault

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (line noise, a truncated frame) to test resynchronisation."""

        def op() -> None:
            if self._pty.master is not None:
                with contextlib.suppress(TransportError):
                    self._pty.master.write(data)

        self._call(op)

    def pull_cable(self) -> None:
        """Unplug: close the pty and remove the symlink (the host sees EIO, then a missing path)."""
        self._call(self._pty.unplug)

    def plug_cable(self) -> None:
        """Replug: a new pty behind the same symlink."""

        def op() -> None:
            self._pty.plug()
            self._decoder.reset()

        self._call(op)

    def set_muted(self, muted: bool) -> None:
        """Go silent (port stays open, nothing is sent): a hung controller, for link-timeout tests."""
        self.muted = muted

    # ---- firmware thread --------------------------------------------------------------------------------

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        return seq

    def _emit(self, message: Message) -> None:
        count = getattr(message, "encoder_count", None)
        if isinstance(count, int) and not isinstance(message, (Hello, Heartbeat)):
            self.encoder_count = count
        if isinstance(message, ItemStart) and self.diverter is not None:
            with self._lock:
                self._upstream[message.item_id] = message.encoder_count
                while len(self._upstream) > 4096:
                    self._upstream.popitem(last=False)
        master = self._pty.master
        if master is None or self.muted:
            self.dropped += 1
            return
        try:
            master.write(encode_message(message, self._take_seq()))
            self.sent += 1
        except TransportError:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            while True:
                try:
                    op, done = self._ops.get_nowait()
                except queue.Empty:
                    break
                try:
                    op()
                finally:
                    done.set()
            now = self._clock()
            rel = now - self._t0
            while self._next is not None and rel >= self._next.at_s:
                self._emit(self._next.message)
                self._next = next(self._timeline, None)
                self._run_diverter(rel)
            self._run_diverter(rel)  # also after counts sent by ``send`` (the ops above)
            if now >= self._next_heartbeat:
                self._emit(Heartbeat(int(rel * 1000) & 0xFFFFFFFF, self.encoder_count))
                self._next_heartbeat = now + self.heartbeat_s
            wait = min(self._poll_s, max(0.0, self._next_heartbeat - now))
            if self._next is not None:
                wait = min(wait, max(0.0, self._next.at_s - rel))
            master = self._pty.master
            if master is None:
                self._stop.wait(wait)
                continue
            try:
                data = master.read(4096, wait)
            except TransportError:
                data = b""
            if data:
                for frame in self._decoder.feed(data):
                    try:
                        message = decode_frame(frame)
                    except CodecError:
                        self.host_garbage_frames += 1
                        continue
                    self._handle(frame.seq, message, rel)

    def _run_diverter(self, rel: float) -> None:
        """Items whose leading edge reached the diverter: diverted if armed, else passed (in belt order)."""
        model = self.diverter
        if model is None:
            return
        reached: list[tuple[int, int | None]] = []
        with self._lock:
            for item_id, start in list(self._upstream.items()):
                if self.encoder_count < start + model.at_counts:
                    continue
                del self._upstream[item_id]
                gate = self._armed.pop(item_id, None)
                if gate is None:
                    self._passed.append(item_id)
                else:
                    self._diverted[item_id] = DivertedItem(item_id, gate, self.encoder_count, rel)
                reached.append((item_id, gate))
        for item_id, gate in reached:
            if gate is not None and (self.host_minor or 0) >= 1:
                self._emit(Diverted(item_id, gate, self.encoder_count))

    def _carry_out(self, command: Command) -> AckStatus:
        """Act on a command; the status to answer (the diverter may refuse one that comes too late)."""
        if isinstance(command, BeltControl):
            self.belt_running = command.run
            return AckStatus.OK
        model = self.diverter
        if model is None:
            return AckStatus.OK
        with self._lock:
            if isinstance(command, Divert):
                if command.item_id in self._diverted:
                    return AckStatus.OK  # idempotent: diverting the same item twice is one divert
                start = self._upstream.get(command.item_id)
                if start is None:
                    return AckStatus.TOO_LATE if command.item_id in self._passed else AckStatus.UNKNOWN_ITEM
                if self.encoder_count >= start + model.at_counts - model.arm_counts:
                    return AckStatus.TOO_LATE
                self._armed[command.item_id] = command.gate
                return AckStatus.OK
            if isinstance(command, ReleaseDivert):
                done = self._diverted.get(command.item_id)
                if done is None or done.gate != command.gate:
                    return AckStatus.UNKNOWN_ITEM
                if command.item_id not in self._released:
                    self._released.append(command.item_id)
                return AckStatus.OK
        return AckStatus.OK

    def _handle(self, seq: int, message: Message, rel: float) -> None:
        if isinstance(message, Hello):
            self.host_hellos += 1
            self.host_minor = message.protocol_minor
            self._seen.clear()  # a new host session: its sequence numbers start afresh
            self._emit(Hello(self.protocol_major, PROTOCOL_MINOR, self.encoder_count, self.software))
        elif isinstance(message, Heartbeat):
            self.host_heartbeats += 1
        elif isinstance(message, COMMAND_TYPES):
            self._command(seq, message, rel)
        else:
            self.host_garbage_frames += 1

    def _command(self, seq: int, command: Command, rel: float) -> None:
        if seq in self._seen:
            # A retry of a command we already carried out: answer again, do not act twice.
            self.duplicates += 1
            if self.acks_enabled:
                self._emit(Ack(seq, self._seen[seq]))
            return
        if self.ignore_commands > 0:
            self.ignore_commands -= 1
            return
        status = self.ack_status
        if status is AckStatus.OK:
            status = self._carry_out(command)
        if status is AckStatus.OK:
            with self._lock:
                self._commands.append(ReceivedCommand(seq, command, rel))
        self._seen[seq] = status
        while len(self._seen) > 256:
            self._seen.popitem(last=False)
        if self.drop_acks > 0:
            self.drop_acks -= 1  # carried out, but the ack is "lost on the wire"
            return
        if self.acks_enabled:
            self._emit(Ack(seq, status))
