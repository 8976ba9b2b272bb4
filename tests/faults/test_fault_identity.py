"""Issue 29, point 2 (same item id twice). Item ids repeat on real sites: the vendor drops a file under a name
it used before, two names sanitise to the same id, the firmware's item counter restarts after a power cycle (the
sim restarts at 1). Each such item is a new parcel on the belt and must get its own decision, with its own record
id, so that a subscriber de-duplicating redeliveries by ``record_id`` (``edge watch`` does) never drops it and the
audit store never overwrites the earlier record.

Black box: the real ``edge run`` process, its spool folder, a real Mosquitto, a persistent subscriber, and the
reference subscriber ``edge watch --persistent`` as a second process.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.faults.faults_helpers import REPO, FaultRig, FedItem, ItemPool, wait_until


def test_a_repeated_item_id_in_one_run_gets_its_own_decision(rig: Callable[..., FaultRig],
                                                            item_pool: ItemPool) -> None:
    r = rig()
    r.service.start()
    first = r.spool.drop_pool(item_pool, ["same0001", "lot_0002"], first=0)
    report = r.wait_for_decisions(first, timeout_s=120.0, quiet_s=0.5)
    assert report.ok, f"the first items must be decided before the repeat: {report.summary()}"
    # A writer never replaces a file the service still holds (it stays in the spool until its decision is
    # stored): wait for the first one to be acknowledged before the name is used again.
    wait_until(lambda: not r.spool.pending(), 30, "the first items to leave the spool")
    # The same file name again (the first file has been taken), and a name that sanitises to an id in use.
    second = [r.spool.drop("same0001", *item_pool.arrays(3), batch=1),
              r.spool.drop("lot#0002", *item_pool.arrays(4), batch=1)]
    assert second[1].item_id == first[1].item_id, "the test needs two names with one sanitised id"
    fed = first + second
    report = r.wait_for_decisions(fed, timeout_s=60.0, quiet_s=3.0)
    left = r.spool.pending()
    code = r.service.stop()
    print(f"point 2 (one run): {report.summary()}; left in spool: {[p.name for p in left]}")
    assert report.ok, report.summary()
    assert left == [] and code == 0


def _start_watch(port: int, prefix: str, out: Path) -> subprocess.Popen[bytes]:
    """``edge watch`` with a persistent session, so it also gets what is published while nobody listens."""
    handle = open(out, "wb")  # noqa: SIM115 - owned by the child process for its whole life
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "watch", "--port", str(port), "--prefix", prefix, "--persistent",
         "--client-id", f"watch-{uuid.uuid4().hex[:8]}", "--duration", "600"],
        stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)


def _watch_items(text: str) -> Counter[str]:
    """Item ids of the ITEM lines ``edge watch`` printed (one line per record it did not drop as a redelivery)."""
    return Counter(m.group(1) for m in re.finditer(r" ITEM\s+\S+\s+\S+\s+(\S+)", text))


def test_item_ids_reused_after_a_restart_get_new_records(rig: Callable[..., FaultRig], item_pool: ItemPool,
                                                         tmp_path: Path) -> None:
    r = rig()
    assert r.broker is not None
    watch_out = tmp_path / "watch.txt"
    watch = _start_watch(r.broker.port, r.topic_prefix, watch_out)
    try:
        # Its session must exist before the first record is published, or the first run's records are not its.
        wait_until(lambda: "watching" in watch_out.read_text(errors="replace"), 60, "edge watch to subscribe")
        time.sleep(0.5)  # the SUBACK
        names = [f"ctr{k:04d}" for k in range(1, 5)]  # a counter that starts again at 1 after a power cycle
        fed: list[FedItem] = []
        r.service.start()
        fed += r.spool.drop_pool(item_pool, names, batch=0, first=0)
        report = r.wait_for_decisions(fed, timeout_s=120.0, quiet_s=0.5)
        assert report.ok, f"first run: {report.summary()}"
        assert r.service.stop() == 0
        assert r.spool.pending() == [], "a clean stop leaves no decided item in the spool"
        r.service.start()
        fed += r.spool.drop_pool(item_pool, names, batch=1, first=4)
        report = r.wait_for_decisions(fed, timeout_s=120.0, quiet_s=3.0)
        assert r.service.stop() == 0
    finally:
        watch.send_signal(signal.SIGINT)
        try:
            watch.wait(timeout=20)
        except subprocess.TimeoutExpired:
            watch.kill()
    lines = _watch_items(watch_out.read_text(errors="replace"))
    # A service may mark a repeated id (``lane1-ctr0001~2``): such a line still belongs to ``lane1-ctr0001``.
    watched = Counter({f"lane1-{n}": sum(c for iid, c in lines.items() if iid == f"lane1-{n}" or (
        iid.startswith(f"lane1-{n}") and not iid[len(f"lane1-{n}")].isalnum())) for n in names})
    print(f"point 2 (restart): {report.summary()}; edge watch ITEM lines per id: {dict(watched)}")
    assert report.ok, report.summary()
    assert watched == Counter({f"lane1-{n}": 2 for n in names}), watch_out.read_text(errors="replace")[-2000:]
