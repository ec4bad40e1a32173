"""Build a server from its settings and run it: the registry loaded from the repository, the REST app on
uvicorn (httptools parser, uvloop when installed), and, started in the app's lifespan on the same event
loop, gRPC, the repository poll, the sockets workers use to reach each other and the signal handlers. On
SIGTERM or SIGINT it reports itself draining, stops accepting, finishes the requests in flight, and returns
normally (exit code 0); SIGHUP reads the repository again (``signals``)."""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import uvicorn

from torchport.runtime.errors import InputError
from torchport.runtime.serve.app import InferenceApp
from torchport.runtime.serve.config import DEFAULT_MAX_HEADER_BYTES, ServeConfig
from torchport.runtime.serve.control import Control
from torchport.runtime.serve.dataplane import DataPlane
from torchport.runtime.serve.front_door import CappedHttpProtocol, ServerConfig
from torchport.runtime.serve.models import LoadSettings
from torchport.runtime.serve.registry import Registry
from torchport.runtime.serve.security import Gate, check_tls, read_api_key
from torchport.runtime.serve.signals import SignalHandlers
from torchport.runtime.serve.stats import ServerStats

GRACEFUL_TIMEOUT_S = 30
CONFIG_ENV = "TORCHPORT_SERVE_CONFIG"


def _loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def logger(workers: int) -> Callable[[str], None]:
    """Log lines on stderr, naming the worker process when there are several."""
    tag = f" [worker {os.getpid()}]" if workers > 1 else ""

    def log(message: str) -> None:
        print(f"torchport serve{tag}: {message}", file=sys.stderr, flush=True)
    return log


def build(config: ServeConfig, log: Callable[[str], None]) -> tuple[InferenceApp, dict[str, list[str]]]:
    """The app of one server process with its models loaded; also the refusals at start, per model."""
    keys = None
    if config.trusted_keys is not None:
        from torchport.runtime.signing import trusted_key_list
        keys = tuple(trusted_key_list(config.trusted_keys))
    settings = LoadSettings(config.providers, config.max_batch_size, config.max_queue_delay_us, keys,
                            config.allow_failed_parity, config.model_load_timeout_s)
    registry = Registry(Path(config.path), settings, config.model_control_mode, config.model_name, log)
    server_stats = ServerStats()
    control = Control(registry, server_stats, config.control_dir, log)
    names = control.startup_models(config.load_models) if config.model_control_mode == "explicit" else None
    problems = registry.start(names)
    gate = Gate(read_api_key(config.api_key_file) if config.api_key_file else None,
                config.max_concurrent_requests, config.request_timeout_s)
    tls = check_tls(config.tls_cert, config.tls_key) if config.tls_cert else None
    plane = DataPlane(registry, control, gate, server_stats, config.model_control_mode)
    services = _Services(config, plane, tls, log)
    return InferenceApp(plane, config.max_body_bytes, config.body_timeout_s, services.start, services.stop), problems


class _Services:
    """What runs beside REST on the event loop: gRPC with its health service, the repository poll, the worker
    sockets and the signal handlers."""

    def __init__(self, config: ServeConfig, plane: DataPlane, tls, log):
        self.config, self.plane, self.tls, self.log = config, plane, tls, log
        self.control, self.registry = plane.control, plane.registry
        self.signals = SignalHandlers(plane, config.path, log)
        self._grpc = None
        self._poll: asyncio.Task | None = None

    async def start(self) -> None:
        await self.control.start()
        if self.config.grpc_port is not None:
            from torchport.runtime.serve.grpc_service import start_grpc
            self._grpc, health = await start_grpc(self.plane, self.config.host, self.config.grpc_port,
                                                  self.config.max_body_bytes, self.config.workers > 1, self.tls)
            self.signals.on_drain.append(health.enter_graceful_shutdown)
        if self.config.model_control_mode == "poll":
            self._poll = asyncio.create_task(self._poll_forever())
        self.signals.install(asyncio.get_running_loop())

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.repository_poll_secs)
            try:
                await self.registry.poll()
            except Exception as e:  # a repository that cannot be read now may be readable at the next poll
                self.log(f"polling {self.config.path} failed ({type(e).__name__}: {e}); trying again in "
                         f"{self.config.repository_poll_secs:g} s")

    async def stop(self) -> None:
        self.signals.uninstall()
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        await self.control.stop()


def app_from_env() -> InferenceApp:
    """Factory for each worker process of ``torchport serve --workers N``: the settings come as JSON in the
    environment variable TORCHPORT_SERVE_CONFIG."""
    config = ServeConfig.from_json(json.loads(os.environ[CONFIG_ENV]))
    return build(config, logger(config.workers))[0]


def bind(host: str, port: int, parameter: str = "port") -> socket.socket:
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
                         "holds it", parameter=parameter) from None
    sock.set_inheritable(True)
    return sock


def run_server(app: Any, host: str, port: int, workers: int = 1, factory: bool = False,
               log_level: str = "warning", sock: Any = None, tls: tuple[str, str] | None = None,
               max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
    """Serve ``app`` (an ASGI app, or with ``workers`` > 1 an import string of an app factory) until a signal;
    ``tls``: the certificate and key files; ``max_header_bytes``: the cap on a request's line and headers."""
    config = ServerConfig(app, max_header_bytes, host=host, port=port, workers=workers, factory=factory,
                          loop=_loop(), http=CappedHttpProtocol, lifespan="on", access_log=False,
                          log_level=log_level, backlog=4096, timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
                          server_header=False, proxy_headers=False, ssl_certfile=tls[0] if tls else None,
                          ssl_keyfile=tls[1] if tls else None)
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
