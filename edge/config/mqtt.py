"""``mqtt:`` section: broker connection, TLS, credentials, topics and the disk-backed outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edge.config.base import EdgeBaseConfig


class TlsConfig(EdgeBaseConfig):
    """TLS to the broker. Paths are read at connect time, not at config load."""

    ca_file: Path = Field(description="PEM file of the CA that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="PEM client certificate (for require_certificate brokers)")
    key_file: Path | None = Field(None, description="PEM private key of the client certificate")
    key_passphrase_file: Path | None = Field(None, description="file holding the key's passphrase, if any")
    key_passphrase_credential: str | None = Field(
        None, description="name of a systemd credential holding the key's passphrase"
    )
    insecure_skip_hostname_check: bool = Field(False, description="accept a certificate for another host name")


class OutboxConfig(EdgeBaseConfig):
    """Disk-backed outbox: records are stored before publishing and deleted on PUBACK."""

    path: Path = Field(Path("/var/lib/edge/outbox.sqlite3"), description="SQLite file of the outbox")
    max_records: int = Field(
        100_000, ge=100, le=10_000_000,
        description="bound on stored records during a broker outage: past it the oldest health, then image records "
        "are evicted; item records only past four times this (they are small); alarms never",
    )
    max_bytes: int = Field(
        512_000_000, ge=100_000, le=1_000_000_000_000,
        description="bound on the bytes of stored payloads (images are up to image_max_bytes each): past it the "
        "oldest health, then image, then item records are evicted; alarms never",
    )
    memory_max_bytes: int = Field(
        64_000_000, ge=100_000, le=4_000_000_000,
        description="bytes of records kept in memory while the outbox cannot write (disk full, I/O error, "
        "read-only); past it the oldest health, image, then item records are dropped; alarms never",
    )
    synchronous: Literal["full", "normal"] = Field(
        "full",
        description="SQLite synchronous mode: full = a stored record survives power loss (about 2,500 commits/s "
        "here), normal = it survives a process crash only",
    )


class MqttConfig(EdgeBaseConfig):
    """Publishing to the control room over MQTT."""

    enabled: bool = Field(True, description="publish to a broker at all")
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port (8883 is usual for TLS)")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version; 3.1.1 for old brokers")
    client_id: str | None = Field(None, description="client id; default edge-<site>-<scanner>")
    keepalive_s: int = Field(
        30, ge=1, le=3600,
        description="keepalive interval in seconds; the broker publishes the last will after 1.5 x this of silence",
    )
    inflight_max: int = Field(
        100, ge=1, le=65535, description="records published but not yet acknowledged (PUBACK), at most"
    )
    topic_prefix: str | None = Field(None, description="topic prefix; default xray/<site_id>/<scanner_id>")
    qos: Literal[1, 2] = Field(1, description="QoS of items, alarms, images and health (1 = at least once); 0 is "
                                              "refused: the outbox forgets a record only when the broker "
                                              "acknowledges it, and QoS 0 has no acknowledgement")
    username: str | None = Field(None, description="user name, if the broker wants one")
    password: None = Field(None, description="never set: use password_file or password_credential")
    password_file: Path | None = Field(None, description="file holding the password (mode 0600)")
    password_credential: str | None = Field(None, description="systemd credential name holding the password")
    tls: TlsConfig | None = Field(None, description="TLS settings; absent = plain TCP")
    reconnect_min_s: float = Field(1.0, gt=0, le=60, description="first reconnect delay in seconds")
    reconnect_max_s: float = Field(30.0, gt=0, le=600, description="longest reconnect delay in seconds")
    image_max_bytes: int = Field(
        300_000, ge=10_000, le=10_000_000, description="overlay JPEG size cap in bytes (quality is lowered to fit)"
    )
    health_interval_s: float = Field(30.0, ge=1, le=3600, description="seconds between health records")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="disk-backed outbox")

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                "inline passwords are not allowed; put it in a file and set password_file, "
                "or use password_credential with systemd LoadCredential="
            )
        return None
