"""The bundle format, owned by the runtime: a directory with model.onnx, model.torchscript.pt,
checkpoint.pt and manifest.json, and model.large_batch.onnx when the exporter could write a graph that is
faster for batches of more than a few dozen rows. Reading it needs no torch and never unpickles anything."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = "torchport.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
LARGE_BATCH_FILE = "model.large_batch.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
CHECKPOINT_FILE = "checkpoint.pt"
REQUIRED_KEYS = ("format", "format_version", "features", "targets", "inputs", "outputs", "files")


class BundleError(ValueError):
    """A bundle that cannot be used: missing, malformed, tampered with or from a newer torchport."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(bundle: str | os.PathLike) -> dict:
    """Parse and check ``manifest.json`` of a bundle directory."""
    path = Path(bundle) / MANIFEST
    if not Path(bundle).is_dir():
        raise BundleError(f"{bundle} is not a bundle directory (no such directory); "
                          "give the directory written by `torchport train` or `torchport export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: {bundle} is not a torchport bundle") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not a torchport manifest (its 'format' is not {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path} lacks the key(s) {', '.join(missing)}; re-export the bundle")
    version = manifest["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{path} has format version {version!r}, newer than this torchport reads "
                          f"({FORMAT_VERSION}); upgrade torchport")
    return manifest


def read_checked(bundle: str | os.PathLike, name: str, manifest: dict) -> bytes:
    """The bytes of one bundle file, refused unless its sha256 matches the manifest."""
    path = Path(bundle) / name
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise BundleError(f"{path}: the manifest has no sha256 for this file; re-export the bundle")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path} is missing from the bundle; re-export the bundle") from None
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        raise BundleError(f"{path} does not match the manifest (sha256 {digest[:16]}..., expected "
                          f"{entry['sha256'][:16]}...): the file was changed or corrupted; re-export the bundle")
    return data


def umask_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for directories) less the process umask, as open() would give."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a temp file in the same directory, then rename it into place."""
    import tempfile  # here, not at the top: keeps `import torchport.runtime` quick for cold starts

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
