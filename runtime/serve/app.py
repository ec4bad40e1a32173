"""The REST transport: an ASGI application that decodes the Open Inference Protocol (KServe V2) REST
endpoints, with Triton's repository, statistics and model configuration extensions and /metrics, into calls
of the data plane (``dataplane.DataPlane``) and encodes its answers; HEAD wherever GET is served, 405 with
``Allow`` for any other method, and /openapi.json describing all of it (``openapi``). Plain ASGI (no
framework) because the per-request cost is what the server's speed is made of."""
from __future__ import annotations

import asyncio
import time
import zlib
from asyncio import CancelledError, current_task
from typing import Awaitable, Callable
from urllib.parse import unquote

import orjson

from torchport.runtime.serve.dataplane import DataPlane
from torchport.runtime.serve.inference import ProtocolError
from torchport.runtime.serve.interval_outputs import wants_intervals
from torchport.runtime.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from torchport.runtime.serve.openapi import openapi_document
from torchport.runtime.serve.parsing import LARGE_JSON_BYTES, BodyParser
from torchport.runtime.serve.protocol import decode_request, error_body
from torchport.runtime.serve.repository import config_json
from torchport.runtime.serve.security import RETRY_AFTER_S, Deadlines

_JSON = [(b"content-type", b"application/json")]
_BINARY = [(b"content-type", b"application/octet-stream")]
# the headers of error answers that need more than the content type: 503 says when to retry; after 408 the
# rest of the body may still be on its way, so the connection is closed
_ERROR_HEADERS = {503: [*_JSON, (b"retry-after", str(RETRY_AFTER_S).encode())],
                  408: [*_JSON, (b"connection", b"close")]}
# endpoints that answer without the API key
PUBLIC = {"live", "ready"}
# the longest Inference-Header-Content-Length taken as a number (a body is far smaller than 10**19 bytes)
MAX_LENGTH_DIGITS = 19
TARGET_CACHE = 4096  # POST paths remembered with what they reach (cleared when full)
_now = time.perf_counter_ns


def segments(scope: dict) -> list[str]:
    """The path's segments, empty ones dropped; each percent-decoded on its own, so that an encoded '/' stays
    inside its segment (a model named 'a%2Finfer' is the model 'a/infer', not an infer path)."""
    raw = scope.get("raw_path")
    if raw is not None and b"%" in raw:
        return [unquote(p) for p in raw.decode("latin-1").split("/") if p]
    return [p for p in scope["path"].split("/") if p]


def infer_target(parts: list[str]) -> tuple[str, str | None] | None:
    """(model, version or None) of an infer path (/v2/models/NAME[/versions/V]/infer), or None."""
    if len(parts) == 4 and parts[0] == "v2" and parts[1] == "models" and parts[3] == "infer":
        return parts[2], None
    if len(parts) == 6 and parts[0] == "v2" and parts[1] == "models" and parts[3] == "versions" \
            and parts[5] == "infer":
        return parts[2], parts[4]
    return None


def endpoint(parts: tuple[str, ...]) -> tuple[str, str, tuple]:
    """What a path other than infer asks for: (kind, the method it takes, its arguments); ProtocolError 404
    when it is no endpoint."""
    if parts == ("v2", "health", "live"):
        return "live", "GET", ()
    if parts == ("v2", "health", "ready"):
        return "ready", "GET", ()
    if parts == ("v2",):
        return "server", "GET", ()
    if parts == ("metrics",):
        return "metrics", "GET", ()
    if parts == ("openapi.json",):
        return "openapi", "GET", ()
    if parts == ("v2", "models", "stats"):
        return "stats", "GET", (None, None)
    if parts == ("v2", "repository", "index"):
        return "index", "POST", ()
    if len(parts) == 5 and parts[:3] == ("v2", "repository", "models") and parts[4] in ("load", "unload"):
        return parts[4], "POST", (parts[3],)
    if len(parts) >= 3 and parts[:2] == ("v2", "models"):
        name, rest, version = parts[2], parts[3:], None
        if rest[:1] == ("versions",) and len(rest) >= 2:
            version, rest = rest[1], rest[2:]
        kind = {(): "metadata", ("ready",): "model_ready", ("infer",): "infer", ("config",): "config",
                ("stats",): "stats"}.get(rest)
        if kind is not None:
            return kind, "POST" if kind == "infer" else "GET", (name, version)
    raise ProtocolError(404, f"no such endpoint: /{'/'.join(parts)}")


