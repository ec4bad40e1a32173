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
NO_LARGE_BATCH_GRAPH_HELP = ("do not write model.large_batch.onnx. By default, when the model has a linear layer "
                             "with a single input (as the one-feature linear model's), the bundle also holds "
                             "the same model with that layer as "
                             "Mul+Add instead of Gemm: the same answers, and 4-8x the rows/s from about 1,000 rows "
                             "on; the Predictor runs it for batches of more than 64 rows and model.onnx for "
                             "smaller ones")


def large_batch_line(manifest: dict, asked: bool) -> str:
    """One line for the CLI: whether the bundle holds the large-batch graph, and why not."""
    graph = manifest["export"].get("large_batch_graph")
    if graph:
        return (f"large-batch graph: {graph['file']} (ops {', '.join(graph['ops'])}), run by the Predictor for "
                "batches of more than 64 rows")
    why = "the model has no linear layer with a single input" if asked else "--no-large-batch-graph"
    return f"large-batch graph: none ({why}); every batch runs model.onnx"


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


def _write_checked(model: onnx.ModelProto, path: Path) -> None:
    """Run onnx.checker with shape inference on ``model``, then write it to ``path``."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    path.write_bytes(model.SerializeToString())


def export_onnx(module: nn.Module, n_features: int, path: Path, opset: int, feature_names: list[str],
                target_names: list[str], large_batch_path: Path | None = None) -> dict:
    """Export ``module`` (rows x features -> rows x targets) to ``path`` with a dynamic batch dimension;
    returns what the manifest records about the export. With ``large_batch_path``, a copy in which every
    Gemm with inner dimension 1 is Mul+Add (``optimize``: exact, faster from about 1,000 rows on) is
    written there too, when there is such a Gemm. Both are checked by onnx.checker with shape inference."""
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
    _write_checked(model, path)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != opset:
        raise ExportError(f"torch {torch.__version__} could not write opset {opset} (it wrote "
                          f"{opsets.get('ai.onnx')}); choose an opset from 18 to {newest_opset()}")
    info = {"opset": opsets.get("ai.onnx", opset), "opset_imports": opsets,
            "exporter": "torch.onnx.export(dynamo=True)", "ops": sorted({n.op_type for n in model.graph.node}),
            "large_batch_graph": None}
    if large_batch_path is not None:
        large = onnx.ModelProto()
        large.CopyFrom(model)
        rewritten = gemm_k1_to_mul_add(large)
        if rewritten:
            _write_checked(large, large_batch_path)
            info["large_batch_graph"] = {"file": large_batch_path.name,
                                         "rewrites": {"gemm_k1_to_mul_add": rewritten},
                                         "ops": sorted({n.op_type for n in large.graph.node})}
    return info


def export_torchscript(module: nn.Module, path: Path) -> None:
    """Script ``module`` and save it. TorchScript is deprecated upstream but users ask for it."""
    with _quiet_torch():
        scripted = torch.jit.script(module.eval())
        torch.jit.save(scripted, str(path))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU (TorchScript's own loader: no arbitrary pickle classes)."""
    with _quiet_torch():
        return torch.jit.load(str(path), map_location="cpu").eval()
