"""The files a bundle holds for a torch module, written and read back: the checkpoint (weights), ONNX
(torch's exporter, from the module's ExportedProgram) and TorchScript (optional: deprecated upstream, left
out where the installed torch refuses it). Readers take the bytes a Bundle checked."""
from __future__ import annotations

import io
import json
from importlib import metadata
import pickle
import platform
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from torchport.export.exported import load_program
from torchport.export.module_spec import ModuleSpec, is_module_spec
from torchport.export.opsets import DEFAULT_OPSET, MIN_OPSET
from torchport.export.optimize import fold_hidden_biases, fold_scaling, gemm_k1_to_mul_add
from torchport.export.torch_calls import ExportError, evaluating, export_error, first_line, quiet_torch
from torchport.runtime.bundle import CHECKPOINT_FILE, EXPORTED_FILE, ExportRecord, GraphRewrite, Bundle
from torchport.runtime.errors import BundleError, DataError, InputError
from torchport.train.errors import SettingsError
from torchport.train.models import ModelSpec, build_model

INPUT_NAME = "features"
OUTPUT_NAME = "targets"
EXPORTER = "torch.onnx.export(dynamo=True)"
TORCHSCRIPT_TOOL = "torch.jit.script + torch.jit.save"
__all__ = ["ExportError", "quiet_torch"]


def torchport_version() -> str:
    """The installed torchport's version, for the record of what wrote a file."""
    try:
        return metadata.version("torchport")
    except metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """The versions of the tools that write a bundle."""
    import onnxscript
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def newest_opset() -> int:
    """The newest default-domain opset the installed torch exporter writes."""
    from torch.onnx._constants import ONNX_MAX_OPSET
    return int(ONNX_MAX_OPSET)


def check_opset(opset: int) -> None:
    """Refuse opsets the installed exporter cannot write, before any work is done."""
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest_opset():
        raise InputError(f"opset {opset} is out of range: torch {torch.__version__} exports opsets "
                         f"{MIN_OPSET} to {newest_opset()}", parameter="opset")


