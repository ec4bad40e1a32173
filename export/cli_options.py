"""Options and output lines that `torchport train` and `torchport export` share."""
from __future__ import annotations

import argparse

from torchport.export.formats import DEFAULT_OPSET
from torchport.export.parity import Tolerance
from torchport.runtime.bundle import Manifest
from torchport.runtime.options import positive_float, positive_int

NO_LARGE_BATCH_GRAPH_HELP = ("do not write model.large_batch.onnx. By default, when the model has a linear layer "
                             "with a single input (as the one-feature linear model's) or scaling, the bundle also "
                             "holds the same model with that layer as Mul+Add instead of Gemm and the scaling "
                             "folded into the first and last layers' weights, verified like model.onnx; the "
                             "Predictor runs it for batches of more than 64 rows (every batch when only the "
                             "scaling was folded) and model.onnx for the others")


def add_export_options(p: argparse.ArgumentParser) -> None:
    """--opset, --no-large-batch-graph, --atol and --rtol."""
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset to export (default: {DEFAULT_OPSET})")
    p.add_argument("--no-large-batch-graph", action="store_true", help=NO_LARGE_BATCH_GRAPH_HELP)
    p.add_argument("--atol", type=positive_float, default=Tolerance.atol,
                   help=f"parity tolerance, absolute (default: {Tolerance.atol:g})")
    p.add_argument("--rtol", type=positive_float, default=Tolerance.rtol,
                   help=f"parity tolerance, relative (default: {Tolerance.rtol:g})")


def tolerance(args: argparse.Namespace) -> Tolerance:
    return Tolerance(args.atol, args.rtol)


def large_batch_line(manifest: Manifest, asked: bool) -> str:
    """Whether the bundle holds the large-batch graph, and why not."""
    graph = manifest.export.large_batch_graph
    if graph:
        sizes = "batches of more than 64 rows" if "gemm_k1_to_mul_add" in graph.rewrites else "every batch"
        return f"large-batch graph: {graph.file} (ops {', '.join(graph.ops)}), run by the Predictor for {sizes}"
    why = "the model has no linear layer with a single input and no scaling" if asked else "--no-large-batch-graph"
    return f"large-batch graph: none ({why}); every batch runs model.onnx"
