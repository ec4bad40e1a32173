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
import torch
from torch import nn

from torchport.export.formats import DEFAULT_OPSET, export_onnx, export_torchscript
from torchport.export.parity import Tolerance, raise_if_failed
from torchport.export.verify import module_parity, random_rows, verify_bundle
from torchport.runtime.bundle import LARGE_BATCH_FILE, ONNX_FILE, TORCHSCRIPT_FILE, ParityReport
from torchport.runtime.errors import InputError


def assert_parity(bundle_or_module: str | os.PathLike | nn.Module, inputs: np.ndarray | None = None, *,
                  feature_names: Sequence[str] | None = None, target_names: Sequence[str] | None = None,
                  tolerance: Tolerance = Tolerance(), atol: float | None = None, rtol: float | None = None,
                  opset: int = DEFAULT_OPSET) -> ParityReport:
    """Raise ParityError unless torch, TorchScript and ONNX Runtime (model.onnx, and the large-batch graph
    where the exporter writes one) agree in names, shapes, dtypes and values: each within the parity
    criterion of a float64 run of the module (``tolerance``; ``atol`` with ``rtol`` for a fixed one); the
    message names the worst element. Returns the report. ``inputs`` default to the bundle's verification
    cases, or 256 rows around zero for a module."""
    if atol is not None or rtol is not None:
        tolerance = Tolerance(atol=atol, rtol=rtol)
    if not isinstance(bundle_or_module, nn.Module):
        return raise_if_failed(verify_bundle(Path(bundle_or_module), inputs, tolerance=tolerance))
    module = bundle_or_module.eval()
    if inputs is None:
        if feature_names is None:
            raise InputError("give inputs (rows x features) or feature_names for a module", parameter="inputs")
        inputs = random_rows(len(feature_names), 256, np.random.default_rng(0))
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 2:
        raise InputError(f"inputs must be 2-D (rows, features); got shape {inputs.shape}", parameter="inputs")
    features = list(feature_names or [f"x{i}" for i in range(inputs.shape[1])])
    with torch.no_grad():
        n_targets = module(torch.from_numpy(inputs[:2])).reshape(min(2, len(inputs)), -1).shape[1]
    targets = list(target_names or [f"y{i}" for i in range(n_targets)])
    with tempfile.TemporaryDirectory(prefix="torchport-parity-") as tmp:
        tmp = Path(tmp)
        record = export_onnx(module, inputs.shape[1], tmp / ONNX_FILE, opset, features, targets,
                             large_batch_path=tmp / LARGE_BATCH_FILE)
        export_torchscript(module, tmp / TORCHSCRIPT_FILE)
        report = module_parity(module, inputs, features, targets, tmp / ONNX_FILE, tmp / TORCHSCRIPT_FILE,
                               tmp / LARGE_BATCH_FILE if record.large_batch_graph else None, tolerance)
    return raise_if_failed(report)
