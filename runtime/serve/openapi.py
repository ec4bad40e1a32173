"""The OpenAPI 3.1 document of torchport's REST answers, served at /openapi.json: the Open Inference
Protocol's endpoints as torchport answers them, with the statuses the protocol's own spec leaves out (401,
404, 408, 413, 431, 500, 503, 504), Triton's extensions (binary tensor data, model repository, statistics, model
configuration) and /metrics. Every operation also answers HEAD when it is a GET, and 405 with ``Allow`` to
any other method."""
from __future__ import annotations

ERROR = {"$ref": "#/components/schemas/error"}
# A model is named by its directory in the repository.
_NAME = {"name": "MODEL_NAME", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
_VERSION = {"name": "MODEL_VERSION", "in": "path", "required": True, "schema": {"type": "string"}}
_PARAMETERS = {"type": "object", "additionalProperties": True}
_SCHEMAS = {
    "error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    "live": {"type": "object", "properties": {"live": {"type": "boolean"}}, "required": ["live"]},
    "ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}, "required": ["ready"]},
    "model_ready": {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
                    "required": ["name", "ready"]},
    "server_metadata": {"type": "object", "required": ["name", "version", "extensions"],
                        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                       "extensions": {"type": "array", "items": {"type": "string"}}}},
    "tensor_metadata": {"type": "object", "required": ["name", "datatype", "shape"],
                        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                       "shape": {"type": "array", "items": {"type": "integer"}}}},
    "model_metadata": {
        "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                       "platform": {"type": "string"},
                       "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/tensor_metadata"}},
                       "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/tensor_metadata"}},
                       "parameters": {"type": "object", "description": "the feature and target names",
                                      "properties": {"features": {"type": "array", "items": {"type": "string"}},
                                                     "targets": {"type": "array", "items": {"type": "string"}}}}}},
    "tensor_data": {"type": "array", "items": {"anyOf": [{"$ref": "#/components/schemas/tensor_data"},
                                                         {"type": "number"}]}},
    "request_input": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "description": "the model's one input, shape [rows, features], FP32 or FP64; values in 'data', or in "
                       "the body after the JSON header, binary_data_size bytes (Triton's binary extension)",
        "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                       "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                       "parameters": {"type": "object",
                                      "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                       "data": {"$ref": "#/components/schemas/tensor_data"}}},
    "request_output": {"type": "object", "required": ["name"],
                       "properties": {"name": {"type": "string"},
                                      "parameters": {"type": "object",
                                                     "properties": {"binary_data": {"type": "boolean"}}}}},
    "inference_request": {
        "type": "object", "required": ["inputs"],
        "properties": {"id": {"type": "string"},
                       "parameters": {"type": "object",
                                      "properties": {"binary_data_output": {"type": "boolean"},
                                                     "interval_level": {"type": "number", "description":
                                                                        "the level of the intervals that the "
                                                                        "outputs lower and upper give (0.95)"},
                                                     "interval_kind": {"type": "string",
                                                                       "enum": ["prediction", "mean"]}}},
                       "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/request_input"}},
                       "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/request_output"}}}},
    "response_output": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                       "datatype": {"type": "string"},
                       "parameters": {"type": "object",
                                      "properties": {"binary_data_size": {"type": "integer"}}},
                       "data": {"type": "array", "description": "row-major; null where the model's answer "
                                                                "is not a finite number; booleans for BOOL "
                                                                "(out_of_domain)",
                                "items": {"type": ["number", "null", "boolean"]}}}},
    "inference_response": {
        "type": "object", "required": ["model_name", "model_version", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"},
                       "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/response_output"}}}},
    "model_config": {"type": "object", "description": "Triton's ModelConfig message in JSON",
                     "required": ["name", "platform", "backend", "max_batch_size", "input", "output"]},
    "model_stats": {"type": "object", "required": ["model_stats"],
                    "properties": {"model_stats": {"type": "array", "items": {
                        "type": "object", "required": ["name", "version", "inference_stats"],
                        "description": "Triton's statistics extension, every worker added up"}}}},
    "repository_index": {"type": "array", "items": {
        "type": "object", "required": ["name", "state"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]}, "reason": {"type": "string"}}}},
}
_RESPONSES = {
    "bad_request": ("the request does not fit the model or the protocol; the message names the tensor, shape, "
                    "field or value and what was expected", {}),
    "unauthenticated": ("no or a wrong API key (--api-key-file): send 'Authorization: Bearer <key>'",
                        {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}),
    "not_found": ("no such model or version is served now; the message says what is served", {}),
    "too_large": ("the body is over --max-body-bytes", {}),
    "body_timeout": ("the body did not all arrive within --body-timeout-s; the connection is closed",
                     {"Connection": {"required": True, "schema": {"type": "string", "enum": ["close"]}}}),
    "headers_too_large": ("the request line and headers passed --max-header-bytes; the connection is closed "
                          "(or cut off before this answer is read)",
                          {"Connection": {"required": True, "schema": {"type": "string", "enum": ["close"]}}}),
    "overloaded": ("--max-concurrent-requests inference requests are in flight; retry after Retry-After seconds",
                   {"Retry-After": {"required": True, "schema": {"type": "integer"}}}),
    "timeout": ("the request was not answered within --request-timeout-s", {}),
    "failed": ("the model itself failed on the batch", {}),
}
_STATUS = {"400": "bad_request", "401": "unauthenticated", "404": "not_found", "408": "body_timeout",
           "413": "too_large", "431": "headers_too_large", "500": "failed", "503": "overloaded", "504": "timeout"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: dict) -> dict:
    return {"200": {"description": description, "content": _json(schema)}}


