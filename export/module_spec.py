"""The model record of a bundle made from a module torchport did not define (``write_module_bundle``):
its class's name and widths. Such a bundle has no checkpoint to rebuild the module from; its torch-side
source of truth is model.pt2, the module's ExportedProgram."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchport.runtime.errors import BundleError
from torchport.runtime.jsonfields import INT, TEXT, values

KIND = "module"


@dataclass(frozen=True)
class ModuleSpec:
    """A user's module: ``module_class`` (``package.Class``) maps ``n_features`` to ``n_targets``."""
    module_class: str
    n_features: int
    n_targets: int
    kind: str = KIND

    def to_json(self) -> dict:
        return {"kind": KIND, "class": self.module_class, "n_features": self.n_features, "n_targets": self.n_targets}

    @classmethod
    def from_json(cls, obj: Any, where: str = "model spec") -> "ModuleSpec":
        v = values(obj, where, {"kind": TEXT, "class": TEXT, "n_features": INT, "n_targets": INT})
        if v["kind"] != KIND:
            raise BundleError(f"{where}.kind is {v['kind']!r}, not {KIND!r}")
        return cls(v["class"], v["n_features"], v["n_targets"])

    @property
    def description(self) -> str:
        return f"module {self.module_class}"


def is_module_spec(obj: Any) -> bool:
    """Whether a manifest's model record is a ModuleSpec's."""
    return isinstance(obj, dict) and obj.get("kind") == KIND
