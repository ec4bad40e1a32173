"""The typed inference request that every transport decodes into (model, version, input tensors, requested
outputs, parameters), the error with a status that every transport answers in its own terms, and the checks
of one request against a served model's input description: names, shapes, datatypes, and every value finite
and within the range of the model's datatype (FP32, or FP64 for a float64 bundle; both are accepted). The checks run per request, before it joins a batch, so that a bad request fails
alone whatever it would have been batched with."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from torchport.runtime.intervals import IntervalRecord

# V2 datatypes accepted for the features tensor, with their little-endian numpy types.
INPUT_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
# The smallest magnitude that rounds to infinity in float32: (2 - 2**-24) * 2**127. A number at or beyond it
# (1e39 in JSON, an FP64 value) would reach the model as inf.
FLOAT32_OVERFLOW = 3.4028235677973366e38
# The model's datatype (V2 name) for each dtype a bundle computes in
DATATYPES = {"float32": "FP32", "float64": "FP64"}
# The outputs beside the model's own that a request may name, for a bundle that keeps what intervals need
# (serve/interval_outputs.py makes them).
LOWER, UPPER, OUT_OF_DOMAIN = "lower", "upper", "out_of_domain"
INTERVAL_OUTPUTS = (LOWER, UPPER, OUT_OF_DOMAIN)


class ProtocolError(Exception):
    """A request the server answers with an error: ``status`` is the HTTP status (REST sends it, gRPC maps
    it to its code) and the message says what was wrong and what to send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class NotAllowed(ProtocolError):
    """A request this server's settings do not allow (400 over REST, FAILED_PRECONDITION over gRPC)."""

    def __init__(self, message: str):
        super().__init__(400, message)


@dataclass(frozen=True)
class ModelInfo:
    """What the protocol needs to know about one served model version: names, tensors and sizes, and what
    its intervals need (None: the bundle keeps nothing for them)."""
    name: str
    input_name: str
    output_name: str
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    version: str = "1"
    platform: str = "onnxruntime_onnx"
    datatype: str = "FP32"  # what the model takes and answers: FP32, or FP64 (a float64 bundle)
    intervals: IntervalRecord | None = None

    @property
    def dtype(self) -> np.dtype:
        return INPUT_DTYPES[self.datatype]

    @property
    def limit(self) -> float:
        """The smallest magnitude the model's datatype cannot hold (infinity for FP64)."""
        return FLOAT32_OVERFLOW if self.datatype == "FP32" else float("inf")

    def metadata(self, versions: list[str]) -> dict:
        """The V2 model metadata response; ``versions``: the model's versions being served."""
        return {"name": self.name, "versions": versions, "platform": self.platform,
                "inputs": [{"name": self.input_name, "datatype": self.datatype,
                            "shape": [-1, len(self.feature_names)]}],
                "outputs": [{"name": self.output_name, "datatype": self.datatype,
                             "shape": [-1, len(self.target_names)]},
                            *self._interval_outputs()],
                "parameters": {"features": list(self.feature_names), "targets": list(self.target_names)}}

    def _interval_outputs(self) -> list[dict]:
        if self.intervals is None:
            return []
        width = len(self.target_names)
        return [{"name": LOWER, "datatype": "FP64", "shape": [-1, width]},
                {"name": UPPER, "datatype": "FP64", "shape": [-1, width]},
                {"name": OUT_OF_DOMAIN, "datatype": "BOOL", "shape": [-1]}]


@dataclass(slots=True)
class InputTensor:
    """One input tensor as the client sent it, not yet checked. ``data``: a flat list of JSON numbers, nested
    JSON lists, a numpy array (gRPC's typed contents), raw little-endian bytes (REST's binary extension,
    gRPC's raw_input_contents), or None when none was sent."""
    name: object
    datatype: object
    shape: object
    data: object = None


@dataclass(slots=True)
class RequestedOutput:
    """One output the client asked for, with its parameters (REST's ``binary_data`` flag, say)."""
    name: object
    parameters: dict = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """One inference request, whatever transport brought it (``parameters`` None: none were sent)."""
    model: str
    version: str | None
    inputs: list[InputTensor]
    outputs: Sequence[RequestedOutput] = ()
    id: str | None = None
    parameters: dict | None = None


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


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


