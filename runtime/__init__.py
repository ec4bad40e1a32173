"""torchport.runtime: read a bundle and predict with ONNX Runtime, score files, serve over HTTP. Never
imports torch: an app that embeds a model installs only this. Names are loaded on first use (the
`torchport` command's dispatcher lives here and starts before ONNX Runtime is needed)."""
from __future__ import annotations

import importlib

_NAMES = {
    "FORMAT_VERSION": "bundle", "Bundle": "bundle", "Manifest": "bundle", "load_manifest": "bundle",
    "BundleError": "errors", "DataError": "errors", "InputError": "errors", "ParityError": "errors",
    "TorchportError": "errors", "Predictor": "predictor", "ProviderFallbackWarning": "providers",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'torchport.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"torchport.runtime.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
