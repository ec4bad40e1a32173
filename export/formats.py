"""The two exported copies of a module: ONNX (torch.export-based exporter) and TorchScript."""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from torchport.export.optimize import gemm_k1_to_mul_add

INPUT_NAME = "features"
OUTPUT_NAME = "targets"


@contextlib.contextmanager
def _quiet_torch():
    """Keep the exporters' deprecation notices and registry chatter out of users' terminals."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


MIN_OPSET = 13
LARGE_BATCH_GRAPH_HELP = ("write a linear layer over one input feature as Mul+Add instead of Gemm: exact, 2-5x "
                          "faster from about 10K rows on, about 0.5 us slower per one-row call (ONNX Runtime's "
                          "Gemm is compute-bound when the inner dimension is 1)")
LARGE_BATCH_GRAPH_UNUSED = ("note: --large-batch-graph changed nothing: the model has no linear layer over one "
                            "input feature (the graph is as torch exported it)")


class ExportError(RuntimeError):
    """The exporter could not write what was asked for."""


def newest_opset() -> int:
    """The newest default-domain opset the installed torch exporter writes."""
    from torch.onnx._constants import ONNX_MAX_OPSET
    return int(ONNX_MAX_OPSET)


def check_opset(opset: int) -> None:
    """Refuse opsets the installed exporter cannot write, before any work is done."""
    if not MIN_OPSET <= opset <= newest_opset():
        raise ValueError(f"opset {opset} is out of range: torch {torch.__version__} exports opsets "
                         f"{MIN_OPSET} to {newest_opset()}")


def export_onnx(module: nn.Module, n_features: int, path: Path, opset: int,
                feature_names: list[str], target_names: list[str], large_batch_graph: bool = False) -> dict:
    """Export ``module`` (rows x features -> rows x targets) to ``path`` with a dynamic batch dimension;
    returns what the manifest records about the export. With ``large_batch_graph`` a Gemm over one input
    feature becomes Mul+Add (``optimize``: exact, faster for large batches, slower for one row). Runs
    onnx.checker with shape inference."""
    check_opset(opset)
    module = module.eval()
    example = (torch.zeros(3, n_features, dtype=torch.float32),)
    batch = torch.export.Dim("batch", min=1)
    with _quiet_torch():
        program = torch.onnx.export(module, example, dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), verbose=False)
    model = program.model_proto
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in (("torchport.features", json.dumps(feature_names)),
                       ("torchport.targets", json.dumps(target_names))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "torchport"
    rewrites = {"gemm_k1_to_mul_add": gemm_k1_to_mul_add(model)} if large_batch_graph else {}
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    path.write_bytes(model.SerializeToString())
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != opset:
        raise ExportError(f"torch {torch.__version__} could not write opset {opset} (it wrote "
                          f"{opsets.get('ai.onnx')}); choose an opset from 18 to {newest_opset()}")
    return {"opset": opsets.get("ai.onnx", opset), "opset_imports": opsets,
            "exporter": "torch.onnx.export(dynamo=True)", "ops": sorted({n.op_type for n in model.graph.node}),
            "rewrites": {k: v for k, v in rewrites.items() if v}}


def export_torchscript(module: nn.Module, path: Path) -> None:
    """Script ``module`` and save it. TorchScript is deprecated upstream but users ask for it."""
    with _quiet_torch():
        scripted = torch.jit.script(module.eval())
        torch.jit.save(scripted, str(path))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU (TorchScript's own loader: no arbitrary pickle classes)."""
    with _quiet_torch():
        return torch.jit.load(str(path), map_location="cpu").eval()
