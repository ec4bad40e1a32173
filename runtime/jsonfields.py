"""Strict JSON for every record torchport writes and reads back (the manifest and what it holds, the training
record, bench.json, plans): numbers that strict JSON can hold (NaN and infinities become None) on the way out;
on the way in, every key checked for presence and type, and the one refused named with where it is (a
DataError, or the error the reader is given). One type rule for all: an int stands for a float, a bool for
nothing but a bool."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Callable, ClassVar

import numpy as np

from torchport.runtime.errors import DataError, TorchportError

NULL = type(None)
INT, NUMBER, TEXT, FLAG = (int,), (int, float), (str,), (bool,)
Schema = dict[str, tuple[type, ...]]
ErrorFor = Callable[[str, "str | None"], TorchportError]  # (message, key at fault) -> the error to raise


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or infinite (strict JSON has no such numbers)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite_array(values: Any) -> Any:
    """A number or a nested sequence of numbers as nested tuples of ``finite`` values."""
    a = np.asarray(values, np.float64)
    if a.ndim == 0:
        return finite(a)
    return tuple(finite_array(v) for v in a)


def has_none(values: Any) -> bool:
    """Whether a nested tuple from ``finite_array`` holds a None."""
    if isinstance(values, tuple):
        return any(has_none(v) for v in values)
    return values is None


def as_lists(values: Any) -> Any:
    """Nested tuples as nested lists, for JSON."""
    return [as_lists(v) for v in values] if isinstance(values, (tuple, list)) else values


def data_error(message: str, key: str | None) -> TorchportError:
    """A record's bad content: DataError (the message names the key)."""
    return DataError(message)


def _typed(value: Any, kinds: tuple[type, ...], what: str, key: str | None, error: ErrorFor) -> Any:
    """``value`` if it is of one of ``kinds`` (an int is taken for a float and returned as one, a bool
    only where bool is among them); ``error`` naming ``what`` otherwise."""
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join("null" if k is NULL else k.__name__ for k in kinds)
        raise error(f"{what} must be {names}, got {value!r}", key)
    return float(value) if float in kinds and type(value) is int else value


def _object(obj: Any, where: str, error: ErrorFor = data_error) -> dict:
    if not isinstance(obj, dict):
        raise error(f"{where} must be a JSON object, got {type(obj).__name__}", None)
    return obj


def values(obj: Any, where: str, schema: Schema) -> dict[str, Any]:
    """The values of ``schema``'s keys in the JSON object ``obj``, each of one of its types (``NULL``
    among them: may be null). DataError naming ``where`` and the key otherwise."""
    obj = _object(obj, where)
    out = {}
    for key, kinds in schema.items():
        if key not in obj:
            raise DataError(f"{where} lacks {key!r}")
        out[key] = _typed(obj[key], kinds, f"{where}.{key}", key, data_error)
    return out


def present(obj: Any, where: str, schema: Schema) -> dict[str, Any]:
    """Like ``values`` for keys that older records lack: those of ``schema`` that ``obj`` has, checked."""
    obj = _object(obj, where)
    return values({k: obj[k] for k in schema if k in obj}, where, {k: t for k, t in schema.items() if k in obj})


def items(obj: Any, where: str, item: Callable[[Any, str], Any]) -> tuple:
    """A JSON list read item by item with ``item(value, where)``."""
    if not isinstance(obj, list):
        raise DataError(f"{where} must be a JSON list, got {type(obj).__name__}")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(obj))


def scalar(kinds: tuple[type, ...]) -> Callable[[Any, str], Any]:
    """An ``item`` reader for ``items`` that takes values of ``kinds``."""
    return lambda value, where: _typed(value, kinds, where, None, data_error)


def json_object(obj: Any, where: str) -> dict:
    """Any JSON object (a copy)."""
    return dict(_object(obj, where))


class Flat:
    """A record of plain values: ``to_json`` gives its fields, ``from_json`` checks each against SCHEMA."""
    SCHEMA: ClassVar[Schema]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str):
        return cls(**values(obj, where, cls.SCHEMA))


class Fields:
    """Key-by-key access to one JSON object, for records whose keys are read in code rather than from a
    SCHEMA; a key that is missing or of the wrong type raises ``error(message, key)`` (DataError by
    default; a spec's reader passes one that names the setting)."""

    def __init__(self, obj: Any, where: str, error: ErrorFor = data_error):
        self.error = error
        self.obj, self.where = _object(obj, where, error), where

    def fail(self, key: str, expected: str) -> TorchportError:
        return self.error(f"{self.where}.{key} must be {expected}, got {self.obj.get(key)!r}", key)

    def get(self, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        """The value of ``key``, of type ``kind``; None when ``optional`` and the key is missing or null."""
        if self.obj.get(key) is None:
            if optional:
                return None
            if key not in self.obj:
                raise self.error(f"{self.where} lacks {key!r}", key)
        return _typed(self.obj[key], kind if isinstance(kind, tuple) else (kind,), f"{self.where}.{key}", key,
                      self.error)

    def number(self, key: str) -> float | None:
        """A float or null (an undefined value); the key must be there."""
        if key not in self.obj:
            raise self.error(f"{self.where} lacks {key!r}", key)
        return self.get(key, float, optional=True)

    def strings(self, key: str) -> tuple[str, ...]:
        found = self.get(key, list)
        if not all(isinstance(v, str) for v in found):
            raise self.fail(key, "a list of strings")
        return tuple(found)

    def numbers(self, key: str, depth: int = 1, optional: bool = False) -> Any:
        """A list (depth 1) or list of lists (depth 2) of numbers or nulls, as nested tuples."""
        found = self.get(key, list, optional)
        if found is None:
            return None

        def convert(v: Any, level: int) -> Any:
            if level == 0:
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                    return finite(v)
                raise self.fail(key, f"{'a list of ' * depth}numbers")
            if not isinstance(v, list):
                raise self.fail(key, f"{'a list of ' * depth}numbers")
            return tuple(convert(x, level - 1) for x in v)
        return convert(found, depth)

    def reasons(self, key: str = "undefined") -> dict[str, str]:
        """The ``undefined`` mapping (name -> why it has no value); empty when missing."""
        found = self.get(key, dict, optional=True) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
            raise self.fail(key, "an object of strings")
        return dict(found)

    def sub(self, key: str, optional: bool = False) -> "Fields | None":
        found = self.get(key, dict, optional)
        return None if found is None else Fields(found, f"{self.where}.{key}", self.error)
