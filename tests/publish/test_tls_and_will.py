"""TLS with client certificates, clear reports for a wrong CA or a missing certificate, and the last will."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from publish_helpers import REPO, Broker, Collector, make_decision

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.errors import PublishError
from edge.publish import LinkHealthState, MqttSink

SITE = SiteConfig(site_id="hub", scanner_id="s1")
HERE = Path(__file__).resolve().parent


def tls_config(port: int, tmp_path: Path, tls: dict[str, object]) -> MqttConfig:
    return MqttConfig.model_validate({"port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5,
                                      "outbox": {"path": tmp_path / "outbox.sqlite3"}, "tls": tls})


def test_tls_with_a_client_certificate_and_key_passphrase_file(
    broker_factory: object, certs: dict[str, Path], tmp_path: Path
) -> None:
    b: Broker = broker_factory(tls=certs)  # type: ignore[operator]
    col = Collector(b.port, "xray/hub/s1/alarms", client_id="cr-tls", tls=certs).start()
    cfg = tls_config(b.port, tmp_path, {"ca_file": certs["ca"], "cert_file": certs["client_enc_crt"],
                                        "key_file": certs["client_enc_key"],
                                        "key_passphrase_file": certs["passphrase"]})
    with MqttSink(cfg, SITE) as sink:
        sink.publish_decision(make_decision(0))
        assert sink.flush(10), sink.link()
        assert sink.link().state is LinkHealthState.UP
    assert col.wait_for(lambda: col.json_on("/alarms"), 5)
    assert col.json_on("/alarms")[0]["item_id"] == "s1-000000"
    col.stop()


def test_wrong_ca_is_reported_as_an_error_naming_the_ca_file(
    broker_factory: object, certs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b: Broker = broker_factory(tls=certs)  # type: ignore[operator]
    cfg = tls_config(b.port, tmp_path, {"ca_file": certs["other_ca"], "cert_file": certs["client_crt"],
                                        "key_file": certs["client_key"]})
    with caplog.at_level(logging.ERROR, logger="edge.publish.mqtt"):
        sink = MqttSink(cfg, SITE).start()
        sink.publish_decision(make_decision(0))
        deadline = time.monotonic() + 5
        while sink.link().state is not LinkHealthState.ERROR and time.monotonic() < deadline:
            time.sleep(0.05)
    link = sink.link()
    assert link.state is LinkHealthState.ERROR
    assert "not trusted by mqtt.tls.ca_file" in link.reason and str(certs["other_ca"]) in link.reason
    assert any("not trusted by mqtt.tls.ca_file" in r.getMessage() for r in caplog.records)
    assert sink.backlog().alarm == 1  # nothing lost while the link is broken
    assert not sink.close(0.2)


def test_broker_refusing_a_client_without_certificate_is_reported(
    broker_factory: object, certs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b: Broker = broker_factory(tls=certs)  # type: ignore[operator]
    cfg = tls_config(b.port, tmp_path, {"ca_file": certs["ca"]})
    with caplog.at_level(logging.ERROR, logger="edge.publish.mqtt"):
        sink = MqttSink(cfg, SITE).start()
        deadline = time.monotonic() + 5
        while sink.link().state is not LinkHealthState.ERROR and time.monotonic() < deadline:
            time.sleep(0.05)
    link = sink.link()
    assert link.state is LinkHealthState.ERROR, link
    assert "client certificate" in link.reason and "mqtt.tls.cert_file" in link.reason
    assert any("client certificate" in r.getMessage() for r in caplog.records)
    sink.close(0.2)


def test_missing_certificate_file_or_wrong_passphrase_fail_at_startup(
    certs: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.crt"
    cfg = tls_config(1, tmp_path, {"ca_file": certs["ca"], "cert_file": missing, "key_file": certs["client_key"]})
    with pytest.raises(PublishError, match=r"mqtt\.tls\.cert_file: .*nope\.crt: no such file"):
        MqttSink(cfg, SITE)
    (tmp_path / "wrong").write_text("not it\n")
    cfg = tls_config(1, tmp_path, {"ca_file": certs["ca"], "cert_file": certs["client_enc_crt"],
                                   "key_file": certs["client_enc_key"], "key_passphrase_file": tmp_path / "wrong"})
    with pytest.raises(PublishError, match="passphrase"):
        MqttSink(cfg, SITE)
    cfg = tls_config(1, tmp_path, {"ca_file": certs["client_key"]})
    with pytest.raises(PublishError, match=r"mqtt\.tls\.ca_file: .*not a usable PEM CA"):
        MqttSink(cfg, SITE)


def _held_publisher(port: int, tmp_path: Path, keepalive: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "publisher_proc.py"), "--port", str(port), "--outbox",
         str(tmp_path / "outbox.sqlite3"), "--keepalive", str(keepalive), "--hold"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def _states(col: Collector) -> list[str]:
    return [str(p["state"]) for p in col.json_on("/status")]


@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_last_will_shows_offline_within_one_and_a_half_keepalives(broker: Broker, tmp_path: Path, how: str) -> None:
    """``kill``: SIGKILL, the kernel closes the socket; the will must show within 1.5 x keepalive.

    ``freeze``: SIGSTOP, the socket stays open and only the keepalive can tell (a hung box, a pulled cable).
    Mosquitto 2.0.11 sweeps keepalives lazily: on an idle broker we measured 3.5-4.4 s for keepalive 2, and up
    to 7.2 s on a loaded 2-core machine, so this case only gets a looser bound (1.5 x keepalive + 4 s)."""
    keepalive = 2
    col = Collector(broker.port, "xray/acc/s1/status", client_id=f"cr-will-{how}").start()
    proc = _held_publisher(broker.port, tmp_path, keepalive)
    try:
        assert col.wait_for(lambda: _states(col)[-1:] == ["online"], 5)
        time.sleep(1.2)  # let a keepalive ping or two pass
        killed = time.monotonic()
        proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        assert col.wait_for(lambda: _states(col)[-1:] == ["offline"], 12), _states(col)
        elapsed = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait()
    bound = 1.5 * keepalive + (0.0 if how == "kill" else 4.0)
    assert elapsed <= bound, f"offline after {elapsed:.2f} s, bound {bound} s"
    will = col.json_on("/status")[-1]
    assert "last will" in str(will["reason"])
    print(json.dumps({"how": how, "offline_after_s": round(elapsed, 2)}))
    col.stop()
