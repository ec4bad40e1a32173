"""torchport.runtime: read a bundle and predict with ONNX Runtime, score files, serve over HTTP. Never
imports torch: an app that embeds a model installs only this."""
from torchport.runtime.bundle import FORMAT_VERSION, Bundle, Manifest, load_manifest
from torchport.runtime.errors import BundleError, DataError, InputError, ParityError, TorchportError
from torchport.runtime.predictor import Predictor
from torchport.runtime.providers import ProviderFallbackWarning

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "DataError", "InputError", "Manifest", "ParityError",
           "Predictor", "ProviderFallbackWarning", "TorchportError", "load_manifest"]
