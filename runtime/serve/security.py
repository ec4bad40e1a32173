"""Who may call the server and how much: the API key (a bearer token, compared in constant time), TLS
files checked before serving, the warning for a server open to the network without a key, and the limits
on inference requests in flight and on the time one may take (``Deadlines``, also the REST body's time
limit). REST and gRPC share one Gate, and the data plane answers every inference request through ``admit``,
``failure`` and ``release``."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import ssl
import time
from pathlib import Path

from torchport.runtime.errors import InputError
from torchport.runtime.serve.inference import ProtocolError

RETRY_AFTER_S = 1
_monotonic = time.monotonic


def read_api_key(path: str | Path) -> bytes:
    """The token in ``path`` (surrounding whitespace removed); refused when missing or empty."""
    try:
        token = Path(path).read_bytes().strip()
    except OSError as e:
        raise InputError(f"cannot read the API key file {path}: {e.strerror}", parameter="api_key_file") from None
    if not token or len(token) < 16 or any(c < 0x21 or c > 0x7e for c in token):
        raise InputError(f"{path} must hold one token of at least 16 printable characters (no spaces)",
                         parameter="api_key_file")
    return token


def check_tls(cert: str | Path, key: str | Path) -> tuple[bytes, bytes]:
    """The certificate chain and private key (PEM bytes), checked to make a TLS server context."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
        return Path(cert).read_bytes(), Path(key).read_bytes()
    except (OSError, ssl.SSLError) as e:
        raise InputError(f"the TLS certificate {cert} and key {key} cannot be used: {e}", parameter="tls_cert") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Deadlines:
    """A time limit for tasks: ``start`` the clock on a task, ``stop`` it when its work is done; a task still
    running past the limit is cancelled, and ``expired`` then says so (once). Every task has the same limit,
    so the order they started in is the order they expire in, and one timer for all (``_sweep``, running
    while any clock runs) notices within a tenth of the limit, a second at most."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._deadlines: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tick = max(0.01, min(1.0, timeout_s / 10))

    def start(self, task: asyncio.Task) -> None:
        self._deadlines[task] = _monotonic() + self.timeout_s
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def stop(self, task: asyncio.Task) -> None:
        """The task's work is done: stop its clock. Call it with no await after the work's last one, so
        that a late expiry cannot land outside the work."""
        self._deadlines.pop(task, None)

    def expired(self, task: asyncio.Task) -> bool:
        """Whether ``task``'s cancellation was this limit's doing; if so, it is answered here (Python 3.11+:
        the task is uncancelled)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        return True

    def _sweep(self) -> None:
        now, deadlines = _monotonic(), self._deadlines
        while deadlines:
            task, at = next(iter(deadlines.items()))
            if at > now:
                break
            del deadlines[task]
            self._expired.add(task)
            task.cancel()
        self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep) if deadlines else None


class Gate:
    """The checks every request passes: the bearer token (when a key is set; health checks are exempt),
    the number of inference requests in flight, and their time limit."""

    def __init__(self, api_key: bytes | None, max_in_flight: int, timeout_s: float):
        self._digest = hashlib.sha256(api_key).digest() if api_key is not None else None
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s
        self.in_flight = 0
        self._clock = Deadlines(timeout_s)

    @property
    def needs_key(self) -> bool:
        return self._digest is not None

    def authorized(self, header: bytes | str | None) -> bool:
        """Whether an Authorization header value carries the key ("Bearer TOKEN"); always True without one."""
        if self._digest is None:
            return True
        if header is None:
            return False
        if isinstance(header, str):
            header = header.encode("latin-1", "replace")
        scheme, _, token = header.strip().partition(b" ")
        # digests of equal length: the comparison takes the same time whatever was sent
        return hmac.compare_digest(hashlib.sha256(token.strip()).digest(), self._digest) and \
            scheme.lower() == b"bearer"

    def admit(self, task: asyncio.Task | None = None) -> asyncio.Task | None:
        """Start the clock on the inference request of ``task`` (default: the current one); None when the
        server is at its limit of requests in flight (answer 503). Every admitted request ends with
        ``release``."""
        if self.in_flight >= self.max_in_flight:
            return None
        task = task or asyncio.current_task()
        self._clock.start(task)
        self.in_flight += 1
        return task

    def release(self, task: asyncio.Task) -> None:
        """The request is answered (or failed): stop its clock. Call it with no await after the last one
        of the request's work, so that a late expiry cannot land outside the handler."""
        self._clock.stop(task)
        self.in_flight -= 1

    def failure(self, task: asyncio.Task, error: BaseException) -> tuple[int, str]:
        """The status and message for an admitted request whose work raised ``error``: a ProtocolError's
        status, 504 when it ran past the time limit, 500 when the model itself failed. A cancellation that
        is not the time limit's is raised again."""
        if isinstance(error, ProtocolError):
            return error.status, str(error)
        if isinstance(error, asyncio.CancelledError):
            if not self._clock.expired(task):
                raise error
            return 504, f"the request took longer than this server's limit of {self.timeout_s:g} s"
        if isinstance(error, Exception):  # a failure of the model itself, not of the request
            return 500, f"inference failed: {type(error).__name__}: {error}"
        raise error

    def overloaded(self) -> str:
        return f"the server is at its limit of {self.max_in_flight} requests in flight; retry shortly"
