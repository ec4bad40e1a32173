"""Parity checks for users' own test suites: torch vs every exported format of a bundle, one call.

    from torchport.export.testing import assert_parity
    assert_parity("bundles/seed")                       # a bundle: its checkpoint against every format it holds
    assert_parity(my_module, np.random.rand(100, 3))    # a module: exported to a temp dir first
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from torch import nn

from torchport.export.bundle_writer import DEFAULT_FORMATS, check_formats, describe_module, write_files
from torchport.export.formats import DEFAULT_OPSET
from torchport.export.parity import Tolerance, raise_if_failed
from torchport.export.torch_calls import evaluating
from torchport.export.verify import bundle_backends, random_rows, run_cases, verify_bundle
from torchport.runtime.bundle import Bundle, ParityReport
from torchport.runtime.errors import InputError


def assert_parity(bundle_or_module: str | os.PathLike | nn.Module, inputs: np.ndarray | None = None, *,
                  feature_names: Sequence[str] | None = None, target_names: Sequence[str] | None = None,
                  atol: float = Tolerance.atol, rtol: float = Tolerance.rtol, opset: int = DEFAULT_OPSET,
                  formats: Iterable[str] = DEFAULT_FORMATS) -> ParityReport:
    """Raise ParityError unless torch and every format agree in names, shapes, dtypes and values (|a - ref|
    <= atol + rtol * |ref| everywhere); the message names the worst element. Returns the report. A bundle
    runs every format it holds on its verification cases (``inputs`` replace its training rows); a module
    is exported first to ``formats`` (ONNX, with the large-batch graph where the exporter writes one,
    TorchScript, the ExportedProgram; add "aoti" to compile it too) and run on ``inputs``, by default 256
    rows around zero."""
    tolerance = Tolerance(atol, rtol)
    if not isinstance(bundle_or_module, nn.Module):
        return raise_if_failed(verify_bundle(Path(bundle_or_module), inputs, tolerance=tolerance))
    module = evaluating(bundle_or_module)
    if inputs is None:
        if feature_names is None:
            raise InputError("give inputs (rows x features) or feature_names for a module", parameter="inputs")
        inputs = random_rows(len(feature_names), 256, np.random.default_rng(0))
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 2:
        raise InputError(f"inputs must be 2-D (rows, features); got shape {inputs.shape}", parameter="inputs")
    features = list(feature_names or [f"x{i}" for i in range(inputs.shape[1])])
    spec = describe_module(module, inputs.shape[1])
    targets = list(target_names or [f"y{i}" for i in range(spec.n_targets)])
    with tempfile.TemporaryDirectory(prefix="torchport-parity-") as tmp:
        manifest = write_files(Path(tmp), module, spec, features, targets, None, opset, True, None,
                               check_formats(formats), "native")
        found = bundle_backends(Bundle(Path(tmp), manifest), module)
        report = run_cases(found.backends, found.pairs, [("inputs", inputs)], spec.n_targets, tolerance, found.problems,
                           found.providers, notes=found.notes)
    return raise_if_failed(report)
