"""Reading and writing the training side's JSON records: numbers that strict JSON can hold (NaN and
infinities become None) and a reader that checks each key's type and names the key it refuses."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from torchport.train.errors import DataError, SettingsError, TrainError


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


def data_error(message: str, key: str | None) -> TrainError:
    """A record's bad content: DataError (the message names the key)."""
    return DataError(message)


def settings_error(message: str, key: str | None) -> TrainError:
    """A spec's bad content: SettingsError with the key as the setting at fault."""
    return SettingsError(message, parameter=key)


class Fields:
    """Typed access to one JSON object; a key that is missing or of the wrong type raises ``error``
    (DataError by default) with a message that names ``where`` and the key."""

    def __init__(self, obj: Any, where: str, error: Callable[[str, str | None], TrainError] = data_error):
        self.error = error
        if not isinstance(obj, dict):
            raise error(f"{where} must be a JSON object, got {type(obj).__name__}", None)
        self.obj, self.where = obj, where

    def fail(self, key: str, expected: str) -> TrainError:
        return self.error(f"{self.where}.{key} must be {expected}, got {self.obj.get(key)!r}", key)

    def get(self, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        """The value of ``key``, of type ``kind`` (an int is taken for a float, a bool never for a number);
        None when ``optional`` and the key is missing or null."""
        if self.obj.get(key) is None:
            if optional:
                return None
            if key not in self.obj:
                raise self.error(f"{self.where} lacks {key!r}", key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = self.obj[key]
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.fail(key, " or ".join(k.__name__ for k in kinds))
        return value

    def number(self, key: str) -> float | None:
        """A float or null (an undefined value); the key must be there."""
        if key not in self.obj:
            raise self.error(f"{self.where} lacks {key!r}", key)
        return self.get(key, float, optional=True)

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list)
        if not all(isinstance(v, str) for v in values):
            raise self.fail(key, "a list of strings")
        return tuple(values)

    def numbers(self, key: str, depth: int = 1, optional: bool = False) -> Any:
        """A list (depth 1) or list of lists (depth 2) of numbers or nulls, as nested tuples."""
        values = self.get(key, list, optional)
        if values is None:
            return None

        def convert(v: Any, level: int) -> Any:
            if level == 0:
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                    return finite(v)
                raise self.fail(key, f"{'a list of ' * depth}numbers")
            if not isinstance(v, list):
                raise self.fail(key, f"{'a list of ' * depth}numbers")
            return tuple(convert(x, level - 1) for x in v)
        return convert(values, depth)

    def reasons(self, key: str = "undefined") -> dict[str, str]:
        """The ``undefined`` mapping (name -> why it has no value); empty when missing."""
        values = self.get(key, dict, optional=True) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise self.fail(key, "an object of strings")
        return dict(values)

    def sub(self, key: str, optional: bool = False) -> "Fields | None":
        value = self.get(key, dict, optional)
        return None if value is None else Fields(value, f"{self.where}.{key}", self.error)
