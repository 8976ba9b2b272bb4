"""``edge console run``: the database, the broker sessions, the verdict sender and the HTTPS server, together.

uvicorn serves the page (HTTPS only: the configured certificate, or a self-signed one made at first start and
kept in ``data_dir/tls``) and handles SIGINT/SIGTERM; when it returns, the broker sessions and the sender stop.
A stop at any point loses nothing: decisions are acknowledged to the broker after they are stored, verdicts
are stored before the operator sees them accepted (``console.intake``).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from console.config import ConsoleConfig
from console.db import Tables, create_tables, open_engine
from console.hub import Hub
from console.intake import BrokerLink, VerdictSender, Writer, open_links
from console.store import ConsoleStore, Pruned

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0


def open_store(config: ConsoleConfig) -> ConsoleStore:
    """The store on the configured database, its tables created if missing."""
    engine = open_engine(config.database)
    tables = Tables(config.database.table_prefix)
    create_tables(engine, tables)
    return ConsoleStore(engine, tables)


def database_name(config: ConsoleConfig) -> str:
    """The database URL as it may be logged (no password)."""
    from sqlalchemy.engine import make_url

    return make_url(config.database.url).render_as_string(hide_password=True)


def open_store_waiting(config: ConsoleConfig, stop: threading.Event | None = None,
                       max_delay_s: float = 30.0) -> ConsoleStore | None:
    """:func:`open_store`, tried again (back-off 1 s to ``max_delay_s``) while the database cannot be reached;
    None if ``stop`` is set meanwhile.

    Why wait instead of exiting: after a power cut the control-room machine may boot before the PostgreSQL
    server; exiting made systemd restart the console five times in ten seconds and then give up for good
    (``StartLimitBurst``), and each attempt printed a traceback. One line per attempt says what is wrong.
    """
    from sqlalchemy.exc import OperationalError

    delay = 1.0
    while True:
        try:
            return open_store(config)
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            log.error("database %s cannot be reached (%s); trying again in %.0f s", database_name(config), reason,
                      delay)
        if stop is not None and stop.wait(delay):
            return None
        if stop is None:
            time.sleep(delay)
        delay = min(2 * delay, max_delay_s)


def self_signed(directory: Path, host_names: list[str]) -> tuple[Path, Path]:
    """``directory/console.crt`` and ``console.key``, made once (EC P-256, 10 years, SAN = the names given).

    Why self-signed by default: a closed control-room network often has no CA; HTTPS still protects passwords
    and sessions on the wire, and the fingerprint (logged at every start) lets an operator check the browser's
    warning once. A site CA's certificate goes in ``listen.cert_file``/``key_file``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    crt, key_path = directory / "console.crt", directory / "console.key"
    if crt.is_file() and key_path.is_file():
        return crt, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys(host_names):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def fingerprint(cert_file: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass
class ConsoleParts:
    """What runs besides the web server; built by :func:`build`, started and stopped together."""

    config: ConsoleConfig
    store: ConsoleStore
    hub: Hub
    writer: Writer
    links: dict[str, BrokerLink]
    sender: VerdictSender

    def start(self) -> None:
        self.writer.start()
        for link in self.links.values():
            link.start()
        self.sender.start()

    def broker_states(self) -> list[dict[str, object]]:
        """The console's own connection to each broker, for the page (a lost one makes every lane look idle)."""
        return [{"name": name, "host": f"{link.config.host}:{link.config.port}",
                 "connected": link.connected.is_set(), "error": link.last_error}
                for name, link in self.links.items()]

    def stop(self) -> None:
        self.sender.stop()
        for link in self.links.values():
            link.stop()
        self.writer.stop()
        self.store.engine.dispose()


def build(config: ConsoleConfig, store: ConsoleStore | None = None) -> ConsoleParts:
    store = open_store(config) if store is None else store
    hub = Hub()
    writer = Writer(store, hub.publish)
    links = open_links(config, store, writer)
    return ConsoleParts(config, store, hub, writer, links, VerdictSender(store, links, config.verdicts.resend_s))


def prune_once(store: ConsoleStore, keep_days: float, now: float | None = None) -> Pruned:
    """One retention pass: decisions, pictures and actions older than ``keep_days`` go, open alarms stay.

    Logs what went, and one warning when open alarms older than ``keep_days`` were kept: they were never reviewed
    (a queue left over a long shutdown, a lane nobody watches), and the retention no longer hides that.
    """
    now = time.time() if now is None else now
    result = store.prune(now - keep_days * 86400)
    if result.items or result.images or result.actions:
        log.info("pruned %d decisions, %d pictures and %d actions older than %.0f days", result.items,
                 result.images, result.actions, keep_days)
    if result.kept_open and result.oldest_open_wall is not None:
        log.warning("%d open alarm%s older than %.0f days kept (the oldest received %.0f days ago): they wait for "
                    "an operator's verdict and are pruned once decided", result.kept_open,
                    "" if result.kept_open == 1 else "s", keep_days, (now - result.oldest_open_wall) / 86400)
    return result


def _pruner(parts: ConsoleParts, stop: threading.Event) -> None:
    while not stop.wait(PRUNE_EVERY_S):
        try:
            prune_once(parts.store, parts.config.database.keep_days)
        except Exception:
            log.exception("pruning old decisions failed; retrying in an hour")


def run_console(config: ConsoleConfig) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    import uvicorn

    from console.web import build_app

    try:
        store = open_store_waiting(config)
    except OSError as exc:  # not a database that is not up yet: a folder or file this user cannot use
        log.error("database %s cannot be opened: %s", database_name(config), exc)
        return 1
    assert store is not None
    parts = build(config, store)
    listen = config.listen
    if listen.cert_file is not None and listen.key_file is not None:
        cert, key = listen.cert_file, listen.key_file
    else:
        cert, key = self_signed(config.data_dir / "tls", [socket.gethostname(), "localhost", "127.0.0.1"])
    app = build_app(config, parts.store, parts.hub, parts.sender.wake, parts.store.setting("session_key"),
                    parts.broker_states)
    host = listen.host if listen.host not in ("0.0.0.0", "::") else socket.gethostname()
    url = listen.public_url or f"https://{host}:{listen.port}/"
    log.info("console %s at %s (certificate SHA-256 %s); brokers: %s", config.console_id, url, fingerprint(cert),
             ", ".join(f"{b.name} {b.host}:{b.port}" for b in config.brokers))
    server = uvicorn.Server(uvicorn.Config(
        app, host=listen.host, port=listen.port, ssl_certfile=str(cert), ssl_keyfile=str(key),
        log_level=config.log_level if config.log_level != "debug" else "info", access_log=False,
        timeout_graceful_shutdown=2, proxy_headers=False))
    stop = threading.Event()
    threading.Thread(target=_pruner, args=(parts, stop), name="prune", daemon=True).start()
    parts.start()
    try:
        server.run()
    finally:
        stop.set()
        parts.hub.close()
        parts.stop()
    return 0 if server.started else 1
