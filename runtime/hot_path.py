"""The numpy hot path of Predictor.predict: session options per batch size and per-thread reused buffers.

ONNX Runtime sessions may be run from many threads at once, but buffers bound to a run may not be shared,
so each thread keeps its own small-batch buffers (``threading.local``). Runs go through
``run_with_ortvaluevector`` with pre-built OrtValues that wrap numpy memory: no per-call binding, no
output allocation inside ONNX Runtime, no copy of a float32 C-contiguous input."""
from __future__ import annotations

import functools
import os
import threading

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state as _C

CPU_DEVICE = _C.OrtDevice(_C.OrtDevice.cpu(), _C.OrtDevice.default_memory(), 0)
# Row counts up to this get per-thread buffers bound once (one slot per distinct row count).
SLOT_ROWS = 64
# From this many rows on, the multi-threaded session runs the batch.
LARGE_ROWS = 32768


def usable_cpus() -> int:
    """CPUs this process may run on (ONNX Runtime's default intra-op thread count is the physical cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """Options for one session: ``intra_op_threads`` 1 for small batches (no thread pool to wake, no
    spinning threads left burning CPU), all cores for large ones; sequential, full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads == 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def ortvalue_vector(*arrays: np.ndarray) -> _C.OrtValueVector:
    """OrtValues wrapping (not copying) C-contiguous float32 numpy arrays; the arrays must outlive them."""
    vector = _C.OrtValueVector()
    for a in arrays:
        vector.push_back(_C.OrtValue.ortvalue_from_numpy(a, CPU_DEVICE))
    return vector


class Runner:
    """Runs one session on numpy arrays: rows in (float32, C-contiguous), answers into a given array or
    into memory from ONNX Runtime's arena. Safe to share between threads: each run builds its own vectors."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str):
        self.session = session
        # The C session skips the Python wrapper's per-call checks (WebGPU graph capture only).
        self._run = getattr(session, "_sess", session).run_with_ortvaluevector
        self._options = ort.RunOptions()
        self._feed_names, self._fetch_names, self._devices = [input_name], [output_name], [CPU_DEVICE]

    def run(self, matrix: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The model's answer for ``matrix`` (float32, C-contiguous), written into ``out`` when given, else
        into memory from ONNX Runtime's arena that the returned array owns until it is freed (as a plain
        ``run`` does): reused across calls, so large answers cost no fresh page faults."""
        fetches = ortvalue_vector() if out is None else ortvalue_vector(out)
        self._run(self._options, self._feed_names, ortvalue_vector(matrix), self._fetch_names, fetches,
                  self._devices)
        return fetches[0].numpy() if out is None else out

    def bound(self, inp: np.ndarray, out: np.ndarray):
        """A no-argument callable that runs on ``inp`` into ``out``, with both bound once."""
        return functools.partial(self._run, self._options, self._feed_names, ortvalue_vector(inp),
                                 self._fetch_names, ortvalue_vector(out), self._devices)


class Slots(threading.local):
    """Per-thread buffers for small batches, keyed by input shape (rows, n_features):
    (input buffer, output buffer, bound run). Keying by shape lets a hit stand for the shape check."""

    def __init__(self, runner: Runner, n_features: int, n_targets: int):
        self.runner, self.n_features, self.n_targets = runner, n_features, n_targets
        self.by_shape: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, functools.partial]] = {}

    def get(self, rows: int) -> tuple[np.ndarray, np.ndarray, functools.partial]:
        """The slot for ``rows`` rows, made on first use in this thread."""
        slot = self.by_shape.get((rows, self.n_features))
        if slot is None:
            inp = np.zeros((rows, self.n_features), dtype=np.float32)
            out = np.zeros((rows, self.n_targets), dtype=np.float32)
            slot = self.by_shape[(rows, self.n_features)] = (inp, out, self.runner.bound(inp, out))
        return slot
