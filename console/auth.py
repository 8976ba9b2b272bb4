"""Operator passwords (Argon2id, salted, via argon2-cffi) and the roles' rights.

Why Argon2id: a stolen console database must not give away operator passwords; argon2-cffi salts each hash and
stores its parameters with it, so the parameters can be raised later (``needs_rehash``) without locking anyone
out. The rights are a table, not ``if`` chains spread over the routes.
"""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD = 8
_HASHER = PasswordHasher()

RIGHTS: dict[str, frozenset[str]] = {
    "operator": frozenset({"view", "verdict"}),
    "supervisor": frozenset({"view", "verdict", "reopen", "manage_users", "audit"}),
}
"""What each role may do; a supervisor is also an operator."""


def may(role: str, right: str) -> bool:
    return right in RIGHTS.get(role, frozenset())


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` with a fresh salt; ValueError if it is shorter than 8 characters."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


@functools.cache
def _stand_in() -> str:
    return _HASHER.hash(secrets.token_urlsafe(16))


def check_password(stored: str | None, password: str) -> bool:
    """True iff ``password`` matches ``stored`` (False for a user without a password: proxy sign-in only, and for
    an unknown login: ``None``).

    Without a hash to check, a stand-in hash is verified anyway: the answer takes as long as for a known login,
    so the time of a failed sign-in does not tell which logins exist (it was ~1 ms against ~50 ms).
    """
    try:
        if not stored:
            _HASHER.verify(_stand_in(), password)
            return False
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
