"""Names a package exports but loads on first use, so that importing the package stays cheap (the
`torchport` command starts before torch or ONNX Runtime is needed; a caller of train.choices skips torch)."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for ``names`` (name -> the module that defines it: a
    submodule of ``package``, or a full ``torchport.`` module name); each is kept once loaded."""
    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names[name] if names[name].startswith("torchport.") else f"{package}.{names[name]}"
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))
    return getattr_, dir_
