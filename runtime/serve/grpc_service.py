"""The gRPC transport: ``inference.GRPCInferenceService`` of the Open Inference Protocol on grpcio's asyncio
server, on the same event loop as REST, decoding each call into the data plane (``dataplane.DataPlane``) and
encoding its answers; and ``grpc.health.v1.Health`` (grpcio-health-checking: SERVING when ready,
NOT_SERVING while draining), which Kubernetes' gRPC probes and gRPC load balancers call. The message classes
are the generated modules tritonclient[grpc] ships (``tritonclient.grpc.service_pb2``). The data plane's statuses become codes: 400 INVALID_ARGUMENT (FAILED_PRECONDITION
for what the server's settings do not allow), 401 UNAUTHENTICATED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED,
503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, 500 INTERNAL."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from torchport.runtime.serve.dataplane import DataPlane
from torchport.runtime.serve.inference import InferRequest, InputTensor, NotAllowed, ProtocolError, RequestedOutput
from torchport.runtime.serve.interval_outputs import wants_intervals
from torchport.runtime.serve.protocol import WIRE_TYPES as _WIRE
from torchport.runtime.serve.security import RETRY_AFTER_S

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED, 500: grpc.StatusCode.INTERNAL}
# the typed contents field of each datatype the data plane accepts, and its numpy type
_CONTENTS = {"FP32": ("fp32_contents", np.float32), "FP64": ("fp64_contents", np.float64)}
# what grpc.health.v1.Health answers for: the whole server ("") and the inference service by name
HEALTH_SERVICES = ("", "inference.GRPCInferenceService")
_now = time.perf_counter_ns


def code_of(error: ProtocolError) -> grpc.StatusCode:
    """The gRPC status code of a data plane error."""
    if isinstance(error, NotAllowed):
        return grpc.StatusCode.FAILED_PRECONDITION
    return CODES.get(error.status, grpc.StatusCode.INTERNAL)


def decode_message(request: service_pb2.ModelInferRequest) -> InferRequest:
    """A ModelInferRequest as the data plane's request: each input with its raw_input_contents entry (raw
    little-endian bytes) or its typed contents; ProtocolError 400 when the framing itself is wrong."""
    raw = request.raw_input_contents
    if raw and (len(raw) != len(request.inputs) or any(t.HasField("contents") for t in request.inputs)):
        raise ProtocolError(400, "send each input either in raw_input_contents (one entry per input, in order) or "
                                 "in its contents")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        if raw:
            data = raw[i]
        elif tensor.datatype in _CONTENTS:
            field, dtype = _CONTENTS[tensor.datatype]
            data = np.asarray(getattr(tensor.contents, field), dtype=dtype)
        elif tensor.datatype == "BYTES" and tensor.HasField("contents"):  # a categorical column's levels
            data = list(tensor.contents.bytes_contents)
        else:
            data = None
        inputs.append(InputTensor(tensor.name, tensor.datatype, list(tensor.shape), data))
    return InferRequest(request.model_name, request.model_version or None, inputs,
                        [RequestedOutput(out.name) for out in request.outputs], request.id or None,
                        {key: _parameter(value) for key, value in request.parameters.items()} or None)


def _parameter(value: service_pb2.InferParameter) -> object:
    """A request parameter's value (bool, int, float or str), whichever of InferParameter's fields is set."""
    field = value.WhichOneof("parameter_choice")
    return getattr(value, field) if field else None


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The gRPC endpoints, answered by the data plane."""

    def __init__(self, plane: DataPlane):
        self.plane = plane
        self._metadata = service_pb2.ServerMetadataResponse(**plane.metadata)

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.plane.gate.needs_key:
            return
        value = next((m.value for m in context.invocation_metadata() if m.key == "authorization"), None)
        if not self.plane.authorized(value):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "this server needs an API key: send the metadata 'authorization: Bearer <key>'")

    @staticmethod
    async def _abort(error: ProtocolError, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code_of(error), str(error))

    # --- health and metadata -------------------------------------------------------------------------
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request, context):
        await self._authorize(context)
        return service_pb2.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version or None))

    async def ServerMetadata(self, request, context):
        await self._authorize(context)
        return self._metadata

    async def ModelMetadata(self, request, context):
        await self._authorize(context)
        try:
            meta = self.plane.model_metadata(request.name, request.version or None)
        except ProtocolError as e:
            await self._abort(e, context)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    async def ModelConfig(self, request, context):
        await self._authorize(context)
        try:
            return service_pb2.ModelConfigResponse(config=self.plane.model_config(request.name, request.version or None))
        except ProtocolError as e:
            await self._abort(e, context)

    # --- inference -------------------------------------------------------------------------------------
    async def _infer(self, request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
        """Answer one request through the data plane; ProtocolError when it fails (counted)."""
        started = _now()
        plane = self.plane
        served = plane.model(request.model_name, request.model_version or None)
        try:
            decoded = decode_message(request)
            out = await plane.infer(served, decoded)
            outputs = plane.outputs(served, decoded, out) if decoded.outputs and wants_intervals(decoded) else None
        except ProtocolError as e:
            plane.finished(served, e.status, started)
            raise
        info = served.info
        if outputs is None:
            response = service_pb2.ModelInferResponse(
                model_name=info.name, model_version=info.version, id=request.id,
                outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=info.output_name,
                                                                          datatype=info.datatype, shape=out.shape)],
                raw_output_contents=[np.ascontiguousarray(out, dtype=info.dtype).tobytes()])
        else:
            tensor = service_pb2.ModelInferResponse.InferOutputTensor
            response = service_pb2.ModelInferResponse(
                model_name=info.name, model_version=info.version, id=request.id,
                outputs=[tensor(name=o.name, datatype=o.datatype, shape=o.values.shape) for o in outputs],
                raw_output_contents=[np.ascontiguousarray(o.values, dtype=_WIRE[o.datatype]).tobytes()
                                     for o in outputs])
        plane.finished(served, 200, started)
        return response

    async def ModelInfer(self, request, context):
        await self._authorize(context)
        try:
            return await self._infer(request)
        except ProtocolError as e:
            if e.status == 503:
                context.set_trailing_metadata((("retry-after", str(RETRY_AFTER_S)),))
            await self._abort(e, context)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator, context) -> AsyncIterator:
        """Each request of the stream is answered as soon as it is done (in completion order, with its id),
        so the requests of one stream are batched together like concurrent calls."""
        await self._authorize(context)
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def one(request) -> None:
            try:
                response = service_pb2.ModelStreamInferResponse(infer_response=await self._infer(request))
            except ProtocolError as e:
                response = service_pb2.ModelStreamInferResponse(
                    error_message=str(e), infer_response=service_pb2.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id))
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
        try:
            stats = await self.plane.statistics(request.name, request.version or None)
        except ProtocolError as e:
            await self._abort(e, context)
        return json_format.ParseDict({"model_stats": stats}, service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request, context):
        await self._authorize(context)
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(models=[
            index(name=e["name"], version=e.get("version", ""), state=e["state"], reason=e.get("reason", ""))
            for e in self.plane.repository_index(ready_only=request.ready)])

    async def RepositoryModelLoad(self, request, context):
        await self._authorize(context)
        try:
            await self.plane.load(request.model_name, set(request.parameters))
        except ProtocolError as e:
            await self._abort(e, context)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self._authorize(context)
        try:
            await self.plane.unload(request.model_name, set(request.parameters))
        except ProtocolError as e:
            await self._abort(e, context)
        return service_pb2.RepositoryModelUnloadResponse()


async def start_grpc(plane: DataPlane, host: str, port: int, max_message_bytes: int, reuse_port: bool,
                     tls: tuple[bytes, bytes] | None = None) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """Start the gRPC server on ``host:port`` (TLS when ``tls`` is (certificate chain, key) PEM bytes), with
    ``grpc.health.v1.Health`` answering SERVING for the server ("") and the inference service; the health
    servicer is returned too (its ``enter_graceful_shutdown`` turns every status to NOT_SERVING)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", -1),
                                      ("grpc.so_reuseport", 1 if reuse_port else 0)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    checks = health.aio.HealthServicer()
    for service in HEALTH_SERVICES:
        await checks.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    await server.start()
    return server, checks
