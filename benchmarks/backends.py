"""The ways to run a bundle that `torchport bench` compares, each as a callable from a float32 numpy batch
(on the host) to a numpy result: numpy floors, torch eager, TorchScript, plain ONNX Runtime, the Predictor.
Every one is built from the bundle's files as checked against its manifest."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from torchport.benchmarks.machine import cuda_status
from torchport.benchmarks.records import BACKEND_LABELS, BACKEND_ORDER, BackendEntry, Skipped
from torchport.export.formats import load_module, load_torchscript, model_spec
from torchport.runtime.bundle import ONNX_FILE, TORCHSCRIPT_FILE, Bundle
from torchport.runtime.predictor import Predictor
from torchport.runtime.providers import CPU, CUDA, resolve_providers
from torchport.runtime.sessions import session_options
from torchport.train.models import linear_coefficients


@dataclass
class Backend:
    """One way to answer a batch: ``call(x)`` takes host float32 rows and returns host rows."""
    id: str
    device: str
    call: Callable[[np.ndarray], np.ndarray]
    threads: str
    computes_model: bool = True

    @property
    def label(self) -> str:
        return BACKEND_LABELS[self.id]

    def entry(self) -> BackendEntry:
        """What the report says about this backend."""
        return BackendEntry(self.id, self.label, self.device, self.threads)


@dataclass
class BundleBackends:
    """The backends built for one bundle, and those that could not be built (with the reason)."""
    bundle: Bundle
    backends: list[Backend] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _torch_call(module: torch.nn.Module, device: str) -> Callable[[np.ndarray], np.ndarray]:
    if device == "cpu":
        def call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
    else:
        def call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x).to(device)).cpu().numpy()  # .cpu() waits for the GPU
    return call


def _ort_call(session: ort.InferenceSession, input_name: str, output_name: str) -> Callable[[np.ndarray], np.ndarray]:
    def call(x: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: x})[0]
    return call


def _predictor(bundle: Bundle, providers: str, threads: int | None) -> tuple[Predictor, str]:
    """The Predictor as users build it; with an explicit thread count, pinned through its session options."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if threads is not None:
            return (Predictor(bundle, providers=providers, sess_options=session_options(threads, tuned=False)),
                    f"intra_op_num_threads={threads}")
        return Predictor(bundle, providers=providers), "Predictor's own session options (onnxruntime default threads)"


def build_backends(bundle: str | os.PathLike | Bundle, devices: list[str], threads: int,
                   pin_predictor: bool) -> BundleBackends:
    """Every backend for ``bundle`` on each of ``devices`` ("cpu", "cuda"); CUDA ones only where usable."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    manifest = bundle.manifest
    out = BundleBackends(bundle)
    module = load_module(bundle)
    scripted = load_torchscript(bundle.read(TORCHSCRIPT_FILE))
    onnx_bytes = bundle.read(ONNX_FILE)
    in_name, out_name = manifest.input.name, manifest.output.name
    torch_threads = f"torch.set_num_threads({threads})"
    cuda = cuda_status()
    kind = model_spec(bundle).kind

    out.backends.append(Backend("numpy_copy", "cpu", lambda x: x.copy(), f"numpy, {threads} BLAS threads",
                                computes_model=False))
    if kind == "linear":
        w, b = linear_coefficients(module)
        wt = np.ascontiguousarray(w.numpy().T, dtype=np.float32)
        b32 = b.numpy().astype(np.float32)
        out.backends.append(Backend("numpy_matmul", "cpu", lambda x: x @ wt + b32, f"numpy, {threads} BLAS threads"))
    else:
        out.skipped.append(Skipped("numpy_matmul", "cpu", f"the model is {kind}, not linear"))
    for device in devices:
        if device == "cuda" and not cuda.torch:
            out.skipped += [Skipped(b, "cuda", cuda.torch_reason or "") for b in ("torch_eager", "torchscript")]
        else:
            on_device = (module, scripted) if device == "cpu" else \
                (load_module(bundle).to(device), load_torchscript(bundle.read(TORCHSCRIPT_FILE)).to(device))
            out.backends.append(Backend("torch_eager", device, _torch_call(on_device[0], device), torch_threads))
            out.backends.append(Backend("torchscript", device, _torch_call(on_device[1], device), torch_threads))
        if device == "cuda" and not cuda.onnxruntime:
            out.skipped += [Skipped(b, "cuda", cuda.onnxruntime_reason or "")
                            for b in ("ort_plain", "ort_plain_threads", "predictor")]
            continue
        providers, _ = resolve_providers("cuda" if device == "cuda" else "cpu")
        session = ort.InferenceSession(onnx_bytes, sess_options=session_options(tuned=False), providers=providers)
        threaded = ort.InferenceSession(onnx_bytes, sess_options=session_options(threads, tuned=False),
                                        providers=providers)
        predictor, predictor_threads = _predictor(bundle, device, threads if pin_predictor else None)
        wanted = CUDA if device == "cuda" else CPU
        for providers_used, backend in (
                (session.get_providers(),
                 Backend("ort_plain", device, _ort_call(session, in_name, out_name), "onnxruntime default options")),
                (threaded.get_providers(),
                 Backend("ort_plain_threads", device, _ort_call(threaded, in_name, out_name),
                         f"intra_op_num_threads={threads}")),
                (predictor.providers, Backend("predictor", device, predictor.predict, predictor_threads))):
            if providers_used[0] == wanted:
                out.backends.append(backend)
            else:
                out.skipped.append(Skipped(backend.id, device,
                                           f"onnxruntime could not start {wanted} (got {providers_used})"))
    out.backends.sort(key=lambda b: (b.device != "cpu", BACKEND_ORDER.index(b.id)))
    return out
