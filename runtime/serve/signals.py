"""What one server process does on signals, installed in its lifespan (on the event loop's thread, the main
one). SIGTERM and SIGINT: the data plane is marked draining first (REST's /v2/health/ready answers 503,
gRPC's ServerReady false and its health service NOT_SERVING), then uvicorn's own handler stops accepting,
finishes the requests in flight and stops. SIGHUP: the repository is read again now (poll mode: a poll;
explicit mode: every loaded model reloaded from disk), or, in mode none, ignored with a log line; requests in
flight are answered either way, and the process never dies of it."""
from __future__ import annotations

import asyncio
import signal
import threading
from typing import Awaitable, Callable

from torchport.runtime.serve.dataplane import DataPlane
from torchport.runtime.serve.registry import RepositoryError

_STOPPING = (signal.SIGINT, signal.SIGTERM)


class SignalHandlers:
    """The handlers of one process; ``on_drain``: coroutine functions run once draining starts."""

    def __init__(self, plane: DataPlane, path: str, log: Callable[[str], None]):
        self.plane, self.path, self.log = plane, path, log
        self.on_drain: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Put the handlers in place (only on the main thread, where signals arrive); the stopping signals'
        handlers run before the ones already there (uvicorn's)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = loop
        for sig in _STOPPING:
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, self._stopping(previous))
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self._hangup)

    def uninstall(self) -> None:
        """At shutdown: SIGHUP back to its default, and a reload still running cancelled."""
        if self._loop is not None and hasattr(signal, "SIGHUP"):
            self._loop.remove_signal_handler(signal.SIGHUP)
        for task in list(self._tasks):
            task.cancel()

    def _stopping(self, previous: Callable) -> Callable:
        def handler(signum, frame) -> None:
            self.plane.draining = True
            self._loop.call_soon_threadsafe(self._drain)
            previous(signum, frame)
        return handler

    def _drain(self) -> None:
        for hook in self.on_drain:
            self._spawn(hook())

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hangup(self) -> None:
        mode = self.plane.control_mode
        if mode == "none":
            self.log("SIGHUP ignored: in model control mode none the repository is read only at start (modes poll "
                     "and explicit read it again on SIGHUP)")
            return
        self.log(f"SIGHUP: reading the repository {self.path} again")
        self._spawn(self._reload(mode))

    async def _reload(self, mode: str) -> None:
        registry = self.plane.registry
        try:
            if mode == "poll":
                await registry.poll()
                return
            for name in list(registry.models):
                try:
                    await registry.load(name)
                except RepositoryError:
                    pass  # the registry has logged each refusal, and what served before keeps serving
        except Exception as e:  # a repository that cannot be read now: said, and the server goes on
            self.log(f"reading {self.path} after SIGHUP failed ({type(e).__name__}: {e})")
