"""The data plane: what the server does for a request, whichever transport brought it (as KServe's
``DataPlane``). REST (``app``) and gRPC (``grpc_service``) are thin codecs over it: each decodes its wire
format into an ``InferRequest`` and encodes the answer back, and between the two every inference request
takes the same path: ``model`` (look up) -> ``infer`` (validate per request against the model's input
description, admit, batch, run) -> the codec's encoding -> ``finished`` (count the outcome, once). Health,
metadata, readiness, model configuration, statistics, /metrics and the repository's index, load and unload
are answered here too, so both transports say the same things with the same counts."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version as package_version

import numpy as np

from torchport.runtime.encoding import design
from torchport.runtime.serve import metrics
from torchport.runtime.serve.control import Control
from torchport.runtime.serve.encoded_inputs import encoded_rows, metadata_inputs, unseen_policy
from torchport.runtime.serve.inference import OUT_OF_DOMAIN, InferRequest, NotAllowed, ProtocolError, check_outputs, \
    input_rows
from torchport.runtime.serve.interval_outputs import OutputTensor, answer
from torchport.runtime.serve.models import ServedModel
from torchport.runtime.serve.registry import Registry, RepositoryError
from torchport.runtime.serve.security import Gate
from torchport.runtime.serve.stats import ServerStats, merge, merge_server, triton_statistics

SERVER_NAME = "torchport"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
# torchport models have no dependents, so unloading them is what Triton's unload_dependents asks for too
IGNORED_REPOSITORY_PARAMETERS = {"unload_dependents"}
# The outcome an answer's status counts as, for requests that reached a model version.
OUTCOME_OF = {200: "success", 400: "bad_request", 408: "body_timeout", 413: "too_large", 499: "disconnected",
            503: "overloaded", 504: "timeout"}
_now = time.perf_counter_ns


def server_version() -> str:
    try:
        return package_version("torchport")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS}


class DataPlane:
    """Everything both transports answer, over one registry, gate and set of counters. ``draining`` is set
    when the server has been told to stop: it then reports itself not ready."""

    def __init__(self, registry: Registry, control: Control, gate: Gate, server_stats: ServerStats,
                 control_mode: str):
        self.registry, self.control, self.gate, self.server_stats = registry, control, gate, server_stats
        self.control_mode = control_mode
        self.draining = False
        self.metadata = server_metadata()

    # --- health and who may call ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return not self.draining

    def authorized(self, credential: bytes | str | None) -> bool:
        """Whether an Authorization value carries the API key (always, without one); a refusal is counted."""
        if self.gate.authorized(credential):
            return True
        self.server_stats.rejected["unauthenticated"] += 1
        return False

    # --- models ------------------------------------------------------------------------------------------
    def model(self, name: str, version: str | None) -> ServedModel:
        """The served version (the highest when ``version`` is None or empty), or ProtocolError 404 saying
        what is served instead (counted as a rejected request)."""
        served = self.registry.lookup(name, version)
        if served is not None:
            return served
        self.server_stats.rejected["not_found"] += 1
        versions = self.registry.versions(name)
        if versions:
            raise ProtocolError(404, f"model {name!r} has no version {version!r} being served; it serves version(s) "
                                     f"{', '.join(versions)}")
        state = self.registry.reason(name)
        raise ProtocolError(404, f"model {name!r} is not served here" + (f" ({state})" if state else "")
                            + f"; this server serves {', '.join(sorted(self.registry.models)) or 'no model'}")

    def model_ready(self, name: str, version: str | None) -> bool:
        return self.registry.lookup(name, version) is not None

    def model_metadata(self, name: str, version: str | None) -> dict:
        served = self.model(name, version)
        meta = served.info.metadata(self.registry.versions(name))
        encoding = served.predictor.encoding
        if encoding is not None:  # one input per column (or the split layout its parameters describe)
            meta["inputs"], layouts = metadata_inputs(encoding, served.info)
            meta["parameters"] = {**meta["parameters"], **layouts}
        return meta

    # --- inference ---------------------------------------------------------------------------------------
    async def infer(self, served: ServedModel, request: InferRequest, task: asyncio.Task | None = None) -> np.ndarray:
        """The model's answer to ``request`` (looked up as ``served``): validated on its own, admitted
        against the limit of requests in flight and their time limit, batched with whatever else is queued
        for the version, run. ``task``: the one answering the request, if the caller has it at hand (else
        the current one). ProtocolError: 400 for what the request got wrong, 503 at the limit, 504 past the
        time limit, 500 when the model itself failed."""
        info = served.info
        encoding = served.predictor.encoding
        rows = input_rows(request, info) if encoding is None else \
            encoded_rows(request.inputs, encoding, info, unseen_policy(request.parameters))[0]
        if request.outputs:
            check_outputs(request, info)
        if not len(rows):  # an empty batch is answered as the Predictor answers it
            return np.empty((0, len(info.target_names)), dtype=info.dtype)
        gate = self.gate
        task = gate.admit(task)
        if task is None:
            raise ProtocolError(503, gate.overloaded())
        try:
            return await served.batcher.submit(rows)
        except BaseException as e:
            status, message = gate.failure(task, e)
            raise ProtocolError(status, message) from None
        finally:
            gate.release(task)

    def outputs(self, served: ServedModel, request: InferRequest, targets: np.ndarray) -> list[OutputTensor]:
        """The outputs a request names when it names an interval output (``wants_intervals``), in its order,
        from the model's answer ``targets`` (serve/interval_outputs.py); ProtocolError 400 for what the
        intervals cannot give."""
        encoding = served.predictor.encoding  # the rows read again, in float64: intervals keep the values as sent
        if encoding is None:
            return answer(request, served.info, input_rows(request, served.info, np.float64), targets)
        codes, unseen = encoded_rows(request.inputs, encoding, served.info, unseen_policy(request.parameters),
                                     np.float64)
        made = answer(request, replace(served.info, feature_names=tuple(encoding.design_names())),
                      design(encoding, codes), targets)  # intervals see the model's design
        return [replace(t, values=t.values | unseen) if t.name == OUT_OF_DOMAIN else t for t in made]

    def finished(self, served: ServedModel, status: int, started_ns: int) -> None:
        """Count one inference request that reached ``served``, answered with ``status`` (HTTP's terms)."""
        served.stats.finished(OUTCOME_OF.get(status, "error"), _now() - started_ns)

    def rejected(self, status: int) -> None:
        """Count a request refused before any model was chosen (a path or method that is not an endpoint)."""
        self.server_stats.rejected["not_found" if status == 404 else "bad_request"] += 1

    # --- configuration, statistics, repository -------------------------------------------------------
    def model_config(self, name: str, version: str | None):
        """Triton's ModelConfig message of the served version."""
        return self.model(name, version).config()

    async def statistics(self, name: str | None = None, version: str | None = None) -> list[dict]:
        """Triton's ``model_stats`` entries, every worker added up; without a version, every version of the
        model (as Triton does); ProtocolError 404 for a model or version not served."""
        if name:
            self.model(name, version)
        models, _ = await self.control.statistics()
        return [triton_statistics(s) for s in merge(models)
                if (not name or s["name"] == name) and (not version or s["version"] == version)]

    async def metrics(self) -> bytes:
        """/metrics: Prometheus text from every worker's counters."""
        models, servers = await self.control.statistics()
        return metrics.render(merge(models), merge_server(servers), len(servers))

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        return self.registry.index(ready_only=ready_only)

    async def load(self, name: str, parameters: set[str]) -> None:
        await self._repository("load", name, parameters)

    async def unload(self, name: str, parameters: set[str]) -> None:
        await self._repository("unload", name, parameters)

    async def _repository(self, op: str, name: str, parameters: set[str]) -> None:
        if parameters - IGNORED_REPOSITORY_PARAMETERS:
            raise ProtocolError(400, f"{op} parameters (config and file overrides) are not supported; the model is "
                                     "read from the repository as it is on disk")
        if self.control_mode != "explicit":
            raise NotAllowed(f"explicit model {op} is not allowed: this server's model control mode is "
                             f"{self.control_mode!r} (explicit mode allows it)")
        try:
            await (self.control.load if op == "load" else self.control.unload)(name)
        except RepositoryError as e:
            raise ProtocolError(400, str(e)) from None
