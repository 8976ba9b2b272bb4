"""What the actions sink costs the publish thread per ALARM/UNSCREENED decision (CLEAR ones cost nothing).

``Actions.publish`` writes the item's divert and beacon rows to the actions store (SQLite, WAL,
``synchronous=FULL``: one fsync) before it returns; the commands go out on the actions thread. Times ``publish``
for N decisions into a fresh store on the given directory (default a temporary one under /tmp; pass the state
disk to measure it) with a firmware link that is never up, and prints the distribution as JSON.

    .venv/bin/python benchmarks/bench_actions.py [N] [DIRECTORY]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from edge.actions import Actions
from edge.actions.store import ActionStore
from edge.config.actions import ActionsConfig, BeaconConfig, DivertConfig
from edge.records import Decision, Verdict
from firmware_bridge.link import FirmwareLink
from firmware_bridge.transport import serial_opener


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="bench-actions-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(dir=root))
    config = ActionsConfig(divert=DivertConfig(eye_to_exit_mm=800, distance_mm=1500), beacon=BeaconConfig())
    link = FirmwareLink(serial_opener(str(work / "no-port")))  # never started: commands only queue
    actions = Actions(config, link, ActionStore(work / "actions.sqlite3"), "bench", 10.0, [])
    times = []
    try:
        for k in range(n):
            now = time.time()
            decision = Decision(f"lane1-{k}", "lane1", Verdict.ALARM, None, "", (), None, now, now, now, 1.0,
                                1000 * k, 1000 * k + 500, item_uid=uuid.uuid4().hex)
            t0 = time.perf_counter()
            actions.publish(decision)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        actions.close(0)
    times.sort()
    print(json.dumps({"bench": "actions_publish", "decisions": n, "directory": str(root),
                      "median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(n * 0.9)], 2),
                      "max_ms": round(times[-1], 2)}))


if __name__ == "__main__":
    main()
