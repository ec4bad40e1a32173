"""torchport.runtime: read a bundle and predict with ONNX Runtime, score files, serve over HTTP. Never
imports torch: an app that embeds a model installs only this. Names are loaded on first use (the
`torchport` command's dispatcher lives here and starts before ONNX Runtime is needed)."""
from __future__ import annotations

from torchport.runtime.lazy import lazy_names

_NAMES = {
    "FORMAT_VERSION": "bundle", "Bundle": "bundle", "Manifest": "bundle", "load_manifest": "bundle",
    "BundleError": "errors", "DataError": "errors", "InputError": "errors", "ParityError": "errors",
    "TorchportError": "errors", "Predictor": "predictor", "ProviderFallbackWarning": "providers",
}
__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES)