class InferenceApp:
    """ASGI app over a DataPlane; ``startup`` and ``shutdown`` run in the lifespan (the server starts gRPC,
    the repository poll and the worker sockets there)."""

    def __init__(self, plane: DataPlane, max_body_bytes: int, body_timeout_s: float = 5.0,
                 startup: Callable[[], Awaitable[None]] | None = None,
                 shutdown: Callable[[], Awaitable[None]] | None = None):
        self.plane, self.registry, self.max_body_bytes = plane, plane.registry, max_body_bytes
        self._body_clock = Deadlines(body_timeout_s)
        self._parser = BodyParser()
        self._targets: dict = {}  # POST path as sent -> infer_target of it: one dict lookup per request
        self._startup, self._shutdown = startup, shutdown
        self._server_metadata = orjson.dumps(plane.metadata)
        self._openapi = orjson.dumps(openapi_document(plane.metadata["version"]))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                key = scope.get("raw_path") or scope["path"]
                target = self._targets.get(key, False)
                if target is False:
                    if len(self._targets) >= TARGET_CACHE:
                        self._targets.clear()
                    target = self._targets[key] = infer_target(segments(scope))
                if target is not None:
                    return await self._infer(target[0], target[1], scope, receive, send)
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
                for served in self.plane.registry.served():
                    served.batcher.flush()
                if self._shutdown is not None:
                    await self._shutdown()
                self._parser.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- inference -------------------------------------------------------------------------------------
    async def _infer(self, name: str, version: str | None, scope: dict, receive: Callable, send: Callable) -> None:
        started, task = _now(), current_task()
        header_length, encoding, authorization, length = self._read_headers(scope["headers"])
        plane = self.plane
        if not plane.authorized(authorization):
            return await self._unauthenticated(send)
        try:
            served = plane.model(name, version)
        except ProtocolError as e:
            return await self._error(send, e.status, str(e))
        try:
            if header_length is not None:
                if not header_length.isdigit() or len(header_length) > MAX_LENGTH_DIGITS:
                    raise ProtocolError(400, f"Inference-Header-Content-Length must be a byte count, got "
                                             f"{header_length[:40].decode('latin-1')!r}")
                header_length = int(header_length)
            if length > self.max_body_bytes:
                raise ProtocolError(413, self._too_large(f"the request body ({length} bytes)"))
            body = await self._body(receive, task)
            if encoding:
                body = self._decompress(body, encoding)
            if (len(body) if header_length is None else header_length) < LARGE_JSON_BYTES:
                request, binary = decode_request(body, header_length, name, version)
            else:
                request, binary = await self._parser.decode(body, header_length, name, version)
            out = await plane.infer(served, request, task)
            if request.outputs and wants_intervals(request):
                payload, json_length = served.encoder.encode_outputs(request.id, plane.outputs(served, request, out),
                                                                     binary)
            elif binary or out.size <= served.encoder.STEP_VALUES:
                payload, json_length = served.encoder.encode(request.id, out, binary)
            else:
                payload, json_length = await served.encoder.encode_in_steps(request.id, out), None
        except ProtocolError as e:
            plane.finished(served, e.status, started)
            return await self._respond(send, e.status, error_body(str(e)), _ERROR_HEADERS.get(e.status, _JSON))
        if json_length is None:
            await self._respond(send, 200, payload, _JSON)
        else:
            await self._respond(send, 200, payload,
                                [*_BINARY, (b"inference-header-content-length", str(json_length).encode())])
        plane.finished(served, 200, started)

    @staticmethod
    def _read_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes, bytes | None, int]:
        """Inference-Header-Content-Length (as sent), Content-Encoding, Authorization and Content-Length (0 if
        absent; the HTTP parser has checked it is a number)."""
        header_length, encoding, authorization, length = None, b"", None, 0
        for key, value in headers:
            if key == b"inference-header-content-length":
                header_length = value
            elif key == b"content-length" and value.isdigit() and len(value) <= MAX_LENGTH_DIGITS:
                length = int(value)
            elif key == b"content-encoding":
                encoding = value.strip().lower()
            elif key == b"authorization":
                authorization = value
        return header_length, encoding, authorization, length

    def _too_large(self, what: str) -> str:
        return (f"{what} is over this server's limit of {self.max_body_bytes} bytes; send fewer rows per request "
                "or raise --max-body-bytes")

    async def _body(self, receive: Callable, task: asyncio.Task) -> bytes:
        """The whole request body, within the body's time limit (408 past it; ``task`` is the one reading
        it) and the size limit (413)."""
        clock = self._body_clock
        clock.start(task)
        try:
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
        except CancelledError:
            if not clock.expired(task):
                raise
            raise ProtocolError(408, f"the request body did not arrive within this server's limit of "
                                     f"{clock.timeout_s:g} s; send it at once, or raise --body-timeout-s") from None
        finally:
            clock.stop(task)

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
        method, path, plane = scope["method"], scope["path"], self.plane
        try:
            kind, wanted, args = endpoint(tuple(segments(scope)))
        except ProtocolError as e:
            kind, wanted, args, unknown = None, None, (), e
        if kind not in PUBLIC and not plane.authorized(dict(scope["headers"]).get(b"authorization")):
            return await self._unauthenticated(send)
        if kind is None:
            plane.rejected(404)
            return await self._error(send, 404, str(unknown))
        if method != wanted and not (method == "HEAD" and wanted == "GET"):  # HEAD wherever GET is served
            plane.rejected(405)
            allow = b"GET, HEAD" if wanted == "GET" else wanted.encode()
            return await self._respond(send, 405, error_body(f"{path} takes {allow.decode()}, not {method}"),
                                       [*_JSON, (b"allow", allow)])
        try:
            body = await self._body(receive, current_task()) if method == "POST" else b""
            status, answer = await self._answer(kind, args, body)
        except ProtocolError as e:
            return await self._respond(send, e.status, error_body(str(e)), _ERROR_HEADERS.get(e.status, _JSON))
        if isinstance(answer, tuple):  # (bytes, content type)
            return await self._respond(send, status, answer[0], [(b"content-type", answer[1].encode())])
        await self._respond(send, status, answer if isinstance(answer, bytes) else orjson.dumps(answer), _JSON)

    async def _answer(self, kind: str, args: tuple, body: bytes) -> tuple[int, object]:
        """The status and answer of an endpoint other than infer (bytes, (bytes, content type), or JSON)."""
        plane = self.plane
        if kind == "live":
            return 200, b'{"live":true}'
        if kind == "ready":
            return (200, b'{"ready":true}') if plane.ready else (503, b'{"ready":false}')
        if kind == "server":
            return 200, self._server_metadata
        if kind == "openapi":
            return 200, self._openapi
        if kind == "metrics":
            return 200, (await plane.metrics(), METRICS_CONTENT_TYPE)
        if kind == "stats":
            return 200, {"model_stats": await plane.statistics(*args)}
        if kind == "index":
            ready = _json_object(body, "the repository index request").get("ready", False)
            if not isinstance(ready, bool):
                raise ProtocolError(400, f"'ready' must be true or false, got {ready!r}")
            return 200, plane.repository_index(ready_only=ready)
        if kind in ("load", "unload"):
            parameters = _json_object(body, f"the {kind} request").get("parameters") or {}
            if not isinstance(parameters, dict):
                raise ProtocolError(400, f"{kind} 'parameters' must be a JSON object")
            await (plane.load if kind == "load" else plane.unload)(args[0], set(parameters))
            return 200, b"{}"
        if kind == "metadata":
            return 200, plane.model_metadata(*args)
        if kind == "model_ready":
            plane.model(*args)
            return 200, {"name": args[0], "ready": True}
        return 200, config_json(plane.model_config(*args))  # "config"

    # --- answers -------------------------------------------------------------------------------------
    @staticmethod
    async def _respond(send: Callable, status: int, body: bytes, headers: list) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Callable, status: int, message: str) -> None:
        await self._respond(send, status, error_body(message), _JSON)

    async def _unauthenticated(self, send: Callable) -> None:
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
