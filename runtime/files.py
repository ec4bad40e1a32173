"""Writing files and directories so that nobody ever sees half of one: write a temp file (or fill a temp
directory) beside the target, then rename it into place. An error leaves the target as it was."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def umask_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for directories) less the process umask, as open() would give."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then rename it onto ``path``; ``mode``
    (0o600 for a private key, say) replaces the umask's file mode."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, umask_mode(0o666) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def strict_json(obj: object) -> str:
    """JSON text that any parser accepts: NaN and infinities are refused (ValueError), not written."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically."""
    return write_text(path, strict_json(obj))


def staging_dir(target: str | os.PathLike) -> Path:
    """An empty directory beside ``target`` to build it in (publish it with ``publish_dir``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, umask_mode(0o777))
    return tmp


def publish_dir(staged: Path, target: str | os.PathLike, replace: bool) -> None:
    """Rename the finished ``staged`` directory onto ``target``; an old ``target`` (only with ``replace``)
    is moved aside first and removed once the new one is in place. Raises FileExistsError otherwise."""
    target = Path(target)
    if not target.exists():
        os.rename(staged, target)
        return
    if not replace:
        raise FileExistsError(f"{target} exists")
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    os.replace(target, old)
    os.rename(staged, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Fill the yielded temp directory; when the block ends without an error it is published onto
    ``target`` (FileExistsError if ``target`` exists and not ``replace``), otherwise removed."""
    stage = staging_dir(target)
    try:
        yield stage
        publish_dir(stage, target, replace)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
