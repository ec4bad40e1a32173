"""The REST codec of the Open Inference Protocol (KServe V2): a request body, in JSON or in Triton's binary
tensor data extension (JSON header of ``Inference-Header-Content-Length`` bytes, then raw little-endian
tensors, sized by each tensor's ``binary_data_size`` parameter), decoded into the data plane's
``InferRequest``, and the answer encoded back. Only the wire format is checked here; what the request asks
of the model is checked by the data plane (``inference.input_rows``)."""
from __future__ import annotations

import asyncio

import numpy as np
import orjson

from torchport.runtime.serve.inference import InferRequest, InputTensor, ModelInfo, ProtocolError, RequestedOutput


# Little-endian wire types of the datatypes an answer holds (BOOL: one byte per value, as Triton sends it).
WIRE_TYPES = {"FP32": "<f4", "FP64": "<f8", "BOOL": "?"}


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def _parameters(obj: dict, where: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _bad(f"{where}: 'parameters' must be a JSON object, got {type(params).__name__}")
    return params


def _flag(params: dict, key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{where}: parameter '{key}' must be true or false, got {value!r}")
    return value


def _plain_request(request: object, model: str, version: str | None) -> InferRequest | None:
    """The commonest request (one JSON tensor of name, datatype, shape and data, perhaps an id, nothing else)
    in few steps; None sends it through the full decoding."""
    if type(request) is not dict or len(request) > 2 or (len(request) == 2 and type(request.get("id")) is not str):
        return None
    inputs = request.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict or len(inputs[0]) != 4:
        return None
    tensor = inputs[0]
    try:
        decoded = InputTensor(tensor["name"], tensor["datatype"], tensor["shape"], tensor["data"])
    except KeyError:
        return None
    return InferRequest(model, version, [decoded], id=request.get("id"))


def _input(tensor: object, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    """One entry of 'inputs', with its binary data when it has a binary_data_size; and the offset after it."""
    if not isinstance(tensor, dict):
        raise _bad("each entry of 'inputs' must be a JSON object with name, shape, datatype and data")
    where = f"input {tensor.get('name')!r}"
    size = _parameters(tensor, where).get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise _bad(f"{where}: no 'data' and no 'binary_data_size' parameter; send the tensor's values in one "
                       "of them")
        return InputTensor(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), tensor["data"]), offset
    if type(size) is not int or size < 0:
        raise _bad(f"{where}: binary_data_size must be a byte count, got {size!r}")
    if len(binary) - offset < size:
        raise _bad(f"{where}: binary_data_size is {size} but the body has only {len(binary) - offset} bytes after "
                   "the JSON header (check Inference-Header-Content-Length)")
    data = binary[offset:offset + size]
    return InputTensor(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), data), offset + size


def decode_request(body: bytes, header_length: int | None, model: str,
                   version: str | None) -> tuple[InferRequest, bool]:
    """A V2 inference request body as the data plane's request for ``model`` (and ``version``), and whether
    the answer is wanted in binary; ``header_length`` is the Inference-Header-Content-Length, if sent."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 < header_length <= len(body):
            raise _bad(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as e:
        raise _bad(f"the request's JSON is malformed ({e}); send a V2 inference request object") from None
    if header_length is None:
        plain = _plain_request(request, model, version)
        if plain is not None:
            return plain, False
    if not isinstance(request, dict):
        raise _bad("the request must be a JSON object with an 'inputs' list")
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise _bad("'inputs' must be a list of input tensors")
    decoded, offset = [], 0
    for tensor in inputs:
        item, offset = _input(tensor, binary, offset)
        decoded.append(item)
    if offset != len(binary):
        raise _bad(f"the body has {len(binary) - offset} bytes after the JSON header that no input's "
                   "binary_data_size accounts for")
    parameters = _parameters(request, "the request")
    binary_output = bool(_flag(parameters, "binary_data_output", "the request"))
    outputs = request.get("outputs")
    requested = []
    if outputs is not None:
        if not isinstance(outputs, list):
            raise _bad("'outputs' must be a list of requested outputs")
        for out in outputs:
            if not isinstance(out, dict):
                raise _bad("each entry of 'outputs' must be a JSON object with a name")
            name = out.get("name")
            params = _parameters(out, f"output {name!r}")
            flag = _flag(params, "binary_data", f"output {name!r}")
            if flag is not None:
                binary_output = flag
            requested.append(RequestedOutput(name, params))
    request_id = request.get("id")
    return InferRequest(model, version, decoded, requested, request_id if isinstance(request_id, str) else None,
                        parameters), binary_output


class ResponseEncoder:
    """Writes V2 inference responses for one model; the JSON around the numbers is prepared once. Answers of
    more than ``STEP_VALUES`` numbers in JSON are written in steps of that many (``encode_in_steps``), the
    event loop running others' requests in between."""
    STEP_VALUES = 65536

    def __init__(self, info: ModelInfo):
        self._name, self._version = info.name, info.version
        self._head = orjson.dumps({"model_name": info.name, "model_version": info.version})[:-1]
        self._tensor = orjson.dumps({"name": info.output_name, "datatype": info.datatype})[:-1] + b',"shape":['
        self._raw = info.dtype  # binary answers: little-endian values of the model's datatype

    def encode(self, request_id: str | None, out: np.ndarray, binary: bool) -> tuple[bytes, int | None]:
        """The response body and, for binary output, the length of its JSON header."""
        parts = [self._head]
        if request_id is not None:
            parts += [b',"id":', orjson.dumps(request_id)]
        parts += [b',"outputs":[', self._tensor, b"%d,%d]" % out.shape]
        if binary:
            raw = np.ascontiguousarray(out, dtype=self._raw).tobytes()
            parts.append(b',"parameters":{"binary_data_size":%d}}]}' % len(raw))
            header = b"".join(parts)
            return header + raw, len(header)
        # orjson writes float32 and float64 in their shortest exact forms
        parts += [b',"data":', orjson.dumps(out.ravel(), option=orjson.OPT_SERIALIZE_NUMPY), b"}]}"]
        return b"".join(parts), None

    def encode_outputs(self, request_id: str | None, outputs: list, binary: bool) -> tuple[bytes, int | None]:
        """A response of several named outputs (``interval_outputs.OutputTensor``: FP32, FP64, BOOL), in JSON
        or binary as ``encode``; the body and, for binary output, the length of its JSON header."""
        head = {"model_name": self._name, "model_version": self._version}
        if request_id is not None:
            head["id"] = request_id
        tensors, raws = [], []
        for out in outputs:
            tensor = {"name": out.name, "datatype": out.datatype, "shape": list(out.values.shape)}
            if binary:
                raw = np.ascontiguousarray(out.values, dtype=WIRE_TYPES[out.datatype]).tobytes()
                tensor["parameters"] = {"binary_data_size": len(raw)}
                raws.append(raw)
            else:
                tensor["data"] = out.values.ravel()
            tensors.append(tensor)
        body = orjson.dumps({**head, "outputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)
        return (body + b"".join(raws), len(body)) if binary else (body, None)

    async def encode_in_steps(self, request_id: str | None, out: np.ndarray) -> bytes:
        """``encode(request_id, out, binary=False)``'s bytes, written STEP_VALUES numbers at a time."""
        flat, step = out.ravel(), self.STEP_VALUES
        parts = [self._head]
        if request_id is not None:
            parts += [b',"id":', orjson.dumps(request_id)]
        parts += [b',"outputs":[', self._tensor, b"%d,%d]" % out.shape, b',"data":[']
        for start in range(0, flat.size, step):
            if start:
                parts.append(b",")
                await asyncio.sleep(0)
            parts.append(orjson.dumps(flat[start:start + step], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1])
        parts.append(b"]}]}")
        return b"".join(parts)


def error_body(message: str) -> bytes:
    """The protocol's error response: ``{"error": message}``."""
    return orjson.dumps({"error": message})
