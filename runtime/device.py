"""Device arrays (CuPy, torch CUDA tensors, anything with DLPack) bound on the GPU without a host copy,
used only when the session really runs the CUDA provider."""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import onnxruntime as ort

from torchport.runtime.errors import InputError, InputTypeError

DLPACK_CPU = 1
DLPACK_CUDA = 2
LEGACY_DEFAULT_STREAM = 1  # DLPack's stream number (and cudaStreamLegacy's handle) for CUDA


def dlpack_device(x: Any) -> tuple[int, int] | None:
    """(DLPack device type, device id) of an array that is not a numpy array, else None."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack_device__"):
        return None
    kind, device_id = x.__dlpack_device__()
    return int(kind), int(device_id)


def _cudart() -> ctypes.CDLL:
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so", "cudart64_13.dll", "cudart64_12.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise RuntimeError("the CUDA runtime library (libcudart) could not be loaded to order the input's "
                       "producer before ONNX Runtime reads it; install the CUDA 13 runtime")


def run_on_device(session: ort.InferenceSession, input_name: str, output_name: str, x: Any,
                  n_features: int, device_id: int, dtype: str = "float32") -> ort.OrtValue:
    """Run ``session`` on the CUDA array ``x`` (of the graph's ``dtype``) where it lies; the answer is an OrtValue on the same GPU
    (hand it to ``torch.from_dlpack`` or ``cupy.from_dlpack``).

    ONNX Runtime runs on its own CUDA stream and does not wait for the stream that produced ``x``, so the
    producer is asked (DLPack ``stream=``) to order its work before the legacy default stream, and the
    host waits for that stream before the run starts."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 2 or shape[1] != n_features:
        raise InputError(f"expected a 2-D device array of shape (rows, {n_features}); got shape {shape}")
    given = str(getattr(x, "dtype", ""))
    if dtype not in given:  # the graph's dtype: float32, or float64 for a float64 bundle
        torch_way = "x.float()" if dtype == "float32" else "x.double()"
        raise InputTypeError(f"device arrays for this model must be {dtype} (got {given}); convert on the device "
                             f"first, for example {torch_way} in torch or x.astype('{dtype}') in CuPy")
    capsule = x.__dlpack__(stream=LEGACY_DEFAULT_STREAM)
    if _cudart().cudaStreamSynchronize(ctypes.c_void_p(LEGACY_DEFAULT_STREAM)) != 0:
        raise RuntimeError("cudaStreamSynchronize failed while waiting for the input's producer")
    value = ort.OrtValue.from_dlpack(capsule)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, value)
    binding.bind_output(output_name, "cuda", device_id)
    session.run_with_iobinding(binding)  # the CUDA provider synchronises its stream before returning
    return binding.get_outputs()[0]
