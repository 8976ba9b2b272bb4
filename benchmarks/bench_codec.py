"""Benchmark: serial-protocol decoder throughput (framing + codec), on one core.

Target (issue 12): the host decodes at least 20,000 messages/s on one core. The stream is a realistic mix of
firmware traffic (frames ready, belt status, item start/end, heartbeats, faults with text), fed to
``FrameDecoder`` in 4 KiB chunks as a serial read would deliver it, and every frame is decoded into its message
dataclass. Encoding is measured too. Results go to ``benchmarks/results/bench_codec.json``.

Run:  .venv/bin/python benchmarks/bench_codec.py [--messages 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_bridge.codec import decode_frame, encode_message
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.messages import (
    BeltStatus,
    Fault,
    FaultSeverity,
    FrameReady,
    Heartbeat,
    ItemEnd,
    ItemStart,
    Message,
)

RESULTS = Path(__file__).resolve().parent / "results" / "bench_codec.json"
TARGET_MSG_S = 20_000


def traffic(n: int) -> list[Message]:
    """n messages in a plausible mix: mostly frames and belt status, some items, heartbeats and faults."""
    out: list[Message] = []
    for k in itertools.count():
        if len(out) >= n:
            break
        count = k * 40
        out.append(FrameReady(k, count, 64))
        if k % 2 == 0:
            out.append(BeltStatus(count, 2000, True))
        if k % 5 == 0:
            out.append(ItemStart(k // 5, count, 0))
            out.append(ItemEnd(k // 5, count + 3000, 0))
        if k % 10 == 0:
            out.append(Heartbeat(k * 25, count))
        if k % 97 == 0:
            out.append(Fault(0x0002, FaultSeverity.WARNING, True, count, "belt slip at tunnel exit"))
    return out[:n]


def bench_decode(stream: bytes, expected: int, chunk: int = 4096) -> float:
    dec = FrameDecoder()
    decoded = 0
    t0 = time.perf_counter()
    for i in range(0, len(stream), chunk):
        for frame in dec.feed(stream[i : i + chunk]):
            decode_frame(frame)
            decoded += 1
    elapsed = time.perf_counter() - t0
    if decoded != expected:
        raise SystemExit(f"decoded {decoded} messages, expected {expected}")
    return elapsed


def bench_encode(messages: list[Message]) -> float:
    t0 = time.perf_counter()
    for seq, m in enumerate(messages):
        encode_message(m, seq & 0xFFFF)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core, as the target says
    messages = traffic(args.messages)
    stream = b"".join(encode_message(m, seq & 0xFFFF) for seq, m in enumerate(messages))
    decode_s = [bench_decode(stream, len(messages)) for _ in range(args.repeats)]
    encode_s = [bench_encode(messages) for _ in range(args.repeats)]
    decode_rate = len(messages) / statistics.median(decode_s)
    encode_rate = len(messages) / statistics.median(encode_s)
    result = {
        "benchmark": "bench_codec",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "pinned_cpu": cpu,
        "messages": len(messages),
        "stream_bytes": len(stream),
        "mean_wire_bytes_per_message": round(len(stream) / len(messages), 2),
        "repeats": args.repeats,
        "decode_seconds": [round(s, 4) for s in decode_s],
        "decode_messages_per_s_median": round(decode_rate),
        "decode_mb_per_s_median": round(len(stream) / statistics.median(decode_s) / 1e6, 2),
        "encode_seconds": [round(s, 4) for s in encode_s],
        "encode_messages_per_s_median": round(encode_rate),
        "target_decode_messages_per_s": TARGET_MSG_S,
        "meets_target": decode_rate >= TARGET_MSG_S,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"decoder: {decode_rate:,.0f} messages/s on one core (target {TARGET_MSG_S:,}); wrote {args.out}")


if __name__ == "__main__":
    main()
