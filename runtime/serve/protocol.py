"""The Open Inference Protocol (KServe V2) inference request and response, in JSON and in Triton's binary
tensor data extension (JSON header of ``Inference-Header-Content-Length`` bytes, then raw little-endian
tensors, sized by each tensor's ``binary_data_size`` parameter)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

# V2 datatypes accepted for the features tensor, with their little-endian numpy types.
INPUT_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


class ProtocolError(Exception):
    """A request the server answers with an error status and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelInfo:
    """What the protocol needs to know about one served model version: names, tensors and sizes."""
    name: str
    input_name: str
    output_name: str
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    version: str = "1"
    platform: str = "onnxruntime_onnx"

    def metadata(self, versions: list[str]) -> dict:
        """The V2 model metadata response; ``versions``: the model's versions being served."""
        return {"name": self.name, "versions": versions, "platform": self.platform,
                "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, len(self.feature_names)]}],
                "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, len(self.target_names)]}],
                "parameters": {"features": list(self.feature_names), "targets": list(self.target_names)}}


@dataclass(slots=True)
class InferRequest:
    """A parsed inference request: the rows to score (a 2-D float32 array, or a list of rows of numbers)
    and how to answer."""
    rows: np.ndarray | list
    request_id: str | None
    binary_output: bool


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


def _first_non_number(data: object) -> object:
    """The first value in (nested lists of) ``data`` that is not an int or a float (booleans included), or None."""
    stack = [data]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(reversed(item))
        elif type(item) is not float and type(item) is not int:
            return item
    return None


def _input_rows(tensor: object, info: ModelInfo, binary: memoryview) -> tuple[np.ndarray, int]:
    """The (rows, n_features) float32 matrix of one request input, and the binary bytes it used."""
    if not isinstance(tensor, dict):
        raise _bad("each entry of 'inputs' must be a JSON object with name, shape, datatype and data")
    name = tensor.get("name")
    where = f"input {name!r}"
    if name != info.input_name:
        raise _bad(f"unknown input {name!r}; the model {info.name!r} takes one input named {info.input_name!r}")
    n_features = len(info.feature_names)
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2 or not all(type(d) is int for d in shape)
            or shape[0] < 1 or shape[1] != n_features):
        raise _bad(f"{where}: shape {shape!r} does not fit the model; expected [rows, {n_features}] with rows >= 1 "
                   f"(features {list(info.feature_names)})")
    datatype = tensor.get("datatype")
    dtype = INPUT_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise _bad(f"{where}: datatype {datatype!r} is not supported; send FP32 or FP64")
    count = shape[0] * n_features
    size = _parameters(tensor, where).get("binary_data_size")
    if size is not None:
        expected = count * dtype.itemsize
        if type(size) is not int or size != expected:
            raise _bad(f"{where}: binary_data_size {size!r} does not match shape {shape} of {datatype} "
                       f"({expected} bytes)")
        if len(binary) < size:
            raise _bad(f"{where}: binary_data_size is {size} but the body has only {len(binary)} bytes after "
                       "the JSON header (check Inference-Header-Content-Length)")
        rows = np.frombuffer(binary[:size], dtype=dtype).reshape(shape[0], n_features)
        return rows.astype(np.float32), size
    if "data" not in tensor:
        raise _bad(f"{where}: no 'data' and no 'binary_data_size' parameter; send the tensor's values in one of them")
    bad = _first_non_number(tensor["data"])
    if bad is not None:
        raise _bad(f"{where}: 'data' must hold numbers only, got {bad!r}")
    try:
        values = np.asarray(tensor["data"], dtype=np.float64)
    except ValueError as e:
        raise _bad(f"{where}: 'data' is not a regular array of numbers ({e})") from None
    if values.size != count:
        raise _bad(f"{where}: 'data' has {values.size} values but shape {shape} needs {count}")
    return values.reshape(shape[0], n_features).astype(np.float32), 0


