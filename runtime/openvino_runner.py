"""OpenVINO as an optional way to run a float32 graph on the CPU (the ``openvino`` extra): a compiled model
per (graph, performance hint, precision) and a pool of infer requests, run on numpy batches like
``hot_path.Runner``. Imported only when a plan asks for OpenVINO; the base install never needs it."""
from __future__ import annotations

import sys
from functools import lru_cache
from importlib.util import find_spec
from typing import Callable

import numpy as np

# The performance hints a regime may name, and the precisions: f32 always, bf16 only when asked for
# (OpenVINO's own CPU default on AVX-512 BF16 or AMX CPUs is bf16; torchport always says which).
HINTS = ("LATENCY", "THROUGHPUT")
PRECISIONS = ("f32", "bf16")
INSTALL = "pip install 'torchport[openvino]'"


def installed() -> bool:
    """Whether openvino can be imported, looked up without importing it (a Predictor's cold start skips it)."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"] is not None
    return find_spec("openvino") is not None


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why OpenVINO cannot run graphs here (not installed, or no CPU device), or None when it can."""
    try:
        import openvino as ov
    except ImportError:
        return f"openvino is not installed ({INSTALL})"
    try:
        devices = ov.Core().available_devices
    except Exception as e:  # openvino raises its own RuntimeError subclasses for a broken install
        return f"openvino could not start: {e}"
    return None if "CPU" in devices else f"openvino {ov.__version__} has no CPU device here"


@lru_cache(maxsize=1)
def version() -> str:
    """The installed OpenVINO's version ("" when it is not installed)."""
    if unavailable() is not None:
        return ""
    import openvino as ov
    return ov.__version__.split("-")[0]


@lru_cache(maxsize=1)
def bf16_unavailable() -> str | None:
    """Why bf16 cannot run here (OpenVINO missing, or a CPU without bf16 instructions), or None."""
    reason = unavailable()
    if reason is not None:
        return reason
    import openvino as ov
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "this CPU has no bf16 instructions that OpenVINO uses (AVX-512 BF16 or AMX)"
    return None


class OpenVinoRunner:
    """Runs one ONNX graph (its checked bytes) through OpenVINO on the CPU with ``hint`` ("LATENCY" or
    "THROUGHPUT") and ``precision`` ("f32" or "bf16") set explicitly. Infer requests are not thread-safe:
    each call takes one from a pool (a new one when the pool is empty) and puts it back, as the slots do."""

    def __init__(self, graph: bytes, hint: str, precision: str, threads: int):
        import openvino as ov
        self._tensor = ov.Tensor
        core = ov.Core()
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision,
                  "INFERENCE_NUM_THREADS": threads}
        self.compiled = core.compile_model(core.read_model(graph), "CPU", config)
        self._pool: list = []

    def run(self, matrix: np.ndarray, out: np.ndarray | None = None,
            check: Callable[[np.ndarray, int], None] | None = None) -> np.ndarray:
        """The graph's answer for ``matrix`` (float32, C-contiguous), into ``out`` when given; ``check(rows,
        0)`` sees the rows first and may raise."""
        if check is not None:
            check(matrix, 0)
        pool = self._pool
        try:
            request = pool.pop()
        except IndexError:
            request = self.compiled.create_infer_request()
        try:
            request.set_input_tensor(self._tensor(matrix, shared_memory=True))
            request.infer()
            answer = request.get_output_tensor().data
            if out is None:
                return answer.copy()  # the request's memory serves later calls: never hand it out
            out[...] = answer
            return out
        finally:
            pool.append(request)
