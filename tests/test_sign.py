"""Bundle signatures: `torchport sign` (ed25519 over manifest.json) and Predictor(..., trusted_keys=), which
refuses an unsigned bundle, one signed by another key, and one whose files and manifest were rewritten
together after signing (what the manifest's own sha256 cannot catch). No command leaves a stale signature:
verify writes nothing into a signed bundle (or records and signs again with --key), export --triton keeps
it valid, and re-exports drop it saying so."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from torchport.runtime import Predictor
from torchport.runtime.bundle import sha256_file
from torchport.runtime.errors import BundleError, InputError
from torchport.runtime.signing import load_private_key, load_public_keys, sign_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    for name in ("release", "other"):
        proc = run_cli("sign", "--new-key", str(folder / f"{name}.pem"))
        assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture
def signed(seed_bundle, keys, tmp_path):
    bundle = tmp_path / "seed"
    shutil.copytree(seed_bundle, bundle)
    proc = run_cli("sign", str(bundle), "--key", str(keys / "release.pem"))
    assert proc.returncode == 0 and "signed" in proc.stderr, proc.stderr
    return bundle


def test_new_key_files(keys):
    assert stat.S_IMODE((keys / "release.pem").stat().st_mode) == 0o600
    assert len(load_public_keys([keys / "release.pem.pub"])) == 1
    proc = run_cli("sign", "--new-key", str(keys / "release.pem"))
    assert proc.returncode == 2 and "exists" in proc.stderr  # never replaces a key


def test_signed_bundle_is_trusted_and_answers(signed, keys, seed_bundle):
    record = json.loads((signed / "manifest.sig").read_text())
    assert record["algorithm"] == "ed25519" and record["format"] == "torchport.signature"
    p = Predictor(signed, trusted_keys=[keys / "release.pem.pub"])
    assert p.signed_by == record["key_id"]
    x = np.array([[3.0], [1.0]], np.float32)
    np.testing.assert_array_equal(p.predict(x), Predictor(seed_bundle).predict(x))
    both = keys / "both.pub"
    both.write_bytes((keys / "other.pem.pub").read_bytes() + (keys / "release.pem.pub").read_bytes())
    assert Predictor(signed, trusted_keys=[both]).signed_by == record["key_id"]  # one file, several keys


def test_unsigned_and_foreign_signatures_are_refused(seed_bundle, signed, keys):
    with pytest.raises(BundleError, match="is not signed"):
        Predictor(seed_bundle, trusted_keys=[keys / "release.pem.pub"])
    with pytest.raises(BundleError, match="not among the trusted keys"):
        Predictor(signed, trusted_keys=[keys / "other.pem.pub"])
    with pytest.raises(InputError, match="trusted_keys is empty"):
        Predictor(signed, trusted_keys=[])
    with pytest.raises(BundleError, match="carries no signature"):
        Predictor(signed / "model.onnx", trusted_keys=[keys / "release.pem.pub"])


def test_files_and_manifest_rewritten_together_are_refused(signed, keys):
    """An attacker who replaces model.onnx and updates its sha256 in the manifest passes the hash check,
    but not the signature."""
    other = signed.parent / "other"
    shutil.copytree(signed, other)
    onnx = other / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 1
    onnx.write_bytes(bytes(data))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = sha256_file(onnx)
    (other / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    Predictor(other)  # the manifest agrees with the files: without keys this loads
    with pytest.raises(BundleError, match="does not match the manifest"):
        Predictor(other, trusted_keys=[keys / "release.pem.pub"])


def test_sign_checks_the_files_first(signed, keys):
    (signed / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="does not match the manifest"):
        sign_bundle(signed, load_private_key(keys / "release.pem"))
    proc = run_cli("sign", str(signed), "--key", str(keys / "release.pem.pub"))
    assert proc.returncode == 2 and "not an unencrypted PEM private key" in proc.stderr
    proc = run_cli("sign", str(signed))
    assert proc.returncode == 2 and "--key" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_extra_is_named():
    code = ("import sys; sys.modules['cryptography'] = None; from torchport.runtime.cli import main; "
            "sys.exit(main(['sign', 'x', '--key', 'k']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "needs the 'sign' extra" in proc.stderr and "torchport[sign]" in proc.stderr


def test_verify_leaves_a_signed_bundle_signed(signed, keys):
    before = (signed / "manifest.json").read_bytes()
    proc = run_cli("verify", str(signed))
    assert proc.returncode == 0, proc.stderr
    assert "parity: PASSED" in proc.stdout
    assert f"{signed} is signed, so nothing was written into it" in proc.stderr and "--key KEY" in proc.stderr
    assert (signed / "manifest.json").read_bytes() == before
    key = Predictor(signed, trusted_keys=[keys / "release.pem.pub"]).signed_by  # what broke before: refused
    proc = run_cli("verify", str(signed), "--key", str(keys / "release.pem"))  # record, and sign again
    assert proc.returncode == 0, proc.stderr
    assert f"recorded the results and signed the new manifest with key {key}" in proc.stderr
    assert json.loads((signed / "manifest.json").read_text())["parity"]["passed"] is True  # recorded (the bytes
    # may equal the old ones: the same results recorded again)
    assert Predictor(signed, trusted_keys=[keys / "release.pem.pub"]).signed_by == key
    assert sorted(p.name for p in signed.parent.iterdir()) == [signed.name]  # no lock, no staging left
    proc = run_cli("verify", str(signed), "--key", str(keys / "release.pem"), "--no-record")
    assert proc.returncode == 2 and "give one of them" in proc.stderr


@pytest.mark.full
def test_every_rewriter_keeps_a_signature_valid_or_drops_it_saying_so(signed, keys, tmp_path):
    trusted = [keys / "release.pem.pub"]
    key = Predictor(signed, trusted_keys=trusted).signed_by
    proc = run_cli("export", str(signed), "--triton", str(tmp_path / "repo"))  # the manifest travels as it is
    assert proc.returncode == 0, proc.stderr
    assert Predictor(tmp_path / "repo" / "seed" / "1", trusted_keys=trusted).signed_by == key
    proc = run_cli("export", str(signed), "--out", str(tmp_path / "again"))  # a new manifest, elsewhere
    assert proc.returncode == 0, proc.stderr
    assert f"note: {signed} was signed; the bundle written at {tmp_path / 'again'} is not" in proc.stderr
    assert not (tmp_path / "again" / "manifest.sig").exists()
    assert Predictor(signed, trusted_keys=trusted).signed_by == key
    proc = run_cli("export", str(signed), "--force")  # in place: the signature goes, said so; none is stale
    assert proc.returncode == 0, proc.stderr
    assert f"note: {signed} was signed; the bundle written at {signed} is not" in proc.stderr
    with pytest.raises(BundleError, match="is not signed"):
        Predictor(signed, trusted_keys=trusted)
    assert run_cli("sign", str(signed), "--key", str(keys / "release.pem")).returncode == 0
    proc = run_cli("train", "--out", str(signed), "--force", "--optimizer", "exact", "--formats", "onnx",
                   "--no-plots", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "note: the bundle this run replaced was signed; the new one" in proc.stderr
    with pytest.raises(BundleError, match="is not signed"):
        Predictor(signed, trusted_keys=trusted)


def test_a_signed_format_1_bundle_stays_signed_until_verify_is_given_the_key(keys, tmp_path):
    bundle = tmp_path / "seed"
    shutil.copytree(Path(__file__).parent / "data" / "v1" / "seed", bundle)
    assert run_cli("sign", str(bundle), "--key", str(keys / "release.pem")).returncode == 0
    before = (bundle / "manifest.json").read_bytes()
    proc = run_cli("verify", str(bundle))  # would migrate the manifest to format 2: not into a signed bundle
    assert proc.returncode == 0 and "is signed, so nothing was written" in proc.stderr, proc.stderr
    assert (bundle / "manifest.json").read_bytes() == before
    Predictor(bundle, trusted_keys=[keys / "release.pem.pub"])
    proc = run_cli("verify", str(bundle), "--key", str(keys / "release.pem"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((bundle / "manifest.json").read_text())["format_version"] == 2
    Predictor(bundle, trusted_keys=[keys / "release.pem.pub"])
