"""Secrets come from files or from systemd's credentials directory, never from the YAML itself.

``LoadCredential=mqtt-password:/etc/edge/secrets/mqtt-password`` in the unit makes the secret readable at
``$CREDENTIALS_DIRECTORY/mqtt-password`` by the service only; the config names ``password_credential:
mqtt-password``. Outside systemd, ``password_file:`` names a file (mode 0600).
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.errors import ConfigError


def read_secret(key_path: str, file: Path | None, credential: str | None) -> str | None:
    """Return the secret named by ``file`` or ``credential`` (trailing newline stripped), or None if neither.

    Raises:
        ConfigError: the named file or credential cannot be read; the message names the config key.
    """
    if file is None and credential is None:
        return None
    if credential is not None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                [f"{key_path}: credential {credential!r} requested but $CREDENTIALS_DIRECTORY is not set "
                 "(run under systemd with LoadCredential=, or use a *_file key instead)"]
            )
        file = Path(directory) / credential
    assert file is not None
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError([f"{key_path}: cannot read secret file {file} ({exc.strerror})"]) from exc
