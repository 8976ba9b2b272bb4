"""Operator passwords (Argon2id, salted, via argon2-cffi) and the roles' rights.

Why Argon2id: a stolen console database must not give away operator passwords; argon2-cffi salts each hash and
stores its parameters with it, so the parameters can be raised later (``needs_rehash``) without locking anyone
out. The rights are a table, not ``if`` chains spread over the routes.
"""

from __future__ import annotations

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


def check_password(stored: str | None, password: str) -> bool:
    """True iff ``password`` matches ``stored`` (False for a user without a password: proxy sign-in only)."""
    if not stored:
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