def _write_checked(model: onnx.ModelProto, path: Path) -> None:
    """Run onnx.checker with shape inference on ``model``, then write it to ``path``."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    path.write_bytes(model.SerializeToString())


def export_onnx(program: torch.export.ExportedProgram, path: Path, opset: int, feature_names: list[str],
                target_names: list[str], large_batch_path: Path | None = None,
                threaded_path: Path | None = None) -> ExportRecord:
    """Export ``program`` (rows x features -> rows x targets, dynamic batch) to ``path``. With
    ``large_batch_path``, a copy with the scaling folded into the first and last Gemm and every Gemm with
    inner dimension 1 as Mul+Add (optimize.py) is written there too, when either applies; with
    ``threaded_path``, that copy with the hidden layers' biases carried in a ones column (for runs on
    several threads), when the model has Gemm+Relu layers. All pass onnx.checker with strict shape
    inference."""
    check_opset(opset)
    try:
        with quiet_torch():
            onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME], verbose=False)
    except Exception as e:  # the exporter raises many types for programs it cannot translate
        raise export_error("export the module to ONNX", e) from e
    model = onnx_program.model_proto
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in (("torchport.features", json.dumps(feature_names)),
                       ("torchport.targets", json.dumps(target_names))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "torchport"
    _write_checked(model, path)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != opset:
        raise ExportError(f"torch {torch.__version__} could not write opset {opset} (it wrote "
                          f"{opsets.get('ai.onnx')}); choose an opset from 18 to {newest_opset()}")
    large = threaded = None
    if large_batch_path is not None:
        rewritten_model = onnx.ModelProto()
        rewritten_model.CopyFrom(model)
        rewrites = {"fold_scaling": fold_scaling(rewritten_model),
                    "gemm_k1_to_mul_add": gemm_k1_to_mul_add(rewritten_model)}
        rewrites = {name: count for name, count in rewrites.items() if count}
        if rewrites:
            _write_checked(rewritten_model, large_batch_path)
            large = GraphRewrite(large_batch_path.name, rewrites,
                                 tuple(sorted({n.op_type for n in rewritten_model.graph.node})))
        if threaded_path is not None and (folded := fold_hidden_biases(rewritten_model)):
            _write_checked(rewritten_model, threaded_path)
            threaded = GraphRewrite(threaded_path.name, {**rewrites, "fold_hidden_biases": folded},
                                    tuple(sorted({n.op_type for n in rewritten_model.graph.node})))
    return ExportRecord(opset, opsets, EXPORTER, tuple(sorted({n.op_type for n in model.graph.node})), large,
                        versions(), threaded_graph=threaded)


def export_torchscript(module: nn.Module, path: Path) -> str | None:
    """Script ``module`` and save it (TorchScript: deprecated upstream, asked for by users). Returns None,
    or why the installed torch would not (it may refuse or lack TorchScript): the bundle is then written
    without it."""
    buffer = io.BytesIO()
    try:
        with quiet_torch():
            scripted = torch.jit.script(evaluating(module))
            torch.jit.save(scripted, buffer)
    except Exception as e:  # scripting raises many types; a torch without TorchScript, AttributeError
        return f"torch {torch.__version__} did not write TorchScript ({first_line(e)})"
    path.write_bytes(buffer.getvalue())  # by Python: a full disk is an OSError, where torch's writer aborts
    return None


def load_torchscript(data: bytes) -> torch.jit.ScriptModule:
    """A TorchScript file's module on the CPU (TorchScript's own loader: no arbitrary pickle classes); a
    torch that cannot load it raises TorchScriptUnavailable."""
    try:
        with quiet_torch():
            return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    except Exception as e:  # a torch that refuses or lacks TorchScript, or a file of another version
        raise TorchScriptUnavailable(f"torch {torch.__version__} cannot load it ({first_line(e)})") from None


class TorchScriptUnavailable(Exception):
    """The installed torch cannot load a TorchScript file: verify and bench skip it with this note."""


def save_checkpoint(module: nn.Module, path: Path) -> None:
    """The module's weights (its state dict, nothing else) for the bundle's checkpoint.pt (serialised in
    memory, then written by Python, so that a full disk is an OSError rather than torch's writer failing)."""
    buffer = io.BytesIO()
    torch.save({"state_dict": module.state_dict()}, buffer)
    path.write_bytes(buffer.getvalue())


def model_spec(bundle: Bundle) -> ModelSpec | ModuleSpec:
    """The bundle's model spec (a ModuleSpec for a module torchport did not define); one torchport cannot
    read is a BundleError naming the manifest."""
    obj = bundle.manifest.model
    try:
        return ModuleSpec.from_json(obj) if is_module_spec(obj) else ModelSpec.from_json(obj)
    except (SettingsError, DataError) as e:
        raise BundleError(f"{bundle.path / 'manifest.json'}: its model spec cannot be read: {e}") from None


def load_module(bundle: Bundle | str | Path) -> nn.Module:
    """The bundle's torch module: rebuilt from its model spec and the checkpoint's weights (read with
    ``weights_only=True``), or for a module torchport did not define, its ExportedProgram's module; from
    the bytes their sha256 was checked on, so no pickled code runs."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    spec = model_spec(bundle)
    if isinstance(spec, ModuleSpec):
        return load_program(bundle.read(EXPORTED_FILE), str(bundle.path / EXPORTED_FILE)).module()
    data = bundle.read(CHECKPOINT_FILE)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BundleError(f"{bundle.path / CHECKPOINT_FILE} holds more than weights and was refused without "
                          f"running it ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise BundleError(f"{bundle.path / CHECKPOINT_FILE} holds no state_dict; re-export the bundle")
    module = build_model(spec).to(torch.float64 if bundle.manifest.dtype == "float64" else torch.float32)
    if bundle.manifest.encoding is not None:
        from torchport.export.encoded import Encoded
        module = Encoded(bundle.manifest.encoding, module)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise BundleError(f"{bundle.path / CHECKPOINT_FILE} does not fit the manifest's model spec: "
                          f"{str(e).splitlines()[0]}") from None
    return module.eval()
