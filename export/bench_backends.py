"""The ways to run a bundle that the benchmark compares, each as a callable from a float32 numpy batch
(on the host) to a numpy result: numpy floors, torch eager, TorchScript, plain ONNX Runtime, the Predictor."""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from torchport.export.bundle_writer import load_module
from torchport.export.formats import load_torchscript
from torchport.runtime.bundle import ONNX_FILE, TORCHSCRIPT_FILE, load_manifest, read_checked
from torchport.runtime.predictor import Predictor
from torchport.runtime.providers import CPU, CUDA, cuda_driver_present, resolve_providers
from torchport.train.models import linear_coefficients

LABELS = {"numpy_copy": "numpy copy (floor)", "numpy_matmul": "numpy X@W.T+b", "torch_eager": "torch eager",
          "torchscript": "TorchScript", "ort_plain": "ORT session.run", "predictor": "torchport Predictor"}
ORDER = tuple(LABELS)


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
        return LABELS[self.id]


@dataclass
class BundleBackends:
    """The backends built for one bundle, and those that could not be built (with the reason)."""
    bundle: Path
    manifest: dict
    backends: list[Backend] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def cuda_status() -> dict:
    """Whether torch and ONNX Runtime can each use CUDA here, and why not."""
    torch_ok = torch.cuda.is_available()
    ort_ok = CUDA in ort.get_available_providers() and cuda_driver_present()
    return {"torch": torch_ok, "onnxruntime": ort_ok,
            "torch_reason": None if torch_ok else f"torch {torch.__version__}: torch.cuda.is_available() is False",
            "onnxruntime_reason": None if ort_ok else (
                f"onnxruntime {ort.__version__} has no CUDAExecutionProvider" if CUDA not in ort.get_available_providers()
                else "no NVIDIA driver (libcuda) on this machine")}


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


def _predictor(bundle: Path, providers: str, threads: int | None) -> tuple[Predictor, str]:
    """The Predictor as users build it; with an explicit thread count, pinned through its session options."""
    if threads is not None and "sess_options" in inspect.signature(Predictor).parameters:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return Predictor(bundle, providers=providers, sess_options=options), f"intra_op_num_threads={threads}"
    return Predictor(bundle, providers=providers), "Predictor's own session options (onnxruntime default threads)"


def build_backends(bundle: str | Path, devices: list[str], threads: int, pin_predictor: bool) -> BundleBackends:
    """Every backend for ``bundle`` on each of ``devices`` ("cpu", "cuda"); CUDA ones only where usable."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    out = BundleBackends(bundle, manifest)
    module = load_module(bundle)
    read_checked(bundle, TORCHSCRIPT_FILE, manifest)
    scripted = load_torchscript(bundle / TORCHSCRIPT_FILE)
    onnx_bytes = read_checked(bundle, ONNX_FILE, manifest)
    in_name, out_name = manifest["inputs"][0]["name"], manifest["outputs"][0]["name"]
    torch_threads = f"torch.set_num_threads({threads})"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    cuda = cuda_status()

    out.backends.append(Backend("numpy_copy", "cpu", lambda x: x.copy(), f"numpy, {threads} BLAS threads",
                                computes_model=False))
    if manifest["model"]["kind"] == "linear":
        w, b = linear_coefficients(module)
        wt = np.ascontiguousarray(w.numpy().T, dtype=np.float32)
        b32 = b.numpy().astype(np.float32)
        out.backends.append(Backend("numpy_matmul", "cpu", lambda x: x @ wt + b32, f"numpy, {threads} BLAS threads"))
    else:
        out.skipped.append({"backend": "numpy_matmul", "device": "cpu",
                            "reason": f"the model is {manifest['model']['kind']}, not linear"})
    for device in devices:
        if device == "cuda" and not cuda["torch"]:
            out.skipped += [{"backend": b, "device": "cuda", "reason": cuda["torch_reason"]}
                            for b in ("torch_eager", "torchscript")]
        else:
            on_device = (module, scripted) if device == "cpu" else \
                (load_module(bundle).to(device), load_torchscript(bundle / TORCHSCRIPT_FILE).to(device))
            out.backends.append(Backend("torch_eager", device, _torch_call(on_device[0], device), torch_threads))
            out.backends.append(Backend("torchscript", device, _torch_call(on_device[1], device), torch_threads))
        if device == "cuda" and not cuda["onnxruntime"]:
            out.skipped += [{"backend": b, "device": "cuda", "reason": cuda["onnxruntime_reason"]}
                            for b in ("ort_plain", "predictor")]
            continue
        providers, _ = resolve_providers("cuda" if device == "cuda" else "cpu")
        session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=providers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor, predictor_threads = _predictor(bundle, device, threads if pin_predictor else None)
        wanted = CUDA if device == "cuda" else CPU
        for backend_id, providers_used, backend in (
                ("ort_plain", session.get_providers(),
                 Backend("ort_plain", device, _ort_call(session, in_name, out_name), f"intra_op_num_threads={threads}")),
                ("predictor", predictor.providers, Backend("predictor", device, predictor.predict, predictor_threads))):
            if providers_used[0] == wanted:
                out.backends.append(backend)
            else:
                out.skipped.append({"backend": backend_id, "device": device,
                                    "reason": f"onnxruntime could not start {wanted} (got {providers_used})"})
    out.backends.sort(key=lambda b: (b.device != "cpu", ORDER.index(b.id)))
    return out
