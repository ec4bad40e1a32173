"""Execution-provider choice: explicit lists, 'auto' = CUDA then CPU, and an honest fallback."""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache

import onnxruntime as ort

from torchport.runtime.errors import InputError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
SHORT_NAMES = {"cpu": [CPU], "cuda": [CUDA, CPU]}


class ProviderFallbackWarning(RuntimeWarning):
    """A requested execution provider could not be used; the session runs on the ones it reports."""


@lru_cache(maxsize=1)
def cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads, i.e. there is a GPU that CUDA could use."""
    for name in (["nvcuda.dll"] if os.name == "nt" else ["libcuda.so.1", "libcuda.so"]):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def resolve_providers(providers: str | list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The providers to request from ONNX Runtime, and notes on any that were dropped (and why).

    ``providers`` is "auto" (CUDA then CPU when a GPU driver is present, else CPU), "cpu", "cuda",
    a comma-separated string, or a list of ONNX Runtime provider names in priority order."""
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.strip().lower()
        if key == "auto":
            wanted = [CUDA, CPU] if CUDA in available and cuda_driver_present() else [CPU]
            return wanted, []
        names = SHORT_NAMES.get(key) or [p.strip() for p in providers.split(",") if p.strip()]
    else:
        names = list(providers)
    if not names:
        raise InputError("providers is empty; give 'auto', 'cpu', 'cuda' or ONNX Runtime provider names",
                         parameter="providers")
    known = set(ort.get_all_providers())
    for name in names:
        if name not in known:
            raise InputError(f"unknown execution provider {name!r}; this onnxruntime "
                             f"{ort.__version__} offers: {', '.join(available)}", parameter="providers")
    notes = []
    wanted = []
    for name in names:
        if name not in available:
            notes.append(f"{name} is not part of this onnxruntime build ({ort.__version__}); "
                         "install onnxruntime-gpu for CUDA")
        elif name == CUDA and not cuda_driver_present():
            notes.append(f"{name} needs an NVIDIA GPU, but no CUDA driver (libcuda) was found on this machine")
        else:
            wanted.append(name)
    if CPU not in wanted:
        wanted.append(CPU)
    if CUDA in wanted and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()  # CUDA/cuDNN from pip's nvidia-* wheels (e.g. those torch brings)
        except Exception:
            pass
    return wanted, notes
