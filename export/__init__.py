"""torchport.export: write bundles (ONNX, TorchScript, ExportedProgram, AOTInductor, checkpoint, manifest),
verify their parity, load their torch-side formats, and add them to Triton model repositories. Uses torch;
reads and writes the bundle format of torchport.runtime. Names are loaded on first use, so that the
`torchport` command can start without importing torch."""
from __future__ import annotations

import importlib

_NAMES = {
    "BundleExistsError": "bundle_writer", "ParityFailed": "bundle_writer", "write_bundle": "bundle_writer",
    "write_from_regressor": "bundle_writer", "write_module_bundle": "bundle_writer",
    "load_module": "formats", "TorchModel": "loading", "load_model": "loading", "Tolerance": "parity",
    "assert_parity": "testing", "verify_bundle": "verify",
}
__all__ = sorted([*_NAMES, "ParityError"])


def __getattr__(name: str):
    if name == "ParityError":
        from torchport.runtime.errors import ParityError
        return ParityError
    if name not in _NAMES:
        raise AttributeError(f"module 'torchport.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"torchport.export.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
