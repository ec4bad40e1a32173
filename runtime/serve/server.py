"""Run an ASGI app on uvicorn (httptools parser, uvloop when installed) with graceful shutdown: on SIGTERM
or SIGINT stop accepting, finish the requests in flight, and return normally (exit code 0)."""
from __future__ import annotations

import importlib.util
import signal
import socket
from typing import Any

import uvicorn

from torchport.runtime.errors import InputError

GRACEFUL_TIMEOUT_S = 30


def _loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``; an InputError naming the address when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise InputError(f"cannot resolve host {host!r} ({e}); give an IP address or a host name",
                         parameter="host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}; pick another port or stop what "
                         "holds it", parameter="port") from None
    sock.set_inheritable(True)
    return sock


def run_server(app: Any, host: str, port: int, workers: int = 1, factory: bool = False,
               log_level: str = "warning", sock: Any = None) -> None:
    """Serve ``app`` (an ASGI app, or with ``workers`` > 1 an import string of an app factory) until a signal."""
    config = uvicorn.Config(app, host=host, port=port, workers=workers, factory=factory, loop=_loop(),
                            http="httptools", lifespan="on", access_log=False, log_level=log_level,
                            backlog=4096, timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S, server_header=False,
                            proxy_headers=False)
    sock = sock or bind(host, port)  # a caller may bind first, to fail before announcing anything
    if workers > 1:
        from uvicorn.supervisors import Multiprocess
        Multiprocess(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with these handlers in
    # place (it restores them before re-raising) that ends the process normally instead of killing it.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
