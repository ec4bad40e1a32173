"""The inputs of a served model with categorical or imputed columns (the manifest's ``encoding``), in either of
two layouts, which model metadata shows: one input per feature column named after it (``[rows, 1]``; FP32 or
FP64 for a numeric column, BYTES for a categorical one), or ``features`` (FP32/FP64 ``[rows, numeric
columns]``, in the manifest's order) beside ``categories`` (BYTES ``[rows, categorical columns]``, in the
manifest's order). Numbers may be null (JSON) or NaN where the model imputes; BYTES come as JSON strings, as
Triton's binary BYTES (each element a 4-byte little-endian length, then its UTF-8 bytes) or as gRPC
bytes_contents. The cells become the graph's level codes, so that an unseen level or a missing cell is a
400 naming the column and the value, unless the request's parameter ``unseen`` is "reference": the level is
then scored as the reference level and the row flagged in the ``out_of_domain`` output."""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

from torchport.runtime.encoding import NUMERIC, UNSEEN, Encoding
from torchport.runtime.errors import InputError
from torchport.runtime.serve.inference import INPUT_DTYPES, InputTensor, ModelInfo, ProtocolError

CATEGORIES = "categories"  # the BYTES input of the split layout
UNSEEN_PARAMETER = "unseen"  # "refuse" (default) or "reference"


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def metadata_inputs(encoding: Encoding, info: ModelInfo) -> tuple[list[dict], dict]:
    """The per-column layout as metadata's ``inputs``, and both layouts described for its ``parameters``
    (numbers in the model's datatype, FP32 or FP64; either is taken)."""
    columns = [{"name": c.name, "datatype": info.datatype if c.kind == NUMERIC else "BYTES", "shape": [-1, 1]}
               for c in encoding.columns]
    numeric = [c.name for c in encoding.columns if c.kind == NUMERIC]
    split = [{"name": info.input_name, "datatype": info.datatype, "shape": [-1, len(numeric)]}] if numeric else []
    split.append({"name": CATEGORIES, "datatype": "BYTES", "shape": [-1, len(encoding.categorical)]})
    parameters = {"input_layouts": {"columns": columns, "split": split}, "numeric_features": numeric,
                  "categorical_features": encoding.categorical, "imputed_features": encoding.imputed,
                  "levels": {c.name: list(c.levels) for c in encoding.columns if c.kind != NUMERIC}}
    return columns, parameters


def _flat(data: object) -> list:
    out, stack = [], [data]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _shape(tensor: InputTensor, width: int, where: str) -> int:
    """The rows of a tensor of ``width`` columns ([rows, width], or [rows] for one column)."""
    shape = tensor.shape
    ok = type(shape) is list and all(type(s) is int and s >= 0 for s in shape) and (
        (len(shape) == 2 and shape[1] == width) or (len(shape) == 1 and width == 1))
    if not ok:
        raise _bad(f"{where}: shape {shape!r} does not fit; expected [rows, {width}]")
    return shape[0]


def _numbers(tensor: InputTensor, rows: int, width: int, where: str) -> np.ndarray:
    dtype = INPUT_DTYPES.get(tensor.datatype) if type(tensor.datatype) is str else None
    if dtype is None:
        raise _bad(f"{where}: datatype {tensor.datatype!r} is not supported; send FP32 or FP64")
    data = tensor.data
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) != rows * width * dtype.itemsize:
            raise _bad(f"{where}: {len(data)} bytes of binary data do not match [{rows}, {width}] of {tensor.datatype}")
        values = np.frombuffer(data, dtype=dtype).astype(np.float64)
    elif isinstance(data, np.ndarray):
        values = data.astype(np.float64)
    elif data is None:
        raise _bad(f"{where}: no data; send the tensor's values")
    else:
        flat = _flat(data)
        bad = next((v for v in flat if v is not None and (type(v) not in (int, float))), None)
        if bad is not None:
            raise _bad(f"{where}: 'data' must hold numbers (or null for a missing value), got {bad!r}")
        values = np.array([np.nan if v is None else v for v in flat], dtype=np.float64)
    if values.size != rows * width:
        raise _bad(f"{where}: the data has {values.size} values but the shape needs {rows * width}")
    return values.reshape(rows, width)


