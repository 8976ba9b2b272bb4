"""Bundle signatures: ``edge-export keygen/sign/verify-signature`` and the box's trust decision (``verify_bundle``).

Real reference bundles from ``models/`` (copied, then signed with keys made here), real files edited the way an
attacker or a careless hand would: a threshold changed with the content hash recomputed, a model file swapped with
the manifest re-sealed, a signature file altered, a bundle signed by a key the box does not trust.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from edge.backends import open_backend, open_model
from edge.backends.memory import ModelBytes
from edge.bundles import ModelFormat, Precision
from edge.bundles.manifest import content_digest
from edge.bundles.signing import (
    SIGNATURE_FILE,
    generate_key,
    load_private_key,
    load_public_key,
    sign_bundle,
    verify_bundle,
)
from edge.config.models import ModelsConfig
from edge.errors import BundleError
from edge.screening import load_models
from export.cli import app as export_app

REPO = Path(__file__).resolve().parents[2]
SCORER = REPO / "models" / "scorer-stfpm"
DETECTOR = REPO / "models" / "detector-agnostic"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_key(tmp_path / "keys" / "site.key")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    copy = tmp_path / "scorer"
    shutil.copytree(SCORER, copy, ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    return copy


def _rehash(bundle: Path, **changes: object) -> None:
    """Edit bundle.yaml and recompute its own content hash: what the old loader accepted."""
    path = bundle / "bundle.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        data[key] = value
    data["content_sha256"] = content_digest(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=110))


def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert load_public_key(public).key_id == load_public_key(public).key_id
    with pytest.raises(BundleError, match="exists; refusing to overwrite"):
        generate_key(private)


def test_a_signed_bundle_verifies_and_its_bytes_are_the_ones_on_disk(bundle: Path, keys: tuple[Path, Path]) -> None:
    sign_bundle(bundle, keys[0])
    body = json.loads((bundle / SIGNATURE_FILE).read_text())
    listed = yaml.safe_load((bundle / "bundle.yaml").read_text())["files"]
    assert [f["path"] for f in body["files"]] == sorted(["bundle.yaml", *(f["path"] for f in listed)])
    verified = verify_bundle(bundle, [keys[1]])
    assert verified.key_id == load_public_key(keys[1]).key_id == body["key_id"] and verified.unsigned is None
    assert set(verified.bundle.files) == {f["path"] for f in body["files"]}
    for rel, data in verified.bundle.files.items():
        assert data == (bundle / rel).read_bytes()


def test_a_threshold_edited_with_its_hash_recomputed_is_refused(bundle: Path, keys: tuple[Path, Path]) -> None:
    sign_bundle(bundle, keys[0])
    _rehash(bundle, thresholds={"score": 1e9})
    with pytest.raises(BundleError) as err:
        verify_bundle(bundle, [keys[1]])
    message = str(err.value)
    assert str(bundle) in message and "bundle.yaml changed after signing" in message, message


def test_a_swapped_model_with_a_resealed_manifest_is_refused(bundle: Path, keys: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    sign_bundle(bundle, keys[0])
    onnx_file = next(bundle.rglob("*.onnx"))
    other = next((REPO / "models" / "scorer-stfpm-pc").rglob("*.onnx")).read_bytes()
    onnx_file.write_bytes(other)
    data = yaml.safe_load((bundle / "bundle.yaml").read_text())
    for f in data["files"]:
        if f["path"].endswith(".onnx"):
            f["sha256"], f["bytes"] = hashlib.sha256(other).hexdigest(), len(other)
    _rehash(bundle, files=data["files"])
    with pytest.raises(BundleError) as err:
        verify_bundle(bundle, [keys[1]])
    message = str(err.value)
    assert "bundle.yaml changed after signing" in message and f"{onnx_file.parent.name}/{onnx_file.name} changed" \
        in message, message


def test_unknown_key_and_bad_signature_are_refused(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    _, stranger = generate_key(tmp_path / "other" / "stranger.key")
    sign_bundle(bundle, keys[0])
    with pytest.raises(BundleError, match=r"signed by unknown key id .*models.trusted_keys has .*stranger.key.pub"):
        verify_bundle(bundle, [stranger])
    with pytest.raises(BundleError, match=r"unknown key id .*none configured"):
        verify_bundle(bundle, [])
    sig = bundle / SIGNATURE_FILE
    body = json.loads(sig.read_text())
    body["files"][0]["sha256"] = "0" * 64  # the signed list itself edited
    sig.write_text(json.dumps(body))
    with pytest.raises(BundleError, match=f"refusing bundle {bundle}: bad signature"):
        verify_bundle(bundle, [keys[1]])
    sig.write_text("not json")
    with pytest.raises(BundleError, match="not a bundle signature file"):
        verify_bundle(bundle, [keys[1]])


def test_an_unsigned_bundle_is_refused_unless_allowed(bundle: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match=f"refusing bundle {bundle}: no signature"):
        verify_bundle(bundle, [keys[1]])
    verified = verify_bundle(bundle, [keys[1]], allow_unsigned=True)
    assert verified.key_id is None and verified.unsigned is not None and "no signature" in verified.unsigned
    # Hashes are checked whatever allow_unsigned says.
    _rehash(bundle, thresholds={"score": 1e9})
    data = (bundle / "bundle.yaml").read_text().replace("score: 1000000000.0", "score: 2000000000.0")
    (bundle / "bundle.yaml").write_text(data)
    with pytest.raises(BundleError, match="content_sha256"):
        verify_bundle(bundle, [], allow_unsigned=True)


def test_raw_base64_public_keys_and_unusable_key_files(bundle: Path, keys: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    sign_bundle(bundle, keys[0])
    raw = load_private_key(keys[0]).public_key().public_bytes(serialization.Encoding.Raw,
                                                              serialization.PublicFormat.Raw)
    b64 = tmp_path / "site.b64"
    b64.write_text(base64.b64encode(raw).decode() + "\n")
    assert verify_bundle(bundle, [b64]).key_id == load_public_key(keys[1]).key_id
    with pytest.raises(BundleError, match=r"models.trusted_keys: .*missing.pub: cannot read"):
        verify_bundle(bundle, [tmp_path / "missing.pub"])
    bad = tmp_path / "bad.pub"
    bad.write_text("hello")
    with pytest.raises(BundleError, match=r"models.trusted_keys: .*bad.pub: not an Ed25519 public key"):
        verify_bundle(bundle, [bad])


def test_load_models_reports_unsigned_bundles_as_degraded(bundle: Path, tmp_path: Path,
                                                          keys: tuple[Path, Path]) -> None:
    detector = tmp_path / "det"
    shutil.copytree(DETECTOR, detector, ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    sign_bundle(detector, keys[0])
    cfg = ModelsConfig(detector=detector, scorer=bundle, threads=1, trusted_keys=(keys[1],))
    with pytest.raises(BundleError, match="no signature"):
        load_models(cfg)
    models = load_models(cfg.model_copy(update={"allow_unsigned": True}))
    try:
        assert models.degraded is not None and models.degraded.startswith("bundles unsigned"), models.degraded
        assert "scorer-stfpm (no signature" in models.degraded and "detector-agnostic" not in models.degraded
    finally:
        models.close()
    sign_bundle(bundle, keys[0])
    models = load_models(cfg)
    try:
        assert models.degraded is None
    finally:
        models.close()


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_verified_bundle_is_compiled_from_memory(bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
                                                   backend: str) -> None:
    sign_bundle(bundle, keys[0])
    verified = verify_bundle(bundle, [keys[1]])
    shutil.rmtree(bundle)  # nothing may be read from the folder after verification
    session = open_backend(verified.bundle, backend, Precision.FP32, threads=1, cache_dir=tmp_path / "cache")
    c = verified.bundle.contract
    batch = np.random.default_rng(0).random((1, c.tensor_channels, c.height, c.width), dtype=np.float32)
    got = session.run(batch)
    session.close()
    fmt = ModelFormat.OPENVINO if backend == "openvino" else ModelFormat.ONNX
    reference = open_model(SCORER / verified.bundle.model(fmt, Precision.FP32).path, backend)
    want = reference.run(batch)
    reference.close()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_onnx_with_external_data_runs_from_memory(tmp_path: Path, backend: str) -> None:
    source = next(SCORER.rglob("*.onnx"))
    graph = onnx.load(str(source))
    split = tmp_path / "split.onnx"
    onnx.save_model(graph, str(split), save_as_external_data=True, location="split.data", size_threshold=0)
    model = ModelBytes("split.onnx", split.read_bytes(), {"split.data": (tmp_path / "split.data").read_bytes()})
    (tmp_path / "split.data").unlink()
    session = open_model(model, backend)
    reference = open_model(source, backend)
    batch = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    got, want = session.run(batch), reference.run(batch)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)


def test_edge_export_keygen_sign_and_verify_signature(bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "k" / "release.key"
    result = runner.invoke(export_app, ["keygen", str(key)])
    assert result.exit_code == 0, result.output
    assert "key id" in result.output and key.is_file() and Path(f"{key}.pub").is_file()
    result = runner.invoke(export_app, ["sign", str(bundle), "--key", str(key)])
    assert result.exit_code == 0 and "4 files covered" in result.output, result.output
    result = runner.invoke(export_app, ["verify-signature", str(bundle), "--trusted-key", f"{key}.pub"])
    assert result.exit_code == 0 and "verified, signed by key" in result.output, result.output
    _rehash(bundle, version="9.9")
    result = runner.invoke(export_app, ["verify-signature", str(bundle), "--trusted-key", f"{key}.pub"])
    assert result.exit_code == 1 and "bundle.yaml changed after signing" in result.output, result.output
