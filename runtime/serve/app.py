"""The ASGI application: the Open Inference Protocol (KServe V2) REST endpoints over every served model and
version, Triton's repository, statistics and model configuration extensions, /metrics, and lifespan. Plain
ASGI (no framework) because the per-request cost is what the server's speed is made of."""
from __future__ import annotations

import time
import zlib
from importlib.metadata import PackageNotFoundError, version
from typing import Awaitable, Callable

import orjson

from torchport.runtime.serve import metrics
from torchport.runtime.serve.control import Control
from torchport.runtime.serve.models import ServedModel
from torchport.runtime.serve.protocol import ProtocolError, error_body, parse_infer_request
from torchport.runtime.serve.registry import Registry, RepositoryError
from torchport.runtime.serve.repository import config_json
from torchport.runtime.serve.security import RETRY_AFTER_S, Gate
from torchport.runtime.serve.stats import ServerStats, merge, merge_server, triton_statistics

SERVER_NAME = "torchport"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
HEALTH = {("v2", "health", "live"): b'{"live":true}', ("v2", "health", "ready"): b'{"ready":true}'}
_JSON = [(b"content-type", b"application/json")]
_BINARY = [(b"content-type", b"application/octet-stream")]
# torchport models have no dependents, so unloading them is what Triton's unload_dependents asks for too
IGNORED_REPOSITORY_PARAMETERS = {"unload_dependents"}
_OUTCOME = {400: "bad_request", 413: "too_large", 499: "disconnected", 503: "overloaded", 504: "timeout"}
_now = time.perf_counter_ns


def server_version() -> str:
    try:
        return version("torchport")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS}


