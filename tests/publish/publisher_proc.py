"""The edge publishing process for the kill tests: runs an MqttSink in its own process so a test can SIGKILL it.

Publishes decisions ``start .. count-1`` (continuing from the progress file if one exists: that is how the
restarted "pipeline" knows where it was), writes the last index stored in the outbox to the progress file, then
flushes and exits 0 when the outbox is empty. ``--hold`` keeps it connected without publishing (last-will test).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from publish_helpers import make_decision

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.publish import MqttSink


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--outbox", type=Path, required=True)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--rate", type=float, default=200.0, help="decisions per second")
    ap.add_argument("--progress", type=Path)
    ap.add_argument("--keepalive", type=int, default=5)
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--flush-timeout", type=float, default=40.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="publisher %(levelname)s %(message)s")
    cfg = MqttConfig(port=args.port, keepalive_s=args.keepalive, reconnect_min_s=0.1, reconnect_max_s=0.5,
                     outbox={"path": args.outbox})
    sink = MqttSink(cfg, SiteConfig(site_id="acc", scanner_id="s1")).start()
    if args.hold:
        print("READY", flush=True)
        while True:
            time.sleep(1)
    start = 0
    if args.progress is not None and args.progress.exists() and args.progress.read_text().strip():
        start = int(args.progress.read_text()) + 1
    t0 = time.monotonic()
    for i in range(start, args.count):
        sink.publish_decision(make_decision(i))
        if args.progress is not None:
            args.progress.write_text(str(i))
        delay = t0 + (i - start + 1) / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    ok = sink.close(args.flush_timeout)
    print(f"DONE flushed={ok}", flush=True)
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