def _texts(tensor: InputTensor, rows: int, width: int, where: str) -> list:
    if tensor.datatype != "BYTES":
        raise _bad(f"{where}: datatype {tensor.datatype!r} is not supported for categorical columns; send BYTES")
    data = tensor.data
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw, values, at = bytes(data), [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise _bad(f"{where}: binary BYTES data ends inside an element's 4-byte length")
            (size,) = struct.unpack_from("<I", raw, at)
            if at + 4 + size > len(raw):
                raise _bad(f"{where}: binary BYTES data ends inside an element of {size} bytes")
            values.append(raw[at + 4:at + 4 + size])
            at += 4 + size
    elif isinstance(data, np.ndarray):
        values = list(data.ravel())
    elif data is None:
        raise _bad(f"{where}: no data; send the tensor's values")
    else:
        values = _flat(data)
    try:
        values = [v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v for v in values]
    except UnicodeDecodeError:
        raise _bad(f"{where}: BYTES elements must be UTF-8 text") from None
    bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
    if bad is not None:
        raise _bad(f"{where}: 'data' must hold strings (or null for a missing value), got {bad!r}")
    if len(values) != rows * width:
        raise _bad(f"{where}: the data has {len(values)} values but the shape needs {rows * width}")
    return [values[i::width] for i in range(width)]


def unseen_policy(parameters: dict | None) -> str:
    """The request's ``unseen`` parameter (default "refuse"); a ProtocolError 400 for anything else."""
    value = (parameters or {}).get(UNSEEN_PARAMETER, "refuse")
    if value not in UNSEEN:
        raise _bad(f"parameter {UNSEEN_PARAMETER!r} must be one of {', '.join(map(repr, UNSEEN))}, got {value!r}")
    return value


def encoded_rows(inputs: list[InputTensor], encoding: Encoding, info: ModelInfo,
                 unseen: str = "refuse", dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The request's rows as the graph's input in ``dtype`` (default the model's; float64 for intervals) (level
    codes, NaN where imputed), from either layout, and per row whether an unseen level was scored as the
    reference level (``unseen`` "reference"); a ProtocolError 400 names what does not fit."""
    input_name, model = info.input_name, info.name
    names = [t.name for t in inputs]
    features = encoding.features
    numeric = [c.name for c in encoding.columns if c.kind == NUMERIC]
    categorical = encoding.categorical
    by_name = dict(zip(names, inputs))
    if len(set(names)) != len(names):
        raise _bad(f"the inputs repeat a name ({names})")
    columns: dict[str, list | np.ndarray] = {}
    rows_of: dict[str, int] = {}
    if sorted(names) == sorted(features):
        for column in encoding.columns:
            tensor, where = by_name[column.name], f"input {column.name!r}"
            rows = rows_of[column.name] = _shape(tensor, 1, where)
            columns[column.name] = _numbers(tensor, rows, 1, where)[:, 0] if column.kind == NUMERIC \
                else _texts(tensor, rows, 1, where)[0]
    elif sorted(names) == sorted(([input_name] if numeric else []) + [CATEGORIES]):
        if numeric:
            where = f"input {input_name!r}"
            rows = rows_of[input_name] = _shape(by_name[input_name], len(numeric), where)
            values = _numbers(by_name[input_name], rows, len(numeric), where)
            columns.update({name: values[:, j] for j, name in enumerate(numeric)})
        where = f"input {CATEGORIES!r}"
        rows = rows_of[CATEGORIES] = _shape(by_name[CATEGORIES], len(categorical), where)
        columns.update(zip(categorical, _texts(by_name[CATEGORIES], rows, len(categorical), where)))
    else:
        split = ([repr(input_name)] if numeric else []) + [repr(CATEGORIES)]
        raise _bad(f"inputs {names} do not fit the model {model!r}: send one input per feature column "
                   f"({', '.join(map(repr, features))}), or {' and '.join(split)} (see the model's metadata)")
    if len(set(rows_of.values())) > 1:
        raise _bad(f"the inputs hold different numbers of rows ({rows_of})")
    try:
        codes, flagged = encoding.codes([columns[name] for name in features],
                                        dtype=info.dtype if dtype is None else dtype, unseen=unseen)
    except InputError as e:
        raise _bad(e.message + (f" (or send the parameter {UNSEEN_PARAMETER!r}: 'reference' to score it as the "
                                "reference level, flagged out of domain)" if e.parameter == "unseen" else "")) from None
    return codes, flagged
