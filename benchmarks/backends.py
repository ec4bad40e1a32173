"""The ways to run a bundle that `torchport bench` compares, each as a callable from a numpy batch (on the
host, in the bundle's dtype) to a numpy result: numpy floors, torch eager, TorchScript, the ExportedProgram, the
AOTInductor package, plain ONNX Runtime, OpenVINO (f32 with each hint, and bf16, where installed), the
Predictor. Every one is built from the bundle's files as
checked against its manifest; a file this process cannot run is skipped with the reason."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnxruntime as ort

from torchport.benchmarks.machine import cuda_status
from torchport.benchmarks.records import BACKEND_LABELS, BACKEND_ORDER, BackendEntry, Skipped
from torchport.export.aoti import PackageCannotRun, load_package
from torchport.export.exported import load_program
from torchport.export.formats import TorchScriptUnavailable, load_module, load_torchscript, model_spec
from torchport.export.loading import module_runner
from torchport.export.module_spec import ModuleSpec
from torchport.runtime.bundle import AOTI_CUDA_FILE, AOTI_FILE, EXPORTED_FILE, ONNX_FILE, TORCHSCRIPT_FILE, Bundle
from torchport.runtime.predictor import Predictor
from torchport.runtime.providers import CPU, CUDA, resolve_providers
from torchport.runtime.sessions import session_options
from torchport.train.models import linear_coefficients


TORCH_SIDE = ("torch_eager", "torchscript", "exported", "aoti")


@dataclass
class Backend:
    """One way to answer a batch: ``call(x)`` takes host rows in the bundle's dtype and returns host rows."""
    id: str
    device: str
    call: Callable[[np.ndarray], np.ndarray]
    threads: str
    computes_model: bool = True
    reduced: bool = False  # computes in reduced precision (bf16), by choice: not held to float32's tolerance

    @property
    def label(self) -> str:
        return BACKEND_LABELS[self.id]

    def entry(self) -> BackendEntry:
        """What the report says about this backend."""
        return BackendEntry(self.id, self.label, self.device, self.threads)


@dataclass
class BundleBackends:
    """The backends built for one bundle, and those that could not be built (with the reason); ``float64``:
    the model's module run in float64 on the CPU (None for a module torchport did not define)."""
    bundle: Bundle
    backends: list[Backend] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    float64: Callable[[np.ndarray], np.ndarray] | None = None


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


def _torch_side(bundle: Bundle, device: str, threads: str, out: BundleBackends) -> None:
    """torch eager, TorchScript, the ExportedProgram and the AOTInductor package of ``bundle`` on ``device``
    (into ``out``), each skipped with the reason where the bundle lacks it or this process cannot run it."""
    spec = model_spec(bundle)
    if isinstance(spec, ModuleSpec):
        out.skipped.append(Skipped("torch_eager", device, f"{spec.description} is not torchport's: its torch-side "
                                   "source is model.pt2 (the ExportedProgram row)"))
    else:
        out.backends.append(Backend("torch_eager", device, module_runner(load_module(bundle).to(device), device),
                                    threads))
    makers = {"torchscript": (TORCHSCRIPT_FILE, lambda: load_torchscript(bundle.read(TORCHSCRIPT_FILE)).to(device)),
              "exported": (EXPORTED_FILE, lambda: load_program(bundle.read(EXPORTED_FILE),
                                                                str(bundle.path / EXPORTED_FILE)).module().to(device)),
              "aoti": (AOTI_FILE if device == "cpu" else AOTI_CUDA_FILE,
                       lambda: load_package(bundle, AOTI_FILE if device == "cpu" else AOTI_CUDA_FILE))}
    for backend, (name, make) in makers.items():
        if not bundle.has(name):
            out.skipped.append(Skipped(backend, device, f"the bundle has no {name}"))
            continue
        try:
            out.backends.append(Backend(backend, device, module_runner(make(), device), threads))
        except (TorchScriptUnavailable, PackageCannotRun) as e:
            out.skipped.append(Skipped(backend, device, str(e)))


OPENVINO_ROWS = {"openvino_latency": ("LATENCY", "f32"), "openvino_throughput": ("THROUGHPUT", "f32"),
                 "openvino_bf16": ("LATENCY", "bf16")}


