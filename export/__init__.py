"""torchport.export: write bundles (ONNX, TorchScript, ExportedProgram, AOTInductor, checkpoint, manifest),
verify their parity, load their torch-side formats, and add them to Triton model repositories. Uses torch;
reads and writes the bundle format of torchport.runtime."""
from torchport.export.bundle_writer import BundleExistsError, write_bundle, write_from_regressor, write_module_bundle
from torchport.export.formats import load_module
from torchport.export.loading import TorchModel, load_model
from torchport.export.parity import Tolerance
from torchport.export.testing import assert_parity
from torchport.export.verify import verify_bundle
from torchport.runtime.errors import ParityError

__all__ = ["BundleExistsError", "ParityError", "Tolerance", "TorchModel", "assert_parity", "load_model",
           "load_module", "verify_bundle", "write_bundle", "write_from_regressor", "write_module_bundle"]
