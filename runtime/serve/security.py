"""Who may call the server and how much: the API key (a bearer token, compared in constant time), TLS
files checked before serving, the warning for a server open to the network without a key, and the limits
on inference requests in flight and on the time one may take. REST and gRPC share one Gate."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import ssl
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from torchport.runtime.errors import InputError
from torchport.runtime.serve.protocol import ProtocolError

RETRY_AFTER_S = 1
T = TypeVar("T")


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


class Gate:
    """The checks every request passes: the bearer token (when a key is set; health checks are exempt),
    the number of inference requests in flight, and their time limit (``run``)."""

    def __init__(self, api_key: bytes | None, max_in_flight: int, timeout_s: float):
        self._digest = hashlib.sha256(api_key).digest() if api_key is not None else None
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s
        self.in_flight = 0

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

    async def run(self, work: Callable[[], Awaitable[T]]) -> tuple[T | None, int, str]:
        """Do one inference request's ``work`` within the limits: (its result, 200, "") or (None, status,
        message): 503 over the requests in flight, 504 past the time limit, a ProtocolError's status, 500
        when the model itself failed. REST and gRPC both answer through this."""
        if self.in_flight >= self.max_in_flight:
            return None, 503, f"the server is at its limit of {self.max_in_flight} requests in flight; retry shortly"
        self.in_flight += 1
        deadline = Deadline(self.timeout_s)
        try:
            try:
                return await work(), 200, ""
            finally:
                deadline.cancel()
        except ProtocolError as e:
            return None, e.status, str(e)
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            deadline.absorb()
            return None, 504, f"the request took longer than this server's limit of {self.timeout_s:g} s"
        except Exception as e:  # a failure of the model itself, not of the request
            return None, 500, f"inference failed: {type(e).__name__}: {e}"
        finally:
            self.in_flight -= 1


class Deadline:
    """Cancels the current task when a request runs past the time limit; the handler catches the
    cancellation, sees ``expired`` and answers 504 / DEADLINE_EXCEEDED."""
    __slots__ = ("_task", "_handle", "expired")

    def __init__(self, seconds: float):
        self._task = asyncio.current_task()
        self.expired = False
        self._handle = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def cancel(self) -> None:
        """Stop the clock; call it before any await outside the handler's try block."""
        self._handle.cancel()

    def absorb(self) -> None:
        """The request ran out of time and the handler answers it: undo the task's cancellation count."""
        uncancel = getattr(self._task, "uncancel", None)
        if uncancel is not None:
            uncancel()
