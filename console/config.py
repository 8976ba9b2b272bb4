"""The console's config file (``/etc/edge/console.yaml``): pydantic models, loaded with the box's YAML loader.

Why a file of its own: the console runs on the control-room machine, not on a box, and reads none of the box's
settings. It reuses ``edge.config.loader.load_yaml_model`` (a generic YAML → pydantic loader) so a mistake is
reported the same way as on the box: one ``file:line: key.path: what; what is valid`` line per problem, all at
once. Every key is documented in ``systemd/edge-console.example.yaml`` (a test compares them).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config.loader import Loc, format_loc, key_lines, line_for, load_yaml_model

DEFAULT_CONSOLE_CONFIG = Path("/etc/edge/console.yaml")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class _Base(BaseModel):
    """``extra="forbid"``: a typo is an error; ``frozen``: nothing changes config at run time."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ListenConfig(_Base):
    """Where the web page is served (always HTTPS)."""

    host: str = Field("0.0.0.0", description="address to listen on (0.0.0.0 = every interface)")
    port: int = Field(8443, ge=1, le=65535, description="HTTPS port")
    cert_file: Path | None = Field(
        None, description="PEM certificate of the page; absent = a self-signed one is made at first start in "
        "data_dir/tls (its SHA-256 fingerprint is logged so operators can check it)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    public_url: str | None = Field(None, description="URL operators type, printed at start; default "
                                                     "https://<host>:<port>/")

    @model_validator(mode="after")
    def _both_or_neither(self) -> ListenConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither (a self-signed pair is then made)")
        return self


class DatabaseConfig(_Base):
    """Where decisions, images, verdicts, users and the who-did-what log are stored."""

    url: str = Field(
        "sqlite:////var/lib/edge-console/console.sqlite3",
        description="SQLAlchemy URL: sqlite:////abs/path.sqlite3 (default, nothing to set up) or "
        "postgresql+psycopg://user@host:5432/dbname (a large control room)")
    table_prefix: str = Field("console_", description="prefix of every table name (lower case, digits, '_'), so "
                                                      "one database can hold several consoles")
    password_file: Path | None = Field(None, description="file holding the database password (PostgreSQL), "
                                                         "kept out of the URL")
    keep_days: float = Field(90.0, gt=0, le=3650, description="decisions, images and actions older than this are "
                                                             "deleted, but never an alarm still waiting for a "
                                                             "verdict (verdicts and the who-did-what log are kept)")

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not (value.startswith("sqlite:///") or value.startswith("postgresql")):
            raise ValueError("expected sqlite:///<path> or postgresql+psycopg://user@host:port/db")
        return value

    @field_validator("table_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("1-31 characters: a lower-case letter, then lower-case letters, digits or '_'")
        return value


class BrokerTls(_Base):
    """TLS to one broker."""

    ca_file: Path = Field(description="PEM file of the CA that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="PEM client certificate (require_certificate brokers)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    insecure_skip_hostname_check: bool = Field(False, description="accept a certificate for another host name")


class BrokerConfig(_Base):
    """One broker the console listens to (a site's broker, or the control room's own that the sites bridge to)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="short name, shown on the page and in logs")
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port (8883 is usual for TLS)")
    client_id: str | None = Field(
        None, description="MQTT client id; default edge-console-<console_id>-<name>. Keep it fixed: the broker "
        "keeps the console's session (and queues QoS 1 decisions) under it while the console is down")
    username: str | None = Field(None, description="user name, if the broker wants one")
    password_file: Path | None = Field(None, description="file holding the password (mode 0600)")
    tls: BrokerTls | None = Field(None, description="TLS settings; absent = plain TCP")
    topics: tuple[str, ...] = Field(
        ("xray/+/+/#",), min_length=1,
        description="topic filters; each box publishes under <prefix>/..., the default prefix is "
        "xray/<site>/<scanner>, so xray/+/+/# is every box on this broker")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    session_expiry_s: int = Field(
        7 * 86400, ge=0, le=4_294_967_295,
        description="how long the broker keeps the console's session (and queues decisions) while it is away")


class AuthConfig(_Base):
    """Operator sign-in."""

    proxy_header: str | None = Field(
        None, description="trust this request header (e.g. X-Remote-User) as the signed-in login when the request "
        "comes from trusted_proxies; the login must exist in the console's users (its role comes from there)")
    trusted_proxies: tuple[str, ...] = Field(("127.0.0.1", "::1"), description="addresses of the reverse proxy")
    session_max_age_s: int = Field(12 * 3600, ge=60, le=30 * 86400,
                                   description="a session ends this long after sign-in")

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each entry is compared with the request's peer address as text: a host name or a network (10.0.0.0/24)
        would never match, and the proxy's sign-ins would all fail without a word."""
        bad = []
        for entry in value:
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                bad.append(entry)
        if bad:
            raise ValueError(f"{', '.join(repr(b) for b in bad)}: expected IP addresses of the reverse proxy, one "
                             "each (host names and networks are not matched)")
        return tuple(str(ipaddress.ip_address(entry)) for entry in value)


class VerdictConfig(_Base):
    """Verdicts sent back to the boxes (contract: docs/control-room.md)."""

    resend_s: float = Field(10.0, gt=0, le=3600,
                            description="a verdict not acknowledged by its box is sent again after this long")


class ConsoleConfig(_Base):
    """The whole console config file."""

    console_id: str = Field("console-1", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                            description="this console's name, sent in every verdict (console_id)")
    data_dir: Path = Field(Path("/var/lib/edge-console"), description="folder for the self-signed "
                                   "certificate (data_dir/tls); the session signing key is in the database")
    listen: ListenConfig = Field(default_factory=ListenConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    verdicts: VerdictConfig = Field(default_factory=VerdictConfig)
    brokers: tuple[BrokerConfig, ...] = Field(min_length=1, description="the brokers to listen to")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    @model_validator(mode="after")
    def _unique_names(self) -> ConsoleConfig:
        names = [b.name for b in self.brokers]
        if len(set(names)) != len(names):
            raise ValueError(f"broker names must be unique, got {names}")
        return self


def load_console_config(path: Path) -> ConsoleConfig:
    """Read and validate ``path``; raises ``edge.errors.ConfigError`` listing every problem (file:line: key)."""
    return load_yaml_model(path, ConsoleConfig)


def file_problems(config: ConsoleConfig, path: Path) -> list[str]:
    """The files the console reads at start (certificate and key, database and broker passwords, broker TLS) that
    do not exist or this user cannot read, one ``file:line: key.path: ...`` line each.

    Why here and not at first use: ``edge console check`` said "ok" for a config whose broker password file was
    missing, and ``run`` then stopped with a ``FileNotFoundError`` traceback (a crash loop under systemd). The
    contents are not read (a secret never reaches the output).
    """
    files: list[tuple[Loc, Path | None]] = [
        (("listen", "cert_file"), config.listen.cert_file), (("listen", "key_file"), config.listen.key_file),
        (("database", "password_file"), config.database.password_file)]
    for i, broker in enumerate(config.brokers):
        files.append((("brokers", i, "password_file"), broker.password_file))
        if broker.tls is not None:
            files += [(("brokers", i, "tls", "ca_file"), broker.tls.ca_file),
                      (("brokers", i, "tls", "cert_file"), broker.tls.cert_file),
                      (("brokers", i, "tls", "key_file"), broker.tls.key_file)]
    lines = key_lines(path)
    return [f"{path}:{line_for(loc, lines)}: {format_loc(loc)}: {file} is not a file this user can read"
            for loc, file in files if file is not None and not (file.is_file() and os.access(file, os.R_OK))]
