"""``inference.GRPCInferenceService`` of the Open Inference Protocol on grpcio's asyncio server, on the same
event loop as REST, over the same registry, batchers, gate and statistics. The message classes are the
generated modules tritonclient[grpc] ships (``tritonclient.grpc.service_pb2``). Statuses follow REST's:
400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE,
504 DEADLINE_EXCEEDED, 500 INTERNAL."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc

from torchport.runtime.serve.app import IGNORED_REPOSITORY_PARAMETERS, InferenceApp, server_metadata
from torchport.runtime.serve.models import ServedModel
from torchport.runtime.serve.protocol import INPUT_DTYPES, ProtocolError
from torchport.runtime.serve.registry import RepositoryError
from torchport.runtime.serve.security import RETRY_AFTER_S
from torchport.runtime.serve.stats import merge, triton_statistics

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED, 500: grpc.StatusCode.INTERNAL}
_OUTCOME = {400: "bad_request", 413: "too_large", 503: "overloaded", 504: "timeout"}
_now = time.perf_counter_ns


def request_rows(request: service_pb2.ModelInferRequest, served: ServedModel) -> np.ndarray:
    """The (rows, n_features) float32 matrix of a ModelInferRequest, from ``raw_input_contents`` or the
    tensor's ``contents``; ProtocolError 400 naming what does not fit the model."""
    info = served.info
    if len(request.inputs) != 1:
        raise ProtocolError(400, f"'inputs' must hold exactly one tensor (the model's input {info.input_name!r})")
    tensor = request.inputs[0]
    if tensor.name != info.input_name:
        raise ProtocolError(400, f"unknown input {tensor.name!r}; the model {info.name!r} takes one input named "
                                 f"{info.input_name!r}")
    n_features = len(info.feature_names)
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[0] < 1 or shape[1] != n_features:
        raise ProtocolError(400, f"input {tensor.name!r}: shape {shape} does not fit the model; expected [rows, "
                                 f"{n_features}] with rows >= 1 (features {list(info.feature_names)})")
    dtype = INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise ProtocolError(400, f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported; send FP32 "
                                 "or FP64")
    count = shape[0] * n_features
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
            raise ProtocolError(400, "send the input either in raw_input_contents (one entry) or in contents")
        raw = request.raw_input_contents[0]
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(400, f"input {tensor.name!r}: raw_input_contents has {len(raw)} bytes but shape "
                                     f"{shape} of {tensor.datatype} needs {count * dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape[0], n_features).astype(np.float32)
    values = tensor.contents.fp32_contents if tensor.datatype == "FP32" else tensor.contents.fp64_contents
    if len(values) != count:
        raise ProtocolError(400, f"input {tensor.name!r}: contents has {len(values)} {tensor.datatype} values but "
                                 f"shape {shape} needs {count}")
    return np.array(values, dtype=np.float32).reshape(shape[0], n_features)


def _check_outputs(request: service_pb2.ModelInferRequest, served: ServedModel) -> None:
    for out in request.outputs:
        if out.name != served.info.output_name:
            raise ProtocolError(400, f"unknown output {out.name!r}; the model {served.name!r} has one output named "
                                     f"{served.info.output_name!r}")


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The gRPC endpoints, answering from the REST app's registry, control, gate and statistics."""

    def __init__(self, app: InferenceApp):
        self.app, self.registry, self.gate = app, app.registry, app.gate
        self._metadata = service_pb2.ServerMetadataResponse(**server_metadata())

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.gate.needs_key:
            return
        value = next((m.value for m in context.invocation_metadata() if m.key == "authorization"), None)
        if not self.gate.authorized(value):
            self.app.server_stats.rejected["unauthenticated"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "this server needs an API key: send the metadata 'authorization: Bearer <key>'")

    async def _served(self, name: str, version: str, context: grpc.aio.ServicerContext) -> ServedModel:
        try:
            return self.app.served_or_404(name, version or None)
        except ProtocolError as e:
            self.app.server_stats.rejected["not_found"] += 1
            await context.abort(CODES[e.status], str(e))

    # --- health and metadata -------------------------------------------------------------------------
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        await self._authorize(context)
        return service_pb2.ModelReadyResponse(ready=self.registry.lookup(request.name, request.version or None)
                                              is not None)

    async def ServerMetadata(self, request, context):
        await self._authorize(context)
        return self._metadata

    async def ModelMetadata(self, request, context):
        await self._authorize(context)
        served = await self._served(request.name, request.version, context)
        meta = served.info.metadata(self.registry.versions(served.name))
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    async def ModelConfig(self, request, context):
        await self._authorize(context)
        served = await self._served(request.name, request.version, context)
        return service_pb2.ModelConfigResponse(config=served.config())

    # --- inference -------------------------------------------------------------------------------------
    async def _infer(self, request: service_pb2.ModelInferRequest,
                     context: grpc.aio.ServicerContext) -> tuple[service_pb2.ModelInferResponse | None, int, str]:
        """Answer one request: (response, 200, "") or (None, status, message)."""
        started = _now()
        served = self.registry.lookup(request.model_name, request.model_version or None)
        if served is None:  # (looked up again: a load may have finished in between)
            try:
                served = self.app.served_or_404(request.model_name, request.model_version or None)
            except ProtocolError as e:
                self.app.server_stats.rejected["not_found"] += 1
                return None, 404, str(e)
        stats, gate, response = served.stats, self.gate, None
        task = gate.admit()
        if task is None:
            status, message = 503, gate.overloaded()
        else:
            try:
                rows = request_rows(request, served)
                _check_outputs(request, served)
                out = await served.batcher.submit(rows)
                info = served.info
                response = service_pb2.ModelInferResponse(
                    model_name=info.name, model_version=info.version, id=request.id,
                    outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=info.output_name, datatype="FP32",
                                                                              shape=out.shape)],
                    raw_output_contents=[np.ascontiguousarray(out, dtype="<f4").tobytes()])
                status, message = 200, ""
            except BaseException as e:
                status, message = gate.failure(task, e)
            finally:
                gate.release(task)
        stats.finished("success" if status == 200 else _OUTCOME.get(status, "error"), _now() - started)
        return response, status, message

    async def ModelInfer(self, request, context):
        await self._authorize(context)
        response, status, message = await self._infer(request, context)
        if response is None:
            if status == 503:
                context.set_trailing_metadata((("retry-after", str(RETRY_AFTER_S)),))
            await context.abort(CODES.get(status, grpc.StatusCode.INTERNAL), message)
        return response

    async def ModelStreamInfer(self, request_iterator: AsyncIterator, context) -> AsyncIterator:
        """Each request of the stream is answered as soon as it is done (in completion order, with its id),
        so the requests of one stream are batched together like concurrent calls."""
        await self._authorize(context)
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def one(request) -> None:
            response, status, message = await self._infer(request, context)
            if response is None:
                response = service_pb2.ModelStreamInferResponse(
                    error_message=message, infer_response=service_pb2.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id))
            else:
                response = service_pb2.ModelStreamInferResponse(infer_response=response)
            await answers.put(response)

        async def read() -> None:
            async for request in request_iterator:
                task = asyncio.create_task(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    # --- repository and statistics -----------------------------------------------------------------------
    async def ModelStatistics(self, request, context):
        await self._authorize(context)
        if request.name:
            await self._served(request.name, request.version, context)
        models, _ = await self.app.control.statistics()
        stats = [triton_statistics(s) for s in merge(models)
                 if (not request.name or s["name"] == request.name)
                 and (not request.version or s["version"] == request.version)]
        return json_format.ParseDict({"model_stats": stats}, service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request, context):
        await self._authorize(context)
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(models=[
            index(name=e["name"], version=e.get("version", ""), state=e["state"], reason=e.get("reason", ""))
            for e in self.registry.index(ready_only=request.ready)])

    async def _repository(self, op: str, request, context) -> None:
        await self._authorize(context)
        if set(request.parameters) - IGNORED_REPOSITORY_PARAMETERS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{op} parameters (config and file overrides) are "
                                "not supported; the model is read from the repository as it is on disk")
        if self.app.control_mode != "explicit":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"explicit model {op} is not allowed: this server's model control mode is "
                                f"{self.app.control_mode!r} (explicit mode allows it)")
        try:
            await (self.app.control.load if op == "load" else self.app.control.unload)(request.model_name)
        except RepositoryError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def RepositoryModelLoad(self, request, context):
        await self._repository("load", request, context)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self._repository("unload", request, context)
        return service_pb2.RepositoryModelUnloadResponse()


async def start_grpc(app: InferenceApp, host: str, port: int, max_message_bytes: int, reuse_port: bool,
                     tls: tuple[bytes, bytes] | None = None) -> grpc.aio.Server:
    """Start the gRPC server on ``host:port`` (TLS when ``tls`` is (certificate chain, key) PEM bytes)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", -1),
                                      ("grpc.so_reuseport", 1 if reuse_port else 0)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(app), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    await server.start()
    return server
