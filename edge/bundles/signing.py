"""Ed25519 signatures over a bundle's exact bytes (``bundle.sig``), and the box's trust decision.

Why: ``content_sha256`` and the per-file hashes in ``bundle.yaml`` only prove that a bundle agrees with itself;
anyone who can edit ``bundle.yaml`` can recompute them (issue 29, point 8). A signature made with a private key
that never reaches the box, checked against public keys the box's config names (``models.trusted_keys``), is what
proves the bundle is the one its owner released.

What is signed: the canonical JSON (sorted keys, no whitespace) of ``bundle.sig`` without its ``signature`` key,
which lists ``bundle.yaml`` and every file the manifest names with sha256 and size (docs/bundles.md, "Signed
bundles"). The runtime reads every file once into memory (:func:`edge.bundles.loader.load_bundle` with
``in_memory=True``) and checks hashes and signature on those bytes, which are then the very bytes compiled, so a
file changed on disk between the check and the compile cannot slip in.

Uses the ``cryptography`` package (Ed25519, RFC 8032). Never imports torch or ``export/``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.bundles.loader import Bundle, load_bundle
from edge.bundles.manifest import MANIFEST_FILE
from edge.errors import BundleError

log = logging.getLogger(__name__)

SIGNATURE_FILE = "bundle.sig"
SIGNATURE_SCHEMA = "xray-edge/bundle-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
_MAX_SIG_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the box accepts signatures from; ``key_id`` is what ``bundle.sig`` names it by."""

    key_id: str
    key: Ed25519PublicKey
    source: str


@dataclass(frozen=True, slots=True)
class SignedFile:
    """One file a signature covers: its path inside the bundle, sha256 (hex) and size in bytes."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle read into memory and checked: ``bundle.files`` holds the verified bytes the backends compile.

    ``key_id`` names the trusted key that signed it, or is None when it was accepted without a valid trusted
    signature because ``models.allow_unsigned`` is true; ``unsigned`` then says why (no signature, unknown key …).
    """

    bundle: Bundle
    key_id: str | None
    unsigned: str | None = None


