"""torchport.export: write bundles (ONNX, TorchScript, checkpoint, manifest) and verify their parity."""
from torchport.export.bundle_writer import BundleExistsError, load_module, write_bundle, write_from_regressor
from torchport.export.verify import ParityError, verify_bundle

__all__ = ["BundleExistsError", "ParityError", "load_module", "verify_bundle", "write_bundle", "write_from_regressor"]
