"""`edge sim firmware` (run through typer's CliRunner) and the steady-belt timeline it serves."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from firmware_bridge.cli import app
from firmware_bridge.link import FirmwareLink
from firmware_bridge.messages import BeltStatus, FrameReady, ItemEnd, ItemStart
from firmware_bridge.scenarios import steady_belt
from firmware_bridge.transport import serial_opener


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["firmware", "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "edge sim firmware --port" in result.output


def test_cli_prints_the_port_and_a_host_can_talk_to_it(tmp_path: Path) -> None:
    port = tmp_path / "ttyVFW0"
    link = FirmwareLink(serial_opener(str(port)))
    outcome: list[bool] = []

    def connect() -> None:
        link.start()
        outcome.append(link.wait_until_up(3.0))

    threading.Timer(0.3, connect).start()
    result = CliRunner().invoke(app, ["firmware", "--port", str(port), "--duration-s", "1.2",
                                      "--heartbeat-s", "0.1"])
    link.close()
    assert result.exit_code == 0, result.output
    assert f"virtual firmware listening on {port}" in result.output
    assert outcome == [True]
    assert not port.exists()  # the symlink is removed on exit


def test_cli_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    port = tmp_path / "precious"
    port.write_text("do not delete")
    result = CliRunner().invoke(app, ["firmware", "--port", str(port), "--duration-s", "0.1"])
    assert result.exit_code == 2
    assert port.read_text() == "do not delete"


def test_steady_belt_timeline_is_ordered_and_consistent() -> None:
    speed, cpm, length, gap = 250.0, 4.0, 500.0, 250.0
    events = list(steady_belt(speed_mm_s=speed, counts_per_mm=cpm, item_length_mm=length, item_gap_mm=gap,
                              duration_s=10.0, start_s=0.0))
    times = [s.at_s for s in events]
    assert times == sorted(times) and times[-1] <= 10.0
    starts = [s.message for s in events if isinstance(s.message, ItemStart)]
    ends = [s.message for s in events if isinstance(s.message, ItemEnd)]
    # 10 s at 250 mm/s = 2500 mm of belt; items every 750 mm, the first after a 250 mm gap.
    assert [m.item_id for m in starts] == [0, 1, 2, 3]
    for s, e in zip(starts, ends, strict=False):
        assert s.item_id == e.item_id
        assert (e.encoder_count - s.encoder_count) / cpm == length
    assert starts[0].encoder_count / cpm == gap
    belt = [s.message for s in events if isinstance(s.message, BeltStatus)]
    assert all(b.speed_counts_s == speed * cpm for b in belt)
    frames = [s.message for s in events if isinstance(s.message, FrameReady)]
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    assert len(frames) == int(10.0 * speed / (64 * 0.8))


def test_endless_timeline_is_lazy() -> None:
    it = steady_belt()
    t0 = time.monotonic()
    first = [next(it) for _ in range(1000)]
    assert time.monotonic() - t0 < 1.0 and len(first) == 1000
