"""Reading JSON records back into dataclasses (the manifest, bench.json): every key checked for presence and
type, and the one refused named with where it is (a DataError). Records write themselves with ``to_json``."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, ClassVar

from torchport.runtime.errors import DataError

NULL = type(None)
INT, NUMBER, TEXT, FLAG = (int,), (int, float), (str,), (bool,)
Schema = dict[str, tuple[type, ...]]


def values(obj: Any, where: str, schema: Schema) -> dict[str, Any]:
    """The values of ``schema``'s keys in the JSON object ``obj``, each of one of its types (``type(None)``
    among them: may be null); an int stands for a float, a bool for nothing but a bool. DataError naming
    ``where`` and the key otherwise."""
    if not isinstance(obj, dict):
        raise DataError(f"{where} must be a JSON object, got {type(obj).__name__}")
    out = {}
    for key, kinds in schema.items():
        if key not in obj:
            raise DataError(f"{where} lacks {key!r}")
        value = obj[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join("null" if k is NULL else k.__name__ for k in kinds)
            raise DataError(f"{where}.{key} must be {names}, got {value!r}")
        out[key] = float(value) if float in kinds and type(value) is int else value
    return out


def present(obj: Any, where: str, schema: Schema) -> dict[str, Any]:
    """Like ``values`` for keys that older records lack: those of ``schema`` that ``obj`` has, checked."""
    if not isinstance(obj, dict):
        raise DataError(f"{where} must be a JSON object, got {type(obj).__name__}")
    return values({k: obj[k] for k in schema if k in obj}, where, {k: t for k, t in schema.items() if k in obj})


def items(obj: Any, where: str, item: Callable[[Any, str], Any]) -> tuple:
    """A JSON list read item by item with ``item(value, where)``."""
    if not isinstance(obj, list):
        raise DataError(f"{where} must be a JSON list, got {type(obj).__name__}")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(obj))


def scalar(kinds: tuple[type, ...]) -> Callable[[Any, str], Any]:
    """An ``item`` reader for ``items`` that takes values of ``kinds``."""
    return lambda value, where: values({"value": value}, where, {"value": kinds})["value"]


def json_object(obj: Any, where: str) -> dict:
    """Any JSON object (a copy)."""
    values(obj, where, {})
    return dict(obj)


class Flat:
    """A record of plain values: ``to_json`` gives its fields, ``from_json`` checks each against SCHEMA."""
    SCHEMA: ClassVar[Schema]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str):
        return cls(**values(obj, where, cls.SCHEMA))
