"""Bundle signatures: ed25519 over the exact bytes of ``manifest.json``, stored beside it as
``manifest.sig``. The manifest holds the sha256 of every file, so a signature that checks against a
trusted public key vouches for every byte that is loaded; a manifest's own hashes only catch corruption,
not someone who rewrites the files and the manifest together. Needs the ``cryptography`` package."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from torchport.runtime.bundle import MANIFEST, SIGNATURE_FILE, Bundle, read_bounded
from torchport.runtime.errors import BundleError, DataError, InputError
from torchport.runtime.files import atomic_write, strict_json, write_text
from torchport.runtime.jsonfields import TEXT, values

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
except ModuleNotFoundError as e:  # the dispatcher names the extra for `torchport sign`
    _MISSING: ModuleNotFoundError | None = e
else:
    _MISSING = None

MAX_SIGNATURE_BYTES = 64 * 1024  # a signature record is a few hundred bytes
FORMAT = "torchport.signature"
ALGORITHM = "ed25519"


def _require_cryptography() -> None:
    if _MISSING is not None:
        raise InputError("bundle signatures need the 'cryptography' package: pip install 'torchport[sign]'",
                         parameter="trusted_keys")


def key_id(public_key: "Ed25519PublicKey") -> str:
    """A short, stable name of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signature:
    """``manifest.sig``: which key signed the manifest, and the signature over its bytes."""
    key_id: str
    signature: bytes
    algorithm: str = ALGORITHM

    def to_json(self) -> dict:
        return {"format": FORMAT, "algorithm": self.algorithm, "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Signature":
        v = values(obj, where, {"format": TEXT, "algorithm": TEXT, "key_id": TEXT, "signature": TEXT})
        if v["format"] != FORMAT or v["algorithm"] != ALGORITHM:
            raise DataError(f"{where} is not an {ALGORITHM} {FORMAT} record")
        try:
            signature = base64.b64decode(v["signature"], validate=True)
        except ValueError:
            raise DataError(f"{where}.signature is not base64") from None
        return cls(v["key_id"], signature, v["algorithm"])


def new_key(path: str | os.PathLike) -> tuple[Path, Path]:
    """Write a new ed25519 private key to ``path`` (PEM, mode 0600) and its public key to ``path`` + ".pub";
    returns both paths. An existing file is never replaced."""
    _require_cryptography()
    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    for p in (path, public_path):
        if p.exists():
            raise InputError(f"{p} exists; choose another name for the new key", parameter="new_key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write(path, lambda tmp: tmp.write_bytes(private), mode=0o600)
    atomic_write(public_path, lambda tmp: tmp.write_bytes(public))
    return path, public_path


def load_private_key(path: str | os.PathLike) -> "Ed25519PrivateKey":
    """An ed25519 private key from a PEM file (unencrypted PKCS#8, as ``new_key`` or ``openssl genpkey
    -algorithm ed25519`` write it)."""
    _require_cryptography()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise InputError(f"{path}: no such key file", parameter="key") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{path} is not an unencrypted PEM private key ({e})", parameter="key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} holds a {type(key).__name__}, not an ed25519 key", parameter="key")
    return key


def load_public_keys(paths: Iterable[str | os.PathLike]) -> list["Ed25519PublicKey"]:
    """The ed25519 public keys in PEM files (each may hold several keys, one PEM block after another)."""
    _require_cryptography()
    keys = []
    for path in paths:
        try:
            text = Path(path).read_bytes()
        except OSError as e:
            raise InputError(f"{path}: {e.strerror}; give files of PEM public keys", parameter="trusted_keys") from None
        blocks = [b + b"-----END PUBLIC KEY-----\n" for b in text.split(b"-----END PUBLIC KEY-----")[:-1]]
        if not blocks:
            raise InputError(f"{path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)", parameter="trusted_keys")
        for block in blocks:
            try:
                key = serialization.load_pem_public_key(block.strip() + b"\n")
            except ValueError as e:
                raise InputError(f"{path}: a PEM block is not a public key ({e})", parameter="trusted_keys") from None
            if not isinstance(key, Ed25519PublicKey):
                raise InputError(f"{path} holds a {type(key).__name__}, not an ed25519 public key",
                                 parameter="trusted_keys")
            keys.append(key)
    return keys


def trusted_key_list(trusted_keys: Iterable[Any]) -> list["Ed25519PublicKey"]:
    """``trusted_keys`` as key objects: each item an Ed25519PublicKey or a path to a PEM file of them."""
    _require_cryptography()
    keys, paths = [], []
    for item in trusted_keys:
        (keys if isinstance(item, Ed25519PublicKey) else paths).append(item)
    keys += load_public_keys(paths)
    if not keys:
        raise InputError("trusted_keys is empty: every bundle would be refused; give at least one public key",
                         parameter="trusted_keys")
    return keys


def sign_bundle(path: str | os.PathLike, key: "Ed25519PrivateKey") -> Signature:
    """Check every file of the bundle against its manifest, then sign the manifest's bytes into
    ``manifest.sig`` (replacing an older signature)."""
    bundle = Bundle.open(path)
    for name in bundle.manifest.files:
        bundle.read(name)  # sign only what is intact
    signature = Signature(key_id(key.public_key()), key.sign(bundle.manifest_bytes))
    write_text(bundle.path / SIGNATURE_FILE, strict_json(signature.to_json()))
    return signature


def verify_bundle(bundle: Bundle, trusted_keys: Iterable[Any]) -> str:
    """The id of the trusted key whose signature in ``manifest.sig`` covers the bundle's manifest bytes;
    a BundleError when the bundle is unsigned, its signature is malformed, or no trusted key made it."""
    keys = trusted_key_list(trusted_keys)
    where = bundle.path / SIGNATURE_FILE
    if not bundle.manifest_bytes:
        raise BundleError(f"{bundle.path}: the bundle was not read from disk, so there is no manifest to check "
                          "a signature against; open it with Bundle.open")
    try:
        raw = read_bounded(where, MAX_SIGNATURE_BYTES, "is too large for a signature record",
                           "sign the bundle again with `torchport sign`")
        signature = Signature.from_json(json.loads(raw.decode("utf-8")), str(where))
    except FileNotFoundError:
        raise BundleError(f"{bundle.path} is not signed ({SIGNATURE_FILE} is missing) and only signed bundles "
                          "are trusted; sign it with `torchport sign`") from None
    except (ValueError, UnicodeDecodeError, DataError) as e:
        raise BundleError(f"{where} is not a valid signature record ({e})") from None
    for key in keys:
        if key_id(key) != signature.key_id:
            continue
        try:
            key.verify(signature.signature, bundle.manifest_bytes)
            return signature.key_id
        except InvalidSignature:
            break
    known = any(key_id(k) == signature.key_id for k in keys)
    reason = ("its signature does not match the manifest (the manifest was changed after signing)" if known
              else f"it is signed by key {signature.key_id}, which is not among the trusted keys")
    raise BundleError(f"{bundle.path / MANIFEST} is refused: {reason}")