def _plain_rows(request: object, info: ModelInfo) -> list | None:
    """The rows of the commonest request (one JSON tensor of flat numbers, perhaps an id, nothing else) as
    lists, in few steps (the batcher makes one array of many requests' rows); None sends the request
    through the full checks, which also say what is wrong."""
    if type(request) is not dict or len(request) > 2 or (len(request) == 2 and type(request.get("id")) is not str):
        return None
    inputs = request.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict or len(inputs[0]) != 4:
        return None
    try:
        tensor = inputs[0]
        name, datatype, shape, data = tensor["name"], tensor["datatype"], tensor["shape"], tensor["data"]
    except KeyError:
        return None
    n_features = len(info.feature_names)
    if name != info.input_name or type(datatype) is not str or datatype not in INPUT_DTYPES \
            or type(shape) is not list or len(shape) != 2 \
            or type(shape[0]) is not int or type(shape[1]) is not int or shape[0] < 1 or shape[1] != n_features \
            or type(data) is not list or len(data) != shape[0] * n_features:
        return None
    for value in data:
        if type(value) is not float and type(value) is not int:
            return None
    return [data] if shape[0] == 1 else [data[i:i + n_features] for i in range(0, len(data), n_features)]


def parse_infer_request(body: bytes, header_length: int | None, info: ModelInfo) -> InferRequest:
    """Parse a V2 inference request body; ``header_length`` is the Inference-Header-Content-Length, if sent."""
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
        rows = _plain_rows(request, info)
        if rows is not None:
            return InferRequest(rows, request.get("id"), False)
    if not isinstance(request, dict):
        raise _bad("the request must be a JSON object with an 'inputs' list")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise _bad(f"'inputs' must be a list with exactly one tensor (the model's input {info.input_name!r})")
    rows, used = _input_rows(inputs[0], info, binary)
    if used != len(binary):
        raise _bad(f"the body has {len(binary) - used} bytes after the JSON header that no input's "
                   "binary_data_size accounts for")
    binary_output = bool(_flag(_parameters(request, "the request"), "binary_data_output", "the request"))
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise _bad("'outputs' must be a list of requested outputs")
        for out in outputs:
            name = out.get("name") if isinstance(out, dict) else None
            if name != info.output_name:
                raise _bad(f"unknown output {name!r}; the model {info.name!r} has one output named "
                           f"{info.output_name!r}")
            flag = _flag(_parameters(out, f"output {name!r}"), "binary_data", f"output {name!r}")
            if flag is not None:
                binary_output = flag
    request_id = request.get("id")
    return InferRequest(rows, request_id if isinstance(request_id, str) else None, binary_output)


class ResponseEncoder:
    """Writes V2 inference responses for one model; the JSON around the numbers is prepared once."""

    def __init__(self, info: ModelInfo):
        self._head = orjson.dumps({"model_name": info.name, "model_version": info.version})[:-1]
        self._tensor = orjson.dumps({"name": info.output_name, "datatype": "FP32"})[:-1] + b',"shape":['

    def encode(self, request_id: str | None, out: np.ndarray, binary: bool) -> tuple[bytes, int | None]:
        """The response body and, for binary output, the length of its JSON header."""
        parts = [self._head]
        if request_id is not None:
            parts += [b',"id":', orjson.dumps(request_id)]
        parts += [b',"outputs":[', self._tensor, b"%d,%d]" % out.shape]
        if binary:
            raw = np.ascontiguousarray(out, dtype="<f4").tobytes()
            parts.append(b',"parameters":{"binary_data_size":%d}}]}' % len(raw))
            header = b"".join(parts)
            return header + raw, len(header)
        # orjson writes float32 in its shortest exact form
        parts += [b',"data":', orjson.dumps(out.ravel(), option=orjson.OPT_SERIALIZE_NUMPY), b"}]}"]
        return b"".join(parts), None


def error_body(message: str) -> bytes:
    """The protocol's error response: ``{"error": message}``."""
    return orjson.dumps({"error": message})