def key_id_of(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key (names the key in ``bundle.sig``)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), the form ``models.trusted_keys`` files hold."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def generate_key(out: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``out`` (PKCS#8 PEM, mode 0600, never overwritten) and its public key
    to ``out`` + ``.pub`` (PEM); returns both paths.

    Raises:
        BundleError: ``out`` or its ``.pub`` exists, or cannot be written.
    """
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pub = out.with_name(out.name + ".pub")
    for path in (out, pub):
        if path.exists():
            raise BundleError(f"{path}: exists; refusing to overwrite a key (choose another name)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        pub.write_text(public_key_text(private.public_key()), encoding="ascii")
    except OSError as exc:
        raise BundleError(f"{out}: cannot write the key: {exc}") from exc
    return out, pub


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PKCS#8 PEM, unencrypted) written by :func:`generate_key` or OpenSSL."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the private key: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted PEM private key ({exc}); make one with "
                          "`edge-export keygen KEYFILE`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: a {type(key).__name__}, not an Ed25519 key; make one with "
                          "`edge-export keygen KEYFILE`")
    return key


def load_public_key(path: Path | str) -> TrustedKey:
    """Read a trusted public key: PEM (SubjectPublicKeyInfo) or the raw 32 bytes in base64 on one line.

    Raises:
        BundleError: the file is missing or unreadable, or holds no Ed25519 public key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"models.trusted_keys: {path}: cannot read the public key: {exc}") from exc
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            raw = base64.b64decode(b"".join(data.split()), validate=True)
            key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BundleError(f"models.trusted_keys: {path}: not an Ed25519 public key (PEM, or 32 raw bytes in "
                          f"base64): {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"models.trusted_keys: {path}: a {type(key).__name__}, not an Ed25519 public key")
    return TrustedKey(key_id_of(key), key, str(path))


def load_trusted_keys(keys: Iterable[Path | str | TrustedKey]) -> tuple[TrustedKey, ...]:
    """Public keys from files (or already loaded); raises BundleError for the first unusable file."""
    return tuple(k if isinstance(k, TrustedKey) else load_public_key(k) for k in keys)


def signed_files(bundle: Bundle) -> tuple[SignedFile, ...]:
    """What a signature of ``bundle`` must cover: ``bundle.yaml`` and every file it lists, sorted by path.

    Computed from the bytes in ``bundle.files`` (an in-memory bundle), never from the disk again.
    """
    paths = sorted({MANIFEST_FILE, *(f.path for f in bundle.manifest.files)})
    missing = [p for p in paths if p not in bundle.files]
    if missing:
        raise BundleError(f"{bundle.root}: not read into memory ({', '.join(missing)}); load it with in_memory=True")
    return tuple(SignedFile(p, hashlib.sha256(bundle.files[p]).hexdigest(), len(bundle.files[p])) for p in paths)


def _body(key_id: str, files: Sequence[SignedFile], signed_utc: str) -> dict[str, Any]:
    return {
        "schema": SIGNATURE_SCHEMA,
        "schema_version": SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "key_id": key_id,
        "signed_utc": signed_utc,
        "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for f in files],
    }


def signed_message(body: Mapping[str, Any]) -> bytes:
    """The bytes an Ed25519 signature is made over: canonical JSON of ``bundle.sig`` without ``signature``."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign_bundle(path: Path | str, private_key: Path | str | Ed25519PrivateKey) -> Path:
    """Sign the bundle folder at ``path``: write ``bundle.sig`` (atomically: temp file then rename).

    The bundle is read and checked first (schema, content hash, every file's sha256), so only a bundle that
    loads is ever signed. Returns the signature file's path.

    Raises:
        BundleError: the bundle does not load, the key is unusable, or the signature cannot be written.
    """
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    bundle = load_bundle(path, in_memory=True)
    kid = key_id_of(key.public_key())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = _body(kid, signed_files(bundle), now)
    body["signature"] = base64.b64encode(key.sign(signed_message(body))).decode("ascii")
    out = bundle.root / SIGNATURE_FILE
    tmp = out.with_name(f".{SIGNATURE_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="ascii")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"{out}: cannot write the signature: {exc}") from exc
    return out


def signed_copy(bundle: Path | str, out: Path, private_key: Path | str | Ed25519PrivateKey) -> Path:
    """Copy the bundle folder to ``out`` (its old signature left behind) and sign the copy; returns ``out``.

    For the demo and the benchmarks, which run the unsigned reference bundles through the real trust check with
    a key made for the run, without writing into ``models/``.
    """
    shutil.copytree(bundle, out, ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    sign_bundle(out, private_key)
    return out


def _read_signature(root: Path) -> dict[str, Any] | None:
    """``bundle.sig`` as data, None when there is none; BundleError when it is not a signature file."""
    path = root / SIGNATURE_FILE
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_SIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the signature: {exc}") from exc
    try:
        if len(data) > _MAX_SIG_BYTES:
            raise ValueError("larger than 1 MiB")
        body = json.loads(data.decode("ascii"))
        if not isinstance(body, dict) or body.get("schema") != SIGNATURE_SCHEMA:
            raise ValueError(f"schema is not {SIGNATURE_SCHEMA!r}")
        if body.get("schema_version") != SIGNATURE_VERSION or body.get("algorithm") != ALGORITHM:
            raise ValueError(f"expected schema_version {SIGNATURE_VERSION} and algorithm {ALGORITHM!r}, got "
                             f"{body.get('schema_version')!r} and {body.get('algorithm')!r}")
        if not isinstance(body.get("key_id"), str) or not isinstance(body.get("signature"), str):
            raise ValueError("key_id and signature must be strings")
        files = body.get("files")
        if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                and isinstance(f.get("bytes"), int) for f in files):
            raise ValueError("files must be a list of {path, sha256, bytes}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not a bundle signature file: {exc}") from exc
    return body


def check_signature(bundle: Bundle, trusted: Sequence[TrustedKey]) -> str:
    """The id of the trusted key whose valid signature covers exactly ``bundle``'s in-memory bytes.

    Raises:
        BundleError: naming the bundle and why: no signature, unknown key id, bad signature, or a file changed
            (or added, or removed) after signing.
    """
    where = f"refusing bundle {bundle.root}"
    body = _read_signature(bundle.root)
    if body is None:
        raise BundleError(f"{where}: no signature ({SIGNATURE_FILE} is missing); sign it with `edge-export sign "
                          f"{bundle.root} --key KEYFILE` and list the public key in models.trusted_keys")
    kid = body["key_id"]
    key = next((k for k in trusted if k.key_id == kid), None)
    if key is None:
        known = ", ".join(f"{k.key_id} ({k.source})" for k in trusted) or "none configured"
        raise BundleError(f"{where}: signed by unknown key id {kid}; models.trusted_keys has {known}")
    try:
        key.key.verify(base64.b64decode(body["signature"], validate=True), signed_message(body))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise BundleError(f"{where}: bad signature: {SIGNATURE_FILE} does not verify with key {kid} "
                          f"({key.source}); it was altered or not made by that key") from exc
    signed = {f["path"]: (f["sha256"], f["bytes"]) for f in body["files"]}
    actual = {f.path: (f.sha256, f.bytes) for f in signed_files(bundle)}
    changed = sorted(p for p in signed.keys() & actual.keys() if signed[p] != actual[p])
    added = sorted(actual.keys() - signed.keys())
    removed = sorted(signed.keys() - actual.keys())
    problems = [f"{p} changed after signing (sha256 {actual[p][0][:12]}…, signed {signed[p][0][:12]}…)"
                for p in changed]
    problems += [f"{p} was added after signing" for p in added]
    problems += [f"{p} was removed after signing" for p in removed]
    if problems:
        raise BundleError(f"{where}: signed by key {kid}, but " + "; ".join(problems)
                          + "; re-sign it if the change is yours (`edge-export sign`)")
    return str(kid)


def verify_bundle(path: Path | str, trusted_keys: Iterable[Path | str | TrustedKey],
                  allow_unsigned: bool = False) -> VerifiedBundle:
    """Read the bundle at ``path`` into memory, check it, and decide whether this box trusts it.

    The one entry point for the runtime (``edge.screening``) and for ``edge check``. Every file is read once;
    schema, content hash, file hashes and the signature are checked on those bytes; the returned
    ``VerifiedBundle.bundle.files`` are the bytes to compile.

    Args:
        path: the bundle folder (or its ``bundle.yaml``).
        trusted_keys: public-key files (``models.trusted_keys``) or loaded :class:`TrustedKey`.
        allow_unsigned: accept a bundle without a valid trusted signature (logged as a warning; the caller
            reports the service degraded). A bundle whose hashes do not match is refused either way.

    Raises:
        BundleError: the bundle does not load (schema, hash, missing file), a trusted-key file is unusable, or
            (unless ``allow_unsigned``) the signature is missing, by an unknown key, bad, or older than a file.
    """
    trusted = load_trusted_keys(trusted_keys)
    bundle = load_bundle(path, in_memory=True)
    try:
        kid = check_signature(bundle, trusted)
    except BundleError as exc:
        if not allow_unsigned:
            raise
        reason = str(exc).split(": ", 1)[-1]
        log.warning("RUNNING AN UNVERIFIED BUNDLE because models.allow_unsigned is true: nothing proves who made "
                    "it", extra={"bundle": str(bundle.root), "why": reason})
        return VerifiedBundle(bundle, None, reason)
    log.info("bundle signature verified", extra={"bundle": str(bundle.root), "key_id": kid})
    return VerifiedBundle(bundle, kid, None)
