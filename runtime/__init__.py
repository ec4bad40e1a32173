"""torchport.runtime: load a bundle and predict with ONNX Runtime. Never imports torch."""
from torchport.runtime.bundle import FORMAT_VERSION, BundleError, load_manifest
from torchport.runtime.predictor import Predictor
from torchport.runtime.providers import ProviderFallbackWarning

__all__ = ["FORMAT_VERSION", "BundleError", "Predictor", "ProviderFallbackWarning", "load_manifest"]
