"""Verdicts a console (or anything else on the topic) gets wrong, against the real audit store: every one answered
``stored: false`` with a short reason carrying its verdict id where there is one, nothing stored that a strict
JSON reader of the audit store would choke on, and an ack that never echoes a huge message back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from publish_helpers import make_decision
from verdict_helpers import item_record_id, verdict

from edge.config.audit import AuditConfig
from edge.config.site import SiteConfig
from edge.sinks.audit import AuditStore
from edge.verdicts import MAX_ERROR_CHARS, MAX_PAYLOAD_BYTES, VerdictStore

SITE = SiteConfig(site_id="hub", scanner_id="s1")


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[AuditStore, dict[str, object]]]:
    """An audit store holding one ALARM record, and a valid verdict for it."""
    audit = AuditStore(AuditConfig(directory=tmp_path / "audit", min_free_mb=0), SITE.site_id)
    d = make_decision(5, scanner_id="s1")
    audit.publish(d)
    try:
        yield audit, verdict(item_record_id(SITE, d), d.item_id)
    finally:
        audit.close(1.0)


def _verdict_files(audit_root: Path) -> list[Path]:
    return sorted(audit_root.glob("*/*.verdict-*.json"))


def test_nan_and_infinity_are_refused_with_the_verdict_id_and_nothing_is_stored(
        stored: tuple[AuditStore, dict[str, object]], tmp_path: Path) -> None:
    """Python's json reads NaN/Infinity; the schema's ``minimum: 0`` lets them through (NaN < 0 is false), and the
    store wrote ``"decided_wall": NaN`` into the audit store (not JSON) with no OPERATOR report."""
    audit, body = stored
    store = VerdictStore(audit)
    for constant in ("NaN", "Infinity"):
        text = json.dumps({**body, "decided_wall": 0.5}).replace("0.5", constant)
        ack = store.handle(text.encode())
        assert (ack.stored, ack.verdict_id) == (False, body["verdict_id"]), ack
        assert ack.error == f"not JSON: {constant} is not a JSON number"
    ack = store.handle(json.dumps({**body, "decided_wall": 1e300}).encode())
    assert ack.stored is False and ack.error is not None and "decided_wall: 1e+300 is not a time" in ack.error
    ack = store.handle(json.dumps({**body, "decided_wall": 10**400}).encode())  # no float holds it
    assert ack.stored is False and ack.error is not None and "(401 digits) is not a time" in ack.error
    assert _verdict_files(tmp_path / "audit") == []
    assert store.handle(json.dumps(body).encode()).stored is True  # the same verdict, sane, is stored
    (path,) = _verdict_files(tmp_path / "audit")
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the audit store"))
    assert path.with_name(path.name.replace(".json", ".tdr.dcs")).exists()  # with its OPERATOR report


def test_a_huge_message_is_refused_unread_and_the_ack_stays_short(
        stored: tuple[AuditStore, dict[str, object]]) -> None:
    audit, body = stored
    store = VerdictStore(audit)
    huge = json.dumps({**body, "note": "x" * (MAX_PAYLOAD_BYTES + 1)}).encode()
    ack = store.handle(huge)
    assert ack.stored is False and ack.error is not None and f"at most {MAX_PAYLOAD_BYTES} bytes" in ack.error
    assert len(ack.payload()) < 400
    # Under the bound but not the schema (the note is at most 4,000 characters; the operator at most 64): the
    # schema's message quotes the whole value, the ack carries at most MAX_ERROR_CHARS of it.
    for field, value in (("note", "y" * 100_000), ("operator", "é" * 10_000)):
        ack = store.handle(json.dumps({**body, field: value}).encode())
        assert ack.stored is False and ack.verdict_id == body["verdict_id"]
        assert ack.error is not None and ack.error.startswith(f"not a verdict-1 message: {field}: ")
        assert len(ack.error) <= MAX_ERROR_CHARS, len(ack.error)
    deep = b"[" * 50_000 + b"]" * 50_000
    ack = store.handle(deep)
    assert (ack.stored, ack.error) == (False, "not JSON: nested too deep")
    assert store.refused == 4 and store.stored == 0


def test_unicode_operator_names_reach_the_operator_report(
        stored: tuple[AuditStore, dict[str, object]], tmp_path: Path) -> None:
    from edge.dicos import read_tdr

    audit, body = stored
    ack = VerdictStore(audit).handle(json.dumps({**body, "operator": "Zoë Łukasz 山田"}).encode())
    assert ack.stored is True, ack
    (path,) = _verdict_files(tmp_path / "audit")
    assert json.loads(path.read_text())["operator"] == "Zoë Łukasz 山田"
    report = read_tdr(path.with_name(path.name.replace(".json", ".tdr.dcs")))
    assert report.operators == ("Zoë Łukasz 山田",)


def test_a_disk_that_fills_between_report_and_json_leaves_no_operator_report(tmp_path: Path) -> None:
    """Room for the OPERATOR report but not for the verdict's JSON: the box answers stored=false, and the report
    it had written stayed behind: an operator verdict on record that the box says it did not store. Each amount
    of free space (1 to 4 pages) must give both files or neither."""
    import os
    import subprocess

    where = tmp_path / "fs"
    where.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1048576", "tmpfs", str(where)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk case (needs root): {mount.stderr.strip()}")
    page = os.sysconf("SC_PAGE_SIZE")
    audit = AuditStore(AuditConfig(directory=where / "audit", min_free_mb=0), SITE.site_id)
    try:
        d = make_decision(5, scanner_id="s1")
        audit.publish(d)
        store = VerdictStore(audit)
        outcomes = []
        for pages in range(1, 5):
            spare, filler = where / "spare", where / "filler"
            spare.write_bytes(b"\0" * (pages * page))
            with open(filler, "wb", buffering=0) as fh:
                for size in (65536, 512, 1):
                    while True:
                        try:
                            fh.write(b"\0" * size)
                        except OSError:
                            break
            spare.unlink()  # exactly `pages` pages free
            ack = store.handle(json.dumps(verdict(item_record_id(SITE, d), d.item_id)).encode())
            files = sorted(p.name for p in (where / "audit").glob("*/*.verdict-*"))
            outcomes.append((pages, ack.stored, len(files)))
            for name in files:  # room for the next round
                next((where / "audit").glob(f"*/{name}")).unlink()
            filler.unlink()
        assert all(n == (2 if stored else 0) for _, stored, n in outcomes), outcomes
        assert any(not stored for _, stored, _ in outcomes) and any(stored for _, stored, _ in outcomes), outcomes
    finally:
        audit.close(1.0)
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
