"""One writer per output: a lock file beside the target (``<target>.lock``) held with the operating system's
file lock, which ends with the process that took it, so a lock left by a killed run is known to be stale:
it is taken over (and said so) rather than blocking the next run. The file names the holder (process id,
host, start time) for the message a second writer gets."""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from torchport.runtime.errors import InputError

_held: dict[str, "OutputLock"] = {}  # locks this process holds, by path: taking one again is a no-op
_guard = threading.Lock()


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.parent / f"{target.name}.lock"


def _try_lock(fd: int) -> bool:
    """Take the OS lock on an open file without waiting; False when another process holds it."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class OutputLock:
    """The lock on ``target`` while its writer runs: ``acquire()`` raises InputError when another live
    process holds it; ``stale`` is what a killed run had left (its holder's description), else None."""

    def __init__(self, target: str | os.PathLike, what: str = "torchport"):
        self.target, self.what = Path(target), what
        self.path = lock_path(target)
        self.stale: str | None = None
        self._fd: int | None = None
        self._depth = 0
        self._made: list[Path] = []

    def acquire(self) -> "OutputLock":
        key = str(self.path.resolve())
        with _guard:
            mine = _held.get(key)
            if mine is not None:
                mine._depth += 1
                return mine
            self._made = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _try_lock(fd):
                    holder = _describe(fd)
                    os.close(fd)
                    raise InputError(f"{self.target} is being written by another {holder}; wait for it to finish, or "
                                     f"stop it (a lock left by a killed run is taken over: {self.path})",
                                     parameter="out")
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:  # its holder removed it as we opened it: try again
                    same = False
                if same:
                    break
                os.close(fd)
            left = _describe(fd) if os.fstat(fd).st_size else None
            self.stale = left
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                                         "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
            except OSError as e:  # a full disk: nothing is left behind, and the error names the lock file
                self._give_up(fd)
                e.filename = e.filename or str(self.path)
                raise
            self._fd, self._depth = fd, 1
            _held[key] = self
            return self

    def release(self) -> None:
        key = str(self.path.resolve())
        with _guard:
            held = _held.get(key)
            if held is None:
                return
            held._depth -= 1
            if held._depth > 0:
                return
            del _held[key]
            held.path.unlink(missing_ok=True)  # before unlocking: a waiter then finds no file or a new one
            os.close(held._fd)
            held._fd = None
            held._remove_made()

    def _give_up(self, fd: int) -> None:
        """Remove the lock file just made and the folders made for it, then let go of it."""
        self.path.unlink(missing_ok=True)
        os.close(fd)
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in self._made:  # the folders made for the lock, if nothing else was put there
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    """Who the lock file says holds it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"{info.get('what', 'torchport')} (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a torchport process"
