"""Writing files and directories so that nobody ever sees half of one: write a temp file (or fill a temp
directory) beside the target, then rename it into place. A directory that replaces another is swapped in
with one atomic rename (Linux ``renameat2`` with ``RENAME_EXCHANGE``), so the target is always the old
one or the new one, even for a process killed in between. Each temp file or directory is locked (``flock``)
by its writer while it lives, so that the next writer of the same target (and `torchport verify` and
`torchport serve`, through ``remove_leftovers``) can tell what a killed run left behind from what a live one
is still writing, and removes only the former. An error leaves the target as it was; an error of the
machine (disk full, read-only, permission denied) names the target, not a temp name."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so leftovers are never judged abandoned there
    fcntl = None

# Errors of the machine, not of torchport: the command names the path and the cause (exit 2).
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_TEMP_CHARS = "[a-z0-9_]+"  # what tempfile's names and secrets.token_hex give
_held: dict[str, int] = {}  # staging directories this process is filling -> their locked descriptors


def umask_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for directories) less the process umask, as open() would give."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def naming(target: str | os.PathLike) -> Iterator[None]:
    """Re-raise an error of the machine (MACHINE_ERRNOS) met while writing ``target`` with ``target`` as its
    filename, where it had none (a failed write() names no file) or named a temp file of ``target``."""
    try:
        yield
    except OSError as e:
        if e.errno in MACHINE_ERRNOS and _is_ours(e.filename, Path(target)):
            e.filename, e.filename2 = os.fspath(target), None
        raise


def _is_ours(filename: object, target: Path) -> bool:
    """Whether an error's filename is ``target``'s own business: none, the target, inside it, or a temp name
    beside it."""
    if filename is None:
        return True
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return False
    path, target = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(target))
    if path == target or target in path.parents:
        return True
    return any(p.parent == target.parent and p.name.startswith(f".{target.name}.") for p in (path, *path.parents))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then rename it onto ``path``; ``mode``
    (0o600 for a private key, say) replaces the umask's file mode. Temp files of ``path`` left by killed
    runs are removed first."""
    path = Path(path)
    remove_leftovers(path)
    with naming(path):
        if not path.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent))
        fd, tmp = _locked(lambda: tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            write(Path(tmp))
            os.chmod(tmp, umask_mode(0o666) if mode is None else mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
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
    """An empty directory beside ``target`` to build it in, locked by this process until ``publish_dir`` or
    ``discard_dir`` ends it. Leftovers of killed runs beside ``target`` are removed first."""
    target = Path(target)
    remove_leftovers(target)
    with naming(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _locked(lambda: (None, tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent)))
        _held[os.path.abspath(tmp)] = fd
        os.chmod(tmp, umask_mode(0o777))
    return Path(tmp)


def discard_dir(staged: str | os.PathLike) -> None:
    """Remove a staging directory that will not be published, and let go of its lock."""
    shutil.rmtree(staged, ignore_errors=True)
    _release(staged)


def publish_dir(staged: str | os.PathLike, target: str | os.PathLike, replace: bool) -> None:
    """Rename the finished ``staged`` directory onto ``target``. An existing ``target`` is replaced only with
    ``replace`` (FileExistsError otherwise), by swapping the two in one step where the system can
    (``renameat2(RENAME_EXCHANGE)``: Linux), else by two renames that put the old one back on an error;
    the old tree is then removed. Either way ``staged`` is gone or left to be discarded by the caller."""
    staged, target = Path(staged), Path(target)
    published = False
    with naming(target):
        try:
            if not replace or not os.path.lexists(target):
                _rename_new(staged, target)
            else:
                old = _lock_quietly(target)  # cleaners leave the old tree alone while this process removes it
                try:
                    if _renameat2(staged, target, RENAME_EXCHANGE):
                        _remove(staged)  # the old tree, now under the staged name
                    else:
                        _swap_by_two_renames(staged, target)
                finally:
                    if old is not None:
                        os.close(old)
            published = True
        finally:
            if published:
                _release(staged)


def _rename_new(staged: Path, target: Path) -> None:
    """Rename ``staged`` onto a ``target`` that must not exist (FileExistsError if it does)."""
    try:
        if _renameat2(staged, target, RENAME_NOREPLACE):
            return
    except FileExistsError:
        pass
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, f"{target} exists", str(target))
    os.rename(staged, target)


def _swap_by_two_renames(staged: Path, target: Path) -> None:
    """Where the system cannot exchange two names: the old ``target`` moves aside, ``staged`` takes its name,
    the old one is removed; an error between the two renames moves the old one back, and a run killed there
    leaves the old one as ``.<target>.old-*``, which ``remove_leftovers`` puts back."""
    old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
    os.rename(target, old)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Fill the yielded temp directory; when the block ends without an error it is published onto
    ``target`` (FileExistsError if ``target`` exists and not ``replace``), otherwise removed."""
    stage = staging_dir(target)
    with naming(target):
        try:
            yield stage
            publish_dir(stage, target, replace)
        except BaseException:
            discard_dir(stage)
            raise


def link_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Fill the directory ``dst`` with ``src``'s tree, each file a hard link where the file system allows
    (a copy otherwise): the start of a new version of ``src`` whose changed files are then written anew
    (atomic_write replaces a link, never writes through it)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, symlinks=True, copy_function=link, dirs_exist_ok=True)


def leftover_names(target: str | os.PathLike) -> list[Path]:
    """What writers of ``target`` leave beside it while they work (and killed ones for good): staging
    directories ``.<name>.tmp-*``, old trees ``.<name>.old-*`` and temp files ``.<name>.*.tmp``."""
    target = Path(target)
    name = re.escape(target.name)
    pattern = re.compile(rf"\.{name}\.(?:(?:tmp|old)-{_TEMP_CHARS}|{_TEMP_CHARS}\.tmp)")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return sorted(target.parent / n for n in names if pattern.fullmatch(n))


def remove_leftovers(target: str | os.PathLike) -> list[str]:
    """Remove what killed writers of ``target`` left beside it, skipping anything a live process still
    holds; when ``target`` itself is missing because a run was killed between the two renames of a
    replacement (systems without RENAME_EXCHANGE), put the old one back. Returns what was done, a phrase
    per item; nothing where the folder cannot be written (read-only) or flock is not available."""
    target = Path(target)
    done: list[str] = []
    for path in sorted(leftover_names(target), key=_newest_first):
        fd = _abandoned(path)
        if fd is None:
            continue
        try:
            if path.name.startswith(f".{target.name}.old-") and not os.path.lexists(target):
                if _restore(path, target):
                    done.append(f"put back {target} from {path.name}, where a run killed while replacing it "
                                "left it")
                    continue
            _remove(path)
            if not os.path.lexists(path):  # a read-only folder, say: left for a run that can
                done.append(f"removed {path}, left by a run that was killed")
        except OSError:
            pass
        finally:
            os.close(fd)
    return done


def _newest_first(path: Path) -> float:
    try:
        return -path.lstat().st_mtime
    except OSError:
        return 0.0


def _restore(old: Path, target: Path) -> bool:
    """Rename ``old`` back onto a missing ``target``; False if another writer published one meanwhile."""
    try:
        _rename_new(old, target)
        return True
    except FileExistsError:
        return False


def _remove(path: Path) -> None:
    """Remove a file or a directory tree (best effort: what cannot be removed stays)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _open(path: str | os.PathLike) -> int:
    """A descriptor of ``path`` itself (never through a symbolic link) to lock."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if os.path.isdir(path):
        flags |= getattr(os, "O_DIRECTORY", 0)
    return os.open(path, flags)


def _same_file(fd: int, path: str | os.PathLike) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _locked(make: Callable[[], tuple[int | None, str]]) -> tuple[int, str]:
    """Make a temp file or directory (``make`` returns its descriptor, if it opened one, and its name) and
    lock it for this process; made again if a cleaner removed it before the lock was taken."""
    for _ in range(8):
        fd, path = make()
        if fd is None:
            fd = _open(path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits only for a cleaner that found it unlocked
            except OSError:
                pass  # a file system without flock: cleaners cannot tell it from a leftover, so they leave it
        if _same_file(fd, path) or fcntl is None:
            return fd, path
        os.close(fd)
    raise OSError(errno.EAGAIN, "temp files beside it keep disappearing", path)


def _lock_quietly(path: Path) -> int | None:
    """A descriptor of ``path`` with its lock taken without waiting, or None where it cannot be had."""
    try:
        fd = _open(path)
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd


def _abandoned(path: Path) -> int | None:
    """``path`` open and locked when no live process holds it (its writer was killed), else None."""
    if fcntl is None:
        return None
    try:
        fd = _open(path)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by its writer, or a file system that cannot say
        os.close(fd)
        return None
    if not _same_file(fd, path):  # renamed (published) or removed while it was being locked
        os.close(fd)
        return None
    return fd


def _release(staged: str | os.PathLike) -> None:
    fd = _held.pop(os.path.abspath(staged), None)
    if fd is not None:
        os.close(fd)


_renameat2_function: list = []


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)`` (Linux, glibc 2.28 or later); False where the system or the file
    system does not have it (the caller then does without), an OSError naming both paths on failure."""
    if not _renameat2_function:
        function = None
        if sys.platform.startswith("linux"):
            function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
            if function is not None:
                function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                function.restype = ctypes.c_int
        _renameat2_function.append(function)
    function = _renameat2_function[0]
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dst))