def openvino_backends(bundle: Bundle, threads: int, out: BundleBackends) -> None:
    """OpenVINO on the CPU running model.onnx as an app would (its own API, the precision set explicitly): f32
    with each performance hint, and bf16 where the CPU has it; each skipped with the reason where it cannot."""
    from torchport.runtime.openvino_runner import OpenVinoRunner, bf16_unavailable, unavailable, version
    graph = bundle.read(ONNX_FILE)
    for backend, (hint, precision) in OPENVINO_ROWS.items():
        why = bf16_unavailable() if precision == "bf16" else unavailable()
        if why is None and bundle.manifest.input.dtype != "float32":
            why = f"the graph takes {bundle.manifest.input.dtype}; OpenVINO runs float32 graphs only here"
        if why is not None:
            out.skipped.append(Skipped(backend, "cpu", why))
            continue
        try:
            runner = OpenVinoRunner(graph, hint, precision, threads)
        except Exception as e:  # openvino raises its own RuntimeError subclasses for a graph it cannot take
            out.skipped.append(Skipped(backend, "cpu", f"openvino could not compile {ONNX_FILE}: {_said(e)}"))
            continue
        out.backends.append(Backend(backend, "cpu", runner.run, f"openvino {version()}, INFERENCE_NUM_THREADS="
                                    f"{threads}, PERFORMANCE_HINT={hint}, INFERENCE_PRECISION_HINT={precision}",
                                    reduced=precision != "f32"))


def _said(e: Exception) -> str:
    """OpenVINO's message on one line, without the lines that only say where in its C++ it was raised."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    told = [line for line in lines if not line.startswith(("Exception from ", "Check '"))] or lines
    return " ".join(told)[:300] or type(e).__name__


def _float64(bundle: Bundle) -> Callable[[np.ndarray], np.ndarray] | None:
    """The bundle's torch module in float64 on the CPU (the figure reduced precision is measured against)."""
    if isinstance(model_spec(bundle), ModuleSpec):
        return None
    import torch
    module = load_module(bundle).to("cpu").double().eval()

    def call(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.asarray(x, np.float64))).numpy()
    return call


def _tuned(bundle: Bundle, threads: int | None, seconds: float) -> Backend:
    """The Predictor with the plan it measures here and now (``Predictor.tune``), on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor(bundle, providers="cpu", intra_op_threads=threads)
    plan = predictor.tune(seconds=seconds)
    label = f"intra_op_threads={threads}" if threads is not None else "Predictor's own sessions"
    return Backend("predictor_tuned", "cpu", predictor.predict,
                   f"{label}; plan measured here in {plan.measured_s:.1f} s: " + "; ".join(plan.describe()))


def build_backends(bundle: str | os.PathLike | Bundle, devices: list[str], threads: int,
                   pin_predictor: bool, tune_seconds: float = 2.0) -> BundleBackends:
    """Every backend for ``bundle`` on each of ``devices`` ("cpu", "cuda"); CUDA ones only where usable. The
    tuned Predictor measures its plan for about ``tune_seconds`` (on the CPU only)."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    manifest = bundle.manifest
    out = BundleBackends(bundle)
    onnx_bytes = bundle.read(ONNX_FILE)
    in_name, out_name = manifest.input.name, manifest.output.name
    torch_threads = f"torch.set_num_threads({threads})"
    cuda = cuda_status()
    spec = model_spec(bundle)

    out.backends.append(Backend("numpy_copy", "cpu", lambda x: x.copy(), f"numpy, {threads} BLAS threads",
                                computes_model=False))
    if spec.kind == "linear" and manifest.encoding is not None:
        out.skipped.append(Skipped("numpy_matmul", "cpu", "the model codes categorical or imputed columns "
                                   "before its linear layer"))
    elif spec.kind == "linear":
        w, b = linear_coefficients(load_module(bundle))
        wt = np.ascontiguousarray(w.numpy().T, dtype=manifest.dtype)
        bt = b.numpy().astype(manifest.dtype)
        out.backends.append(Backend("numpy_matmul", "cpu", lambda x: x @ wt + bt, f"numpy, {threads} BLAS threads"))
    else:
        out.skipped.append(Skipped("numpy_matmul", "cpu", f"the model is {spec.kind}, not linear"))
    for device in devices:
        if device == "cuda" and not cuda.torch:
            out.skipped += [Skipped(b, "cuda", cuda.torch_reason or "") for b in TORCH_SIDE]
        else:
            _torch_side(bundle, device, torch_threads, out)
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
                if backend.id == "predictor" and device == "cpu":
                    out.backends.append(_tuned(bundle, threads if pin_predictor else None, tune_seconds))
            else:
                out.skipped.append(Skipped(backend.id, device,
                                           f"onnxruntime could not start {wanted} (got {providers_used})"))
    if "cpu" in devices:
        openvino_backends(bundle, threads, out)
    out.float64 = _float64(bundle)
    out.backends.sort(key=lambda b: (b.device != "cpu", BACKEND_ORDER.index(b.id)))
    return out
