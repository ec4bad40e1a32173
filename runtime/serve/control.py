"""What load, unload and statistics mean for the whole server when it runs several worker processes
(``--workers N``): each worker listens on a unix socket in a private directory the command made
(``control_dir``), and the worker that gets a request asks the others over those sockets. A load or unload
is done by the worker that got it, then by every other, and answered once all have; statistics and
/metrics add up every worker's counters. Explicit-mode decisions are also written to the directory, so that
a worker started later (one that replaces a dead one) serves the same models. With one worker none of this
runs: the requests act on the registry directly."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Callable

from torchport.runtime.files import write_json
from torchport.runtime.serve.registry import Registry, RepositoryError
from torchport.runtime.serve.stats import ServerStats

STATE_FILE = "explicit.json"
ASK_TIMEOUT_S = {"stats": 10.0, "load": 120.0, "unload": 30.0}


class Control:
    """Load, unload and statistics of this worker and, with a control directory, of all the others."""

    def __init__(self, registry: Registry, server_stats: ServerStats, control_dir: str | None,
                 log: Callable[[str], None] = print):
        self.registry, self.server_stats, self.log = registry, server_stats, log
        self.dir = Path(control_dir) if control_dir else None
        self._server: asyncio.AbstractServer | None = None
        self._socket = self.dir / f"w-{os.getpid()}.sock" if self.dir else None

    # --- the explicit-mode state shared by workers ---------------------------------------------------
    def startup_models(self, load_models: tuple[str, ...]) -> tuple[str, ...]:
        """The models an explicit-mode worker loads at start: ``load_models`` as changed by the load and
        unload requests the server has carried out since it started."""
        if self.dir is None or not (self.dir / STATE_FILE).exists():
            return load_models
        state = json.loads((self.dir / STATE_FILE).read_text())
        names = set(load_models)
        if "*" in names:
            names = {e["name"] for e in self.registry.index()}
        return tuple(sorted((names | {n for n, on in state.items() if on}) - {n for n, on in state.items() if not on}))

    def _remember(self, name: str, loaded: bool) -> None:
        if self.dir is None:
            return
        with open(self.dir / "explicit.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.dir / STATE_FILE
            state = json.loads(path.read_text()) if path.exists() else {}
            state[name] = loaded
            write_json(path, state)

    # --- requests, for the whole server ----------------------------------------------------------------
    async def load(self, name: str) -> None:
        """Load ``name`` here, then in every other worker; RepositoryError naming each refusal."""
        await self.registry.load(name)
        self._remember(name, True)
        await self._everywhere("load", name)

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)
        self._remember(name, False)
        await self._everywhere("unload", name)

    async def statistics(self) -> tuple[list[dict], list[dict]]:
        """Every worker's model snapshots and server snapshots (this worker's first)."""
        models, servers = list(self.registry.snapshots()), [self.server_stats.snapshot()]
        for pid, reply in await self._ask_all({"op": "stats"}):
            if "models" in reply:
                models += reply["models"]
                servers.append(reply["server"])
            else:
                self.log(f"worker {pid} gave no statistics ({reply.get('error')}); its counts are left out")
        return models, servers

    async def _everywhere(self, op: str, name: str) -> None:
        failed = [f"worker {pid}: {reply.get('error')}" for pid, reply in await self._ask_all({"op": op, "name": name})
                  if not reply.get("ok")]
        if failed:
            raise RepositoryError(f"{op} of {name!r} done in worker {os.getpid()} but not everywhere: "
                                  + "; ".join(failed))

    # --- the sockets -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.dir is not None:
            self._socket.unlink(missing_ok=True)
            self._server = await asyncio.start_unix_server(self._answer, path=str(self._socket))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._socket.unlink(missing_ok=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            op = request.get("op")
            if op == "stats":
                reply = {"models": self.registry.snapshots(), "server": self.server_stats.snapshot()}
            elif op in ("load", "unload"):
                try:
                    await (self.registry.load if op == "load" else self.registry.unload)(request["name"])
                    reply = {"ok": True}
                except RepositoryError as e:
                    reply = {"ok": False, "error": str(e)}
            else:
                reply = {"error": f"unknown request {op!r}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _ask_all(self, request: dict) -> list[tuple[str, dict]]:
        if self.dir is None:
            return []
        peers = [p for p in self.dir.glob("w-*.sock") if p != self._socket]
        replies = await asyncio.gather(*(self._ask(p, request) for p in peers))
        return [(p.stem[2:], r) for p, r in zip(peers, replies) if r is not None]

    async def _ask(self, path: Path, request: dict) -> dict | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5)
        except (ConnectionRefusedError, FileNotFoundError):  # a worker that has gone: forget its socket
            path.unlink(missing_ok=True)
            return None
        except (OSError, asyncio.TimeoutError) as e:
            return {"error": f"cannot reach it ({e})"}
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), ASK_TIMEOUT_S[request["op"]])
            return json.loads(line) if line else {"error": "it closed the connection"}
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            return {"error": f"no answer ({type(e).__name__}: {e})"}
        finally:
            writer.close()