def _get(summary: str, ok: dict, *statuses: str, parameters: tuple = ()) -> dict:
    return {"get": {"summary": summary, "parameters": list(parameters),
                    "responses": {**ok, **_refs((*statuses, "431"))}}}


def _refs(statuses: tuple[str, ...]) -> dict:
    return {s: {"$ref": f"#/components/responses/{_STATUS[s]}"} for s in statuses}


def _schema(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _infer(parameters: tuple) -> dict:
    length = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
              "description": "with a binary body: the length of its JSON header",
              "schema": {"type": "integer", "minimum": 1}}
    return {"post": {
        "summary": "Inference: the rows of one FP32 or FP64 input, answered with the model's output (FP32, or FP64 "
                   "for a float64 bundle; and, named in 'outputs', each row's interval bounds lower and upper, FP64, "
                   "and out_of_domain, BOOL)",
        "parameters": [*parameters, length],
        "requestBody": {"required": True, "content": {
            **_json(_schema("inference_request")),
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "200": {"description": "the answer, in JSON, or with binary output a JSON header of "
                                   "Inference-Header-Content-Length bytes and then the raw values (FP32, or FP64 for a "
                                   "float64 bundle)",
                    "headers": {"Inference-Header-Content-Length": {"required": False,
                                                                     "schema": {"type": "integer"}}},
                    "content": {**_json(_schema("inference_response")),
                                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            **_refs(("400", "401", "404", "408", "413", "431", "500", "503", "504"))}}}


def _model_paths(prefix: str, parameters: tuple) -> dict:
    metadata = _schema("model_metadata")
    if prefix == "/v2/models/{MODEL_NAME}":  # /v2/models/stats is every model's statistics, not a model
        metadata = {"anyOf": [metadata, _schema("model_stats")]}
    return {
        prefix: _get("Model metadata", _ok("the model's tensors and versions (MODEL_NAME 'stats': every "
                                           "model's statistics)" if "anyOf" in metadata else
                                           "the version's tensors and the model's versions", metadata),
                     "401", "404", parameters=parameters),
        f"{prefix}/ready": _get("Model ready", _ok("the model (version) is served", _schema("model_ready")),
                                "401", "404", parameters=parameters),
        f"{prefix}/config": _get("Model configuration (Triton's extension)",
                                 _ok("the served version's configuration", _schema("model_config")),
                                 "401", "404", parameters=parameters),
        f"{prefix}/stats": _get("Model statistics (Triton's extension)",
                                _ok("the model's (version's) statistics", _schema("model_stats")),
                                "401", "404", parameters=parameters),
        f"{prefix}/infer": _infer(parameters),
    }


def _repository(op: str) -> dict:
    return {"post": {"summary": f"{op.capitalize()} a model (explicit model control mode)",
                     "parameters": [_NAME],
                     "requestBody": {"required": False, "content": _json({"type": "object", "properties": {
                         "parameters": _PARAMETERS}})},
                     "responses": {**_ok(f"{op}ed in every worker", {"type": "object"}),
                                   **_refs(("400", "401", "408", "431"))}}}


def openapi_document(version: str) -> dict:
    """The document, for torchport ``version``."""
    paths = {
        "/v2/health/live": _get("Server live (no API key needed)", _ok("the server answers", _schema("live"))),
        "/v2/health/ready": _get("Server ready (no API key needed)", {
            **_ok("ready", _schema("ready")),
            "503": {"description": "stopping (SIGTERM): finishing the requests in flight",
                    "content": _json(_schema("ready"))}}),
        "/v2": _get("Server metadata", _ok("name, version and extensions", _schema("server_metadata")), "401"),
        **_model_paths("/v2/models/{MODEL_NAME}", (_NAME,)),
        **_model_paths("/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}", (_NAME, _VERSION)),
        "/v2/models/stats": _get("Statistics of every served version", _ok("", _schema("model_stats")), "401"),
        "/v2/repository/index": {"post": {
            "summary": "Repository index: every model and version with its state",
            "requestBody": {"required": False, "content": _json({"type": "object", "properties": {
                "ready": {"type": "boolean"}}})},
            "responses": {**_ok("the index", _schema("repository_index")), **_refs(("400", "401", "408", "431"))}}},
        "/v2/repository/models/{MODEL_NAME}/load": _repository("load"),
        "/v2/repository/models/{MODEL_NAME}/unload": _repository("unload"),
        "/metrics": _get("Prometheus metrics", {"200": {"description": "Prometheus text exposition",
                                                        "content": {"text/plain": {"schema": {"type": "string"}}}}},
                         "401"),
        "/openapi.json": _get("This document", _ok("OpenAPI 3.1", {"type": "object"}), "401"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "torchport serve", "version": version,
                 "description": "The Open Inference Protocol (KServe V2) REST API as torchport serves it, with "
                                "Triton's binary tensor data, model repository, statistics and model "
                                "configuration extensions. Every GET also answers HEAD; any other method gets "
                                "405 with an Allow header. Errors are {\"error\": message}."},
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "responses": {name: {"description": text, "headers": headers, "content": _json(ERROR)}
                          for name, (text, headers) in _RESPONSES.items()},
        },
    }
