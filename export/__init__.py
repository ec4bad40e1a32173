"""torchport.export: write bundles (ONNX, TorchScript, ExportedProgram, AOTInductor, checkpoint, manifest),
verify their parity, load their torch-side formats, and add them to Triton model repositories. Uses torch;
reads and writes the bundle format of torchport.runtime. Names are loaded on first use, so that the
`torchport` command can start without importing torch."""
from __future__ import annotations

from torchport.runtime.lazy import lazy_names

_NAMES = {
    "BundleExistsError": "bundle_writer", "ParityFailed": "bundle_writer", "write_bundle": "bundle_writer",
    "write_from_regressor": "bundle_writer", "write_module_bundle": "bundle_writer",
    "load_module": "formats", "TorchModel": "loading", "load_model": "loading", "Tolerance": "parity",
    "assert_parity": "testing", "verify_bundle": "verify", "ParityError": "torchport.runtime.errors",
    "PrecisionError": "precision", "choose_precision": "precision",
}
__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES)