def _refuse_unusable(values: np.ndarray, where: str, info: ModelInfo) -> None:
    """A 400 naming this request's first row and column whose value is NaN, infinite or beyond the range of
    the model's datatype (float32's for FP32)."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(values) < info.limit)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    value = float(values[row, col])
    why = "beyond float32's range (about ±3.4e38)" if np.isfinite(value) else "NaN and infinite inputs are refused"
    raise _bad(f"{where}: row {row} (0-based), column {col} ({info.feature_names[col]!r}) holds {value:g}: {why}")


def json_values(data: object, where: str) -> np.ndarray:
    """The numbers of a JSON tensor's 'data' (flat or nested lists) as a float64 array of the same shape; a
    ProtocolError 400 naming ``where`` for anything that is not a regular array of numbers."""
    bad = _first_non_number(data)
    if bad is not None:
        raise _bad(f"{where}: 'data' must hold numbers only, got {bad!r}")
    try:
        return np.asarray(data, dtype=np.float64)
    except OverflowError:
        raise _bad(f"{where}: 'data' holds an integer beyond float32's range (about ±3.4e38)") from None
    except ValueError as e:
        raise _bad(f"{where}: 'data' is not a regular array of numbers ({e})") from None


def _plain(data: list, count: int, limit: float = FLOAT32_OVERFLOW) -> bool:
    """Whether ``data`` is a flat list of ``count`` plain numbers of magnitude below ``limit`` (the commonest
    request, checked in one pass; anything else gets the full checks, which also say what is wrong)."""
    if len(data) != count:
        return False
    for value in data:
        if (type(value) is not float and type(value) is not int) or not -limit < value < limit:
            return False
    return True


def input_rows(request: InferRequest, info: ModelInfo, dtype: Any = None) -> np.ndarray | list:
    """The rows to score of ``request`` for the model ``info``: a (rows, n_features) array of ``dtype`` (default
    the model's; intervals ask for float64, the values as sent), or for a flat JSON list of plain numbers, its
    rows as lists (the batcher makes one array of many requests' rows). A ProtocolError 400 names the first
    thing that does not fit the model."""
    if len(request.inputs) != 1:
        raise _bad(f"'inputs' must hold exactly one tensor (the model's input {info.input_name!r})")
    tensor = request.inputs[0]
    name = tensor.name
    where = f"input {name!r}"
    if name != info.input_name:
        raise _bad(f"unknown input {name!r}; the model {info.name!r} takes one input named {info.input_name!r}")
    n_features = len(info.feature_names)
    shape = tensor.shape
    if (type(shape) is not list or len(shape) != 2 or type(shape[0]) is not int or type(shape[1]) is not int
            or shape[0] < 0 or shape[1] != n_features):
        raise _bad(f"{where}: shape {shape!r} does not fit the model; expected [rows, {n_features}] with rows >= 0 "
                   f"(features {list(info.feature_names)})")
    datatype = tensor.datatype
    dtype = INPUT_DTYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        raise _bad(f"{where}: datatype {datatype!r} is not supported; send FP32 or FP64")
    rows, count, data = shape[0], shape[0] * n_features, tensor.data
    if type(data) is list and _plain(data, count, info.limit):
        return [data] if rows == 1 else [data[i:i + n_features] for i in range(0, count, n_features)]
    if data is None:
        raise _bad(f"{where}: no data; send the tensor's values (JSON 'data', binary_data_size with binary data, "
                   "or gRPC contents)")
    if isinstance(data, (bytes, bytearray, memoryview)):
        expected = count * dtype.itemsize
        if len(data) != expected:
            raise _bad(f"{where}: {len(data)} bytes of binary data do not match shape {shape} of {datatype} "
                       f"({expected} bytes)")
        values = np.frombuffer(data, dtype=dtype)
    elif isinstance(data, np.ndarray):
        values = data
    else:
        values = json_values(data, where)
    if values.size != count:
        raise _bad(f"{where}: the data has {values.size} values but shape {shape} needs {count}")
    values = values.reshape(rows, n_features)
    _refuse_unusable(values, where, info)
    return values.astype(info.dtype if dtype is None else dtype)


def check_outputs(request: InferRequest, info: ModelInfo) -> None:
    """A ProtocolError 400 when the request asks for an output the model does not have."""
    names = (info.output_name, *(INTERVAL_OUTPUTS if info.intervals is not None else ()))
    for out in request.outputs:
        if out.name not in names:
            more = "" if info.intervals is not None or out.name not in INTERVAL_OUTPUTS else \
                " (its bundle keeps nothing to make intervals from: retrain it with this torchport)"
            raise _bad(f"unknown output {out.name!r}; the model {info.name!r} has the output(s) "
                       f"{', '.join(map(repr, names))}{more}")