class InferenceApp:
    """ASGI app over a Registry of served models; ``startup`` and ``shutdown`` run in the lifespan (the
    server starts gRPC, the repository poll and the worker sockets there)."""

    def __init__(self, registry: Registry, control: Control, gate: Gate, server_stats: ServerStats,
                 max_body_bytes: int, control_mode: str,
                 startup: Callable[[], Awaitable[None]] | None = None,
                 shutdown: Callable[[], Awaitable[None]] | None = None):
        self.registry, self.control, self.gate, self.server_stats = registry, control, gate, server_stats
        self.max_body_bytes, self.control_mode = max_body_bytes, control_mode
        self._startup, self._shutdown = startup, shutdown
        self._server_metadata = orjson.dumps(server_metadata())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                model = self.registry.routes.get(scope["path"])
                if model is not None:
                    return await self._infer(model, scope, receive, send)
            await self._route(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._startup is not None:
                        await self._startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for served in self.registry.served():
                    served.batcher.flush()
                if self._shutdown is not None:
                    await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- inference -------------------------------------------------------------------------------------
    async def _infer(self, model: ServedModel, scope: dict, receive: Callable, send: Callable) -> None:
        started = _now()
        header_length, encoding, authorization, length = self._read_headers(scope["headers"])
        gate = self.gate
        if not gate.authorized(authorization):
            return await self._unauthenticated(send)
        stats = model.stats
        task = gate.admit()
        if task is None:
            status, message = 503, gate.overloaded()
        else:
            try:
                if header_length is not None and not header_length.isdigit():
                    raise ProtocolError(400, f"Inference-Header-Content-Length must be a byte count, got "
                                             f"{header_length!r}")
                if length > self.max_body_bytes:
                    raise ProtocolError(413, self._too_large(f"the request body ({length} bytes)"))
                body = await self._body(receive)
                if encoding:
                    body = self._decompress(body, encoding)
                request = parse_infer_request(body, None if header_length is None else int(header_length), model.info)
                out = await model.batcher.submit(request.rows)
                payload, json_length = model.encoder.encode(request.request_id, out, request.binary_output)
                status = 200
            except BaseException as e:
                status, message = gate.failure(task, e)
            finally:
                gate.release(task)
        if status != 200:
            stats.finished(_OUTCOME.get(status, "error"), _now() - started)
            headers = [*_JSON, (b"retry-after", str(RETRY_AFTER_S).encode())] if status == 503 else _JSON
            return await self._respond(send, status, error_body(message), headers)
        if json_length is None:
            await self._respond(send, 200, payload, _JSON)
        else:
            await self._respond(send, 200, payload,
                                [*_BINARY, (b"inference-header-content-length", str(json_length).encode())])
        stats.finished("success", _now() - started)

    def _read_headers(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes, bytes | None, int]:
        """Inference-Header-Content-Length (as sent), Content-Encoding, Authorization and Content-Length (0 if
        absent or not a number)."""
        header_length, encoding, authorization, length = None, b"", None, 0
        for key, value in headers:
            if key == b"inference-header-content-length":
                header_length = value
            elif key == b"content-length" and value.isdigit():
                length = int(value)
            elif key == b"content-encoding":
                encoding = value.strip().lower()
            elif key == b"authorization":
                authorization = value
        return header_length, encoding, authorization, length

    def _too_large(self, what: str) -> str:
        return (f"{what} is over this server's limit of {self.max_body_bytes} bytes; send fewer rows per request "
                "or raise --max-body-bytes")

    async def _body(self, receive: Callable) -> bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProtocolError(499, "the client closed the connection before sending the whole request")
        body = message.get("body", b"")
        if not message.get("more_body"):
            return body
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ProtocolError(499, "the client closed the connection before sending the whole request")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ProtocolError(413, self._too_large("the request body"))
            chunks.append(chunk)
        return b"".join(chunks)

    def _decompress(self, body: bytes, encoding: bytes) -> bytes:
        if encoding not in (b"gzip", b"deflate"):
            raise ProtocolError(400, f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported; "
                                     "send gzip, deflate or an uncompressed body")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == b"gzip" else zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, self.max_body_bytes + 1)
        except zlib.error as e:
            raise ProtocolError(400, f"the {encoding.decode()} body cannot be decompressed ({e})") from None
        if len(out) > self.max_body_bytes:
            raise ProtocolError(413, self._too_large("the decompressed request body"))
        return out

    # --- everything else ---------------------------------------------------------------------------------
    async def _route(self, scope: dict, receive: Callable, send: Callable) -> None:
        method, path = scope["method"], scope["path"]
        parts = tuple(path.strip("/").split("/"))
        if parts in HEALTH:
            if method != "GET":
                return await self._error(send, 405, f"{path} takes GET, not {method}")
            return await self._respond(send, 200, HEALTH[parts], _JSON)
        if method == "POST":  # an infer path written another way (a trailing or doubled slash)
            model = self.registry.routes.get("/" + "/".join(p for p in parts if p))
            if model is not None:
                return await self._infer(model, scope, receive, send)
        if not self.gate.authorized(dict(scope["headers"]).get(b"authorization")):
            return await self._unauthenticated(send)
        try:
            handler, wanted = self._endpoint(parts)
        except ProtocolError as e:
            self.server_stats.rejected["not_found" if e.status == 404 else "bad_request"] += 1
            return await self._error(send, e.status, str(e))
        if method != wanted:
            self.server_stats.rejected["bad_request"] += 1
            return await self._error(send, 405, f"{path} takes {wanted}, not {method}")
        try:
            body = await self._body(receive) if method == "POST" else b""
            status, answer = await handler(body)
        except ProtocolError as e:
            if e.status == 404:
                self.server_stats.rejected["not_found"] += 1
            return await self._error(send, e.status, str(e))
        if isinstance(answer, tuple):  # (bytes, content type)
            return await self._respond(send, status, answer[0], [(b"content-type", answer[1].encode())])
        await self._respond(send, status, answer if isinstance(answer, bytes) else orjson.dumps(answer), _JSON)

    def _endpoint(self, parts: tuple[str, ...]) -> tuple[Callable[[bytes], Awaitable[tuple[int, object]]], str]:
        """The handler of a path other than infer, and the method it takes; ProtocolError 404 for none."""
        if parts == ("v2",):
            return self._constant(self._server_metadata), "GET"
        if parts == ("metrics",):
            return self._metrics, "GET"
        if parts == ("v2", "models", "stats"):
            return lambda body: self._stats(None, None), "GET"
        if parts == ("v2", "repository", "index"):
            return self._index, "POST"
        if len(parts) == 5 and parts[:3] == ("v2", "repository", "models") and parts[4] in ("load", "unload"):
            name, op = parts[3], parts[4]
            return (lambda body: self._repository(op, name, body)), "POST"
        if len(parts) >= 3 and parts[:2] == ("v2", "models"):
            name, rest, version = parts[2], parts[3:], None
            if rest[:1] == ("versions",):
                if len(rest) < 2 or not rest[1]:
                    raise ProtocolError(404, f"no such endpoint: /{'/'.join(parts)}")
                version, rest = rest[1], rest[2:]
            kind = {(): "metadata", ("ready",): "ready", ("infer",): "infer", ("config",): "config",
                    ("stats",): "stats"}.get(rest)
            if kind is None:
                raise ProtocolError(404, f"no such endpoint: /{'/'.join(parts)}")
            if kind == "stats":
                return (lambda body: self._stats(name, version)), "GET"
            return (lambda body: self._model(kind, name, version)), "POST" if kind == "infer" else "GET"
        raise ProtocolError(404, f"no such endpoint: /{'/'.join(parts)}")

    @staticmethod
    def _constant(body: bytes):
        async def answer(_: bytes) -> tuple[int, bytes]:
            return 200, body
        return answer

    def served_or_404(self, name: str, version: str | None) -> ServedModel:
        """The served version, or ProtocolError 404 saying what is served instead."""
        served = self.registry.lookup(name, version)
        if served is not None:
            return served
        versions = self.registry.versions(name)
        if versions:
            raise ProtocolError(404, f"model {name!r} has no version {version!r} being served; it serves version(s) "
                                     f"{', '.join(versions)}")
        state = self.registry.reason(name)
        raise ProtocolError(404, f"model {name!r} is not served here" + (f" ({state})" if state else "")
                            + f"; this server serves {', '.join(sorted(self.registry.models)) or 'no model'}")

    async def _model(self, kind: str, name: str, version: str | None) -> tuple[int, object]:
        served = self.served_or_404(name, version)
        if kind == "metadata":
            return 200, served.info.metadata(self.registry.versions(name))
        if kind == "ready":
            return 200, {"name": name, "ready": True}
        if kind == "config":
            return 200, config_json(served.config())
        raise AssertionError(kind)  # _route sends infer on a served version to _infer before this

    async def _stats(self, name: str | None, version: str | None) -> tuple[int, object]:
        if name is not None:
            self.served_or_404(name, version)
        models, _ = await self.control.statistics()
        merged = [s for s in merge(models)  # Triton: without a version, every version of the model
                  if (name is None or s["name"] == name) and (version is None or s["version"] == version)]
        return 200, {"model_stats": [triton_statistics(s) for s in merged]}

    async def _metrics(self, _: bytes) -> tuple[int, object]:
        models, servers = await self.control.statistics()
        return 200, (metrics.render(merge(models), merge_server(servers), len(servers)), metrics.CONTENT_TYPE)

    async def _index(self, body: bytes) -> tuple[int, object]:
        request = _json_object(body, "the repository index request")
        ready = request.get("ready", False)
        if not isinstance(ready, bool):
            raise ProtocolError(400, f"'ready' must be true or false, got {ready!r}")
        return 200, self.registry.index(ready_only=ready)

    async def _repository(self, op: str, name: str, body: bytes) -> tuple[int, object]:
        request = _json_object(body, f"the {op} request")
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict) or set(parameters) - IGNORED_REPOSITORY_PARAMETERS:
            raise ProtocolError(400, f"{op} parameters (config and file overrides) are not supported; the model is "
                                     "read from the repository as it is on disk")
        if self.control_mode != "explicit":
            raise ProtocolError(400, f"explicit model {op} is not allowed: this server's model control mode is "
                                     f"{self.control_mode!r} (explicit mode allows it)")
        try:
            await (self.control.load if op == "load" else self.control.unload)(name)
        except RepositoryError as e:
            raise ProtocolError(400, str(e)) from None
        return 200, b"{}"

    # --- answers -------------------------------------------------------------------------------------
    async def _respond(self, send: Callable, status: int, body: bytes, headers: list) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Callable, status: int, message: str) -> None:
        await self._respond(send, status, error_body(message), _JSON)

    async def _unauthenticated(self, send: Callable) -> None:
        self.server_stats.rejected["unauthenticated"] += 1
        await self._respond(send, 401, error_body("this server needs an API key: send the header "
                                                     "'Authorization: Bearer <key>'"),
                            [*_JSON, (b"www-authenticate", b'Bearer realm="torchport"')])


def _json_object(body: bytes, what: str) -> dict:
    """An optional JSON object body ({} when empty); ProtocolError 400 when it is not one."""
    if not body.strip():
        return {}
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ProtocolError(400, f"{what} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(400, f"{what} must be a JSON object")
    return obj
