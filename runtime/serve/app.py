"""The ASGI application: Open Inference Protocol (KServe V2) REST endpoints for one model, /metrics,
and lifespan. Plain ASGI (no framework) because the per-request cost is what the server's speed is made of."""
from __future__ import annotations

import json
import os
import time
import zlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from torchport.runtime.errors import ParityError
from torchport.runtime.predictor import Predictor
from torchport.runtime.serve.batching import Batcher
from torchport.runtime.serve.metrics import ServerMetrics
from torchport.runtime.serve.protocol import (MODEL_VERSION, ModelInfo, ProtocolError, ResponseEncoder, error_body,
                                              parse_infer_request)

SERVER_NAME = "torchport"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
CONFIG_ENV = "TORCHPORT_SERVE_CONFIG"
_JSON = [(b"content-type", b"application/json")]
_BINARY = [(b"content-type", b"application/octet-stream")]
_OUTCOME = {400: "bad_request", 404: "not_found", 405: "bad_request", 413: "too_large"}


def _version() -> str:
    try:
        return version("torchport")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


class InferenceApp:
    """ASGI app serving ``predict`` (rows in, rows out) as the V2 model ``info.name``, with dynamic batching."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], info: ModelInfo, max_batch_size: int = 64,
                 max_queue_delay_us: int = 0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 providers: tuple[str, ...] = ()):
        self.info = info
        self.providers = providers
        self.self_check_note = ""  # what the model's self-check found, set by build_app
        self.max_body_bytes = max_body_bytes
        self.metrics = ServerMetrics(info.name, max_batch_size)
        self.encoder = ResponseEncoder(info)
        self.batcher = Batcher(predict, max_batch_size, max_queue_delay_us / 1e6, self.metrics)
        self._infer_path = f"/v2/models/{info.name}/infer"
        self._server_metadata = json.dumps({"name": SERVER_NAME, "version": _version(),
                                            "extensions": ["binary_tensor_data"]}).encode()
        self._model_metadata = json.dumps(info.metadata()).encode()
        self._model_ready = json.dumps({"name": info.name, "ready": True}).encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST" and scope["path"] == self._infer_path:
                await self._infer(scope, receive, send)
            else:
                await self._route(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.batcher.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: dict, receive: Callable, send: Callable) -> None:
        method, parts = scope["method"], scope["path"].strip("/").split("/")
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            name, rest = parts[2], parts[3:]
            if name != self.info.name:
                return await self._error(send, 404, f"model {name!r} is not served here; this server serves "
                                                    f"{self.info.name!r}", infer=rest[-1:] == ["infer"])
            if rest[:1] == ["versions"]:
                if len(rest) < 2 or rest[1] != MODEL_VERSION:
                    version = rest[1] if len(rest) > 1 else ""
                    return await self._error(send, 404, f"model {name!r} has no version {version!r}; it has "
                                                        f"version {MODEL_VERSION!r}", infer=rest[-1:] == ["infer"])
                rest = rest[2:]
            endpoint = {(): ("GET", self._model_metadata), ("ready",): ("GET", self._model_ready),
                        ("infer",): ("POST", None)}.get(tuple(rest))
        else:
            endpoint = {("v2",): ("GET", self._server_metadata),
                        ("v2", "health", "live"): ("GET", b'{"live":true}'),
                        ("v2", "health", "ready"): ("GET", b'{"ready":true}'),
                        ("metrics",): ("GET", None)}.get(tuple(parts))
        if endpoint is None:
            return await self._error(send, 404, f"no such endpoint: {scope['path']}")
        if method != endpoint[0]:
            return await self._error(send, 405, f"{scope['path']} takes {endpoint[0]}, not {method}")
        if endpoint[0] == "POST":
            return await self._infer(scope, receive, send)
        if parts == ["metrics"]:
            body = self.metrics.render().encode()
            return await self._respond(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4")])
        await self._respond(send, 200, endpoint[1], _JSON)

    async def _infer(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        try:
            header_length, encoding = self._read_headers(scope["headers"])
            message = await receive()
            body = message["body"] if not message.get("more_body") else await self._read_rest(message, receive)
            if encoding:
                body = self._decompress(body, encoding)
            request = parse_infer_request(body, header_length, self.info)
            if len(request.rows):
                out = await self.batcher.submit(request.rows)
            else:  # an empty batch is answered as the Predictor answers it
                out = np.empty((0, len(self.info.target_names)), dtype=np.float32)
            payload, json_length = self.encoder.encode(request.request_id, out, request.binary_output)
        except ProtocolError as e:
            return await self._error(send, e.status, str(e), infer=True, started=started)
        except Exception as e:  # a failure of the model itself, not of the request
            return await self._error(send, 500, f"inference failed: {type(e).__name__}: {e}", infer=True,
                                     started=started)
        if json_length is None:
            await self._respond(send, 200, payload, _JSON)
        else:
            await self._respond(send, 200, payload,
                                [*_BINARY, (b"inference-header-content-length", str(json_length).encode())])
        self.metrics.requests["success"] += 1
        self.metrics.latency.observe(time.perf_counter() - started)

    def _read_headers(self, headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bytes]:
        header_length, encoding = None, b""
        for key, value in headers:
            if key == b"inference-header-content-length":
                if not value.isdigit():
                    raise ProtocolError(400, f"Inference-Header-Content-Length must be a byte count, got {value!r}")
                header_length = int(value)
            elif key == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise ProtocolError(413, f"the request body ({int(value)} bytes) is over this server's limit of "
                                         f"{self.max_body_bytes} bytes; send fewer rows per request or raise "
                                         "--max-body-bytes")
            elif key == b"content-encoding":
                encoding = value.strip().lower()
        return header_length, encoding

    async def _read_rest(self, message: dict, receive: Callable) -> bytes:
        body = message.get("body", b"")
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ProtocolError(413, f"the request body is over this server's limit of {self.max_body_bytes} "
                                         "bytes; send fewer rows per request or raise --max-body-bytes")
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
            raise ProtocolError(413, f"the decompressed request body is over this server's limit of "
                                     f"{self.max_body_bytes} bytes")
        return out

    async def _respond(self, send: Callable, status: int, body: bytes, headers: list) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Callable, status: int, message: str, infer: bool = False,
                     started: float | None = None) -> None:
        await self._respond(send, status, error_body(message), _JSON)
        if infer:
            self.metrics.requests[_OUTCOME.get(status, "error")] += 1
            if started is not None:
                self.metrics.latency.observe(time.perf_counter() - started)


def build_app(bundle: str | os.PathLike, model_name: str | None = None, providers: Any = "auto",
              max_batch_size: int = 64, max_queue_delay_us: int = 0,
              max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, allow_failed_parity: bool = False) -> InferenceApp:
    """Load a bundle (or an .onnx file) into a Predictor, run its golden cases (``Predictor.self_check``: a
    ParityError stops the server before it listens) and wrap it as the V2 model ``model_name``. A bundle that
    failed parity is refused unless ``allow_failed_parity``, which also lets a failing self-check through
    (said in ``app.self_check_note``)."""
    predictor = Predictor(bundle, providers=providers, allow_failed_parity=allow_failed_parity)
    try:
        note = str(predictor.self_check())
    except ParityError as e:
        if not allow_failed_parity:
            raise
        note = f"{e} (served anyway: allow_failed_parity)"
    info = ModelInfo(name=model_name or Path(bundle).resolve().name.removesuffix(".onnx"),
                     input_name=predictor.input_name, output_name=predictor.output_name,
                     feature_names=tuple(predictor.feature_names), target_names=tuple(predictor.target_names))
    app = InferenceApp(predictor.predict, info, max_batch_size, max_queue_delay_us, max_body_bytes,
                       tuple(predictor.providers))
    app.self_check_note = note
    return app


def app_from_env() -> InferenceApp:
    """Factory for each worker process of ``torchport serve --workers N``: the settings come as JSON in
    the environment variable TORCHPORT_SERVE_CONFIG."""
    return build_app(**json.loads(os.environ[CONFIG_ENV]))
