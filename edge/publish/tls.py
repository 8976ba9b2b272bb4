"""Build the broker connection's TLS context and credentials from config, failing at startup with the key named.

A missing CA, certificate or key file, a key that does not match its certificate or a wrong passphrase are
config mistakes: they raise ``PublishError`` naming the config key and the file, before any connection is
tried. A CA that does not match the broker can only show at connect time; ``explain_connect_error`` turns that
(and the other socket errors) into one sentence for the log, the health topic and ``edge status``.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from edge.config.mqtt import MqttConfig, TlsConfig
from edge.config.secrets import read_secret
from edge.errors import PublishError
from edge.publish.health import LinkHealthState


def _require_file(key: str, path: Path) -> None:
    if not path.is_file():
        raise PublishError(f"{key}: {path}: no such file" if not path.exists() else f"{key}: {path}: not a file")


def build_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.2+ client context trusting ``ca_file`` and presenting the client certificate if configured.

    Raises:
        PublishError: a file is missing or unreadable, the CA file is not PEM, or certificate and key do not
            load together (wrong passphrase, key of another certificate).
        ConfigError: the passphrase file or credential cannot be read.
    """
    _require_file("mqtt.tls.ca_file", tls.ca_file)
    if tls.key_file is not None and tls.cert_file is None:
        raise PublishError("mqtt.tls.key_file is set but mqtt.tls.cert_file is not; set both or neither")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    except (ssl.SSLError, ValueError) as exc:
        raise PublishError(f"mqtt.tls.ca_file: {tls.ca_file}: not a usable PEM CA certificate ({exc})") from exc
    except OSError as exc:
        raise PublishError(f"mqtt.tls.ca_file: {tls.ca_file}: cannot read ({exc.strerror})") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        _require_file("mqtt.tls.cert_file", tls.cert_file)
        if tls.key_file is not None:
            _require_file("mqtt.tls.key_file", tls.key_file)
        passphrase = read_secret(
            "mqtt.tls.key_passphrase_file", tls.key_passphrase_file, tls.key_passphrase_credential
        )
        try:
            ctx.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None, password=passphrase
            )
        except ssl.SSLError as exc:
            raise PublishError(
                f"mqtt.tls.cert_file/key_file: cannot load {tls.cert_file} with key {tls.key_file} "
                f"({exc.reason or exc}); check the key matches the certificate and the passphrase is right"
            ) from exc
        except OSError as exc:
            raise PublishError(f"mqtt.tls.cert_file: {tls.cert_file}: cannot read ({exc.strerror})") from exc
    if tls.insecure_skip_hostname_check:
        ctx.check_hostname = False
    return ctx


def read_credentials(config: MqttConfig) -> tuple[str | None, str | None]:
    """(username, password) from config and the password file or credential; both None if not configured."""
    password = read_secret("mqtt.password_file", config.password_file, config.password_credential)
    if password is not None and config.username is None:
        raise PublishError("mqtt.password_file/password_credential is set but mqtt.username is not")
    return config.username, password


def explain_connect_error(exc: BaseException, config: MqttConfig) -> tuple[LinkHealthState, str]:
    """Link state and a sentence naming the cause of a failed connect; ERROR means retrying will not help."""
    where = f"{config.host}:{config.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = config.tls.ca_file if config.tls is not None else "?"
        return LinkHealthState.ERROR, (
            f"TLS: the broker's certificate at {where} is not trusted by mqtt.tls.ca_file {ca} "
            f"({exc.verify_message or exc.reason}); wrong CA file, or the broker's certificate is for another host"
        )
    if isinstance(exc, ssl.SSLError):
        text = f"{exc.reason or exc}"
        if "CERTIFICATE_REQUIRED" in text.upper() or "HANDSHAKE_FAILURE" in text.upper():
            return LinkHealthState.ERROR, (
                f"TLS: the broker at {where} refused the handshake ({text}); it probably requires a client "
                "certificate: set mqtt.tls.cert_file and mqtt.tls.key_file"
            )
        return LinkHealthState.ERROR, f"TLS handshake with {where} failed ({text})"
    if isinstance(exc, ConnectionRefusedError):
        return LinkHealthState.DOWN, f"no broker listening at {where} (connection refused)"
    if isinstance(exc, socket.gaierror):
        return LinkHealthState.DOWN, f"cannot resolve broker host {config.host!r} ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return LinkHealthState.DOWN, f"broker at {where} did not answer (timeout)"
    if isinstance(exc, OSError):
        return LinkHealthState.DOWN, f"cannot reach broker at {where} ({exc.strerror or exc})"
    return LinkHealthState.ERROR, f"connecting to {where} failed ({type(exc).__name__}: {exc})"


def explain_lost_connection(last_error: str | None, had_connack: bool,
                            config: MqttConfig) -> tuple[LinkHealthState, str]:
    """Why a connection ended: before CONNACK with a TLS alert means the client certificate was refused."""
    where = f"{config.host}:{config.port}"
    text = last_error or "closed by the broker"
    upper = text.upper()
    if not had_connack and config.tls is not None and (
        "CERTIFICATE" in upper or "SSL" in upper or "ALERT" in upper
    ):
        hint = ("it requires a client certificate: set mqtt.tls.cert_file and mqtt.tls.key_file"
                if config.tls.cert_file is None
                else "it does not accept mqtt.tls.cert_file (signed by a CA the broker does not trust?)")
        return LinkHealthState.ERROR, (
            f"TLS: the broker at {where} closed the connection during the handshake ({text}); {hint}"
        )
    if not had_connack:
        return LinkHealthState.DOWN, f"broker at {where} closed the connection before accepting it ({text})"
    return LinkHealthState.DOWN, f"connection to {where} lost ({text})"
