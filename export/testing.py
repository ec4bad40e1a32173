"""Parity checks for users' own test suites: torch vs TorchScript vs ONNX Runtime, one call.

    from torchport.export.testing import assert_parity
    assert_parity("bundles/seed")                       # a bundle: its checkpoint, TorchScript and ONNX
    assert_parity(my_module, np.random.rand(100, 3))    # a module: exported to a temp dir first
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from torchport.export.bundle_writer import DEFAULT_OPSET
from torchport.export.formats import export_onnx, export_torchscript, load_torchscript
from torchport.export.verify import (ParityError, compare_backends, describe_worst, graph_session, random_rows,
                                     verify_bundle)
from torchport.runtime.bundle import LARGE_BATCH_FILE, ONNX_FILE
from torchport.runtime.predictor import Predictor


def _raise_if_failed(report: dict) -> dict:
    if report["passed"]:
        return report
    lines = list(report.get("problems", []))
    lines += [describe_worst(name, p) + f" (tolerance atol {report['atol']:g} + rtol {report['rtol']:g} * |ref|)"
              for name, p in report["pairs"].items() if not p["passed"]]
    raise ParityError("parity failed:\n  " + "\n  ".join(lines))


def assert_parity(bundle_or_module: str | os.PathLike | nn.Module, inputs: np.ndarray | None = None, *,
                  feature_names: Sequence[str] | None = None, target_names: Sequence[str] | None = None,
                  atol: float = 1e-5, rtol: float = 1e-4, opset: int = DEFAULT_OPSET) -> dict:
    """Raise ParityError unless torch, TorchScript and ONNX Runtime (model.onnx, and the large-batch graph
    where the exporter writes one) agree in names, shapes, dtypes and values (|a - ref| <= atol + rtol *
    |ref| everywhere); the message names the worst element. Returns the report. ``inputs`` default to the
    bundle's verification cases, or 256 standard-normal rows for a module."""
    if isinstance(bundle_or_module, nn.Module):
        return _module_parity(bundle_or_module, inputs, feature_names, target_names, atol, rtol, opset)
    # verify_bundle checks the metadata names; the Predictor it uses refuses a graph whose input/output
    # names or widths differ from the manifest.
    return _raise_if_failed(verify_bundle(Path(bundle_or_module), inputs, atol=atol, rtol=rtol))


def _module_parity(module: nn.Module, inputs: np.ndarray | None, feature_names, target_names,
                   atol: float, rtol: float, opset: int) -> dict:
    module = module.eval()
    if inputs is None:
        if feature_names is None:
            raise ValueError("give inputs (rows x features) or feature_names for a module")
        inputs = random_rows(len(feature_names), 256, np.random.default_rng(0))
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 2:
        raise ValueError(f"inputs must be 2-D (rows, features); got shape {inputs.shape}")
    n = inputs.shape[1]
    features = list(feature_names or [f"x{i}" for i in range(n)])
    import torch
    with torch.no_grad():
        n_targets = module(torch.from_numpy(inputs[:2])).reshape(min(2, len(inputs)), -1).shape[1]
    targets = list(target_names or [f"y{i}" for i in range(n_targets)])
    with tempfile.TemporaryDirectory(prefix="torchport-parity-") as tmp:
        info = export_onnx(module, n, Path(tmp) / ONNX_FILE, opset, features, targets,
                           large_batch_path=Path(tmp) / LARGE_BATCH_FILE)
        large = Path(tmp) / LARGE_BATCH_FILE
        graphs = {LARGE_BATCH_FILE: graph_session(large.read_bytes(), str(large))} if info["large_batch_graph"] else {}
        export_torchscript(module, Path(tmp) / "model.pt")
        predictor = Predictor(Path(tmp) / ONNX_FILE, providers="cpu")
        scripted = load_torchscript(Path(tmp) / "model.pt")
        report = compare_backends(module, scripted, predictor, [("inputs", inputs)], features, targets,
                                  atol=atol, rtol=rtol, graphs=graphs)
    return _raise_if_failed(report)
