"""Loading a bundle's torch-side formats in Python: each file checked against its sha256 and loaded from
those bytes, then run with the Predictor's input rules (numpy in, numpy out; a DataFrame by column name;
a list of rows), so the same call scores rows with ONNX Runtime or with any torch-side format."""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch

from torchport.export.aoti import load_package
from torchport.export.exported import load_program
from torchport.export.formats import load_module, load_torchscript
from torchport.runtime.bundle import AOTI_CUDA_FILE, AOTI_FILE, CHECKPOINT_FILE, EXPORTED_FILE, TORCHSCRIPT_FILE, \
    Bundle
from torchport.runtime.errors import BundleError, InputError
from torchport.runtime.hot_path import finite
from torchport.runtime.inputs import answer_like, as_matrix, refuse_nonfinite

# The torch-side formats load_model takes, with the file each one loads and the device it runs on.
TORCH_FORMATS = {"module": (CHECKPOINT_FILE, "cpu"), "torchscript": (TORCHSCRIPT_FILE, "cpu"),
                 "exported": (EXPORTED_FILE, "cpu"), "aoti": (AOTI_FILE, "cpu"), "aoti_cuda": (AOTI_CUDA_FILE, "cuda")}


class TorchModel:
    """One torch-side format of a bundle as a callable: ``model(x)`` / ``model.predict(x)`` take what
    ``Predictor.predict`` takes and answer the same kind. ``run`` is the bare call: a C-contiguous
    (rows, features) array of the bundle's dtype (``dtype``: float32, or float64) in, (rows, targets) out. A
    bundle with categorical or imputed columns takes their cells as the Predictor does (strings mapped to level
    codes, NaN where imputed); ``run`` takes the codes."""

    def __init__(self, bundle: Bundle, fmt: str, run: Callable[[np.ndarray], np.ndarray],
                 allow_nonfinite: bool = False):
        self.format, self.path = fmt, bundle.path
        self.feature_names = list(bundle.manifest.features)
        self.target_names = list(bundle.manifest.targets)
        self.allow_nonfinite = allow_nonfinite
        self.encoding = bundle.manifest.encoding
        self.dtype = np.dtype(bundle.manifest.dtype)
        self.run = run

    def predict(self, x: Any) -> Any:
        if isinstance(x, (list, tuple)) and len(x) == 0:
            return []
        columns = self.encoding.columns_of(x) if self.encoding is not None else None
        if columns is not None:
            a = self.encoding.codes(columns, dtype=self.dtype)[0]
        else:
            a = np.ascontiguousarray(as_matrix(x, self.feature_names), dtype=self.dtype)
            if self.encoding is not None:
                self.encoding.check_codes(a)
        if self.encoding is None and not self.allow_nonfinite and a.size and not finite(a):
            refuse_nonfinite(a, self.feature_names)
        result = self.run(a) if len(a) else np.empty((0, len(self.target_names)), dtype=self.dtype)
        return answer_like(x, result, self.target_names)

    __call__ = predict

    def __repr__(self) -> str:
        return f"TorchModel({str(self.path)!r}, format={self.format!r}, features={self.feature_names})"


def module_runner(module: Callable[[torch.Tensor], torch.Tensor],
                  device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """A torch callable (module, TorchScript, ExportedProgram module, AOTInductor package) as float32 numpy
    rows in, numpy rows out; on CUDA the rows are copied there and back. A package runs through its
    loader: its Python wrapper re-reads the call's pytree specs on every call, a fixed cost the bundle's
    one-tensor call does not need."""
    loader = getattr(module, "loader", None)
    if type(loader).__name__ == "AOTIModelPackageLoader":
        run_one = loader.run
        module = lambda t: run_one([t])[0]  # noqa: E731
    if device == "cpu":
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
    else:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x).to(device)).cpu().numpy()  # .cpu() waits for the GPU
    return run


def torch_callable(bundle: Bundle, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The torch callable of one format of ``bundle`` (see TORCH_FORMATS), from its checked bytes."""
    if fmt not in TORCH_FORMATS:
        raise InputError(f"format must be one of {', '.join(TORCH_FORMATS)}; got {fmt!r}", parameter="format")
    name, device = TORCH_FORMATS[fmt]
    if fmt == "module":
        return load_module(bundle).to(device)
    if not bundle.has(name):
        raise BundleError(f"{bundle.path} holds no {name} (format {fmt!r}); its formats: "
                          f"{', '.join(bundle.manifest.export.formats) or 'see manifest.json'}")
    if fmt == "torchscript":
        return load_torchscript(bundle.read(name))
    if fmt == "exported":
        return load_program(bundle.read(name), str(bundle.path / name)).module()
    return load_package(bundle, name)


def load_model(bundle: str | os.PathLike | Bundle, format: str = "exported", *,
               allow_nonfinite: bool = False) -> TorchModel:
    """One torch-side format of a bundle, checked against its sha256 and loaded from those bytes, as a
    callable with the Predictor's input rules. ``format``: "exported" (model.pt2), "aoti" (model.aoti.pt2;
    refused where the manifest says it cannot run), "aoti_cuda", "torchscript", or "module" (the torch
    module: rebuilt from the checkpoint, or the ExportedProgram's module for a module torchport did not
    define)."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    call = torch_callable(bundle, format)
    return TorchModel(bundle, format, module_runner(call, TORCH_FORMATS[format][1]), allow_nonfinite)
