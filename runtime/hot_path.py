"""The numpy hot path of Predictor.predict: session options per batch size, pooled bound buffers for small
batches and zero-copy runs for large ones.

ONNX Runtime sessions may be run from many threads at once, but an IOBinding and the buffers bound to it
may not be shared by two runs at once, so small batches take a slot (buffers plus their binding) from a
pool, run, and put it back: a pool holds as many slots as calls ever ran at once, whatever the threads."""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state as _C

CPU_DEVICE = _C.OrtDevice(_C.OrtDevice.cpu(), _C.OrtDevice.default_memory(), 0)
# Row counts up to this get pooled slots bound once (one pool per distinct row count).
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
    spinning threads left burning CPU, no memory-pattern lookup per run: about 5% of a one-row run), all
    cores for large ones; sequential, full graph optimisation. The one-thread session allocates without
    ONNX Runtime's arena: its allocations are small, and malloc serves them faster (0.2 us of a one-row run
    of a two-node graph); the large-batch session keeps the arena, which reuses big answers' pages."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads == 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_mem_pattern = False
        so.enable_cpu_mem_arena = False
    return so


def all_finite(a: np.ndarray) -> bool:
    """True if no element of the C-contiguous float32 array ``a`` is NaN or infinite, in one BLAS pass (1.5-3x
    faster than a float32 sum): a sum of squares is finite only if every element is. False can be a false
    alarm (squares of finite values above 1.8e19 overflow): the caller then checks each element."""
    v = a.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow and NaN are the answers looked for
        return math.isfinite(np.dot(v, v))


def ortvalue_vector(*arrays: np.ndarray) -> _C.OrtValueVector:
    """OrtValues wrapping (not copying) C-contiguous float32 numpy arrays; the arrays must outlive them."""
    vector = _C.OrtValueVector()
    for a in arrays:
        vector.push_back(_C.OrtValue.ortvalue_from_numpy(a, CPU_DEVICE))
    return vector


def bound_run(session: ort.InferenceSession, input_name: str, output_name: str, inp: np.ndarray,
              out: np.ndarray):
    """A no-argument callable that runs ``session`` on ``inp`` into ``out`` (float32, C-contiguous, both
    bound once through an IOBinding; not for two runs at once). It calls the C session directly, which
    skips the Python wrapper's per-call checks (WebGPU graph capture only); public API where that is absent."""
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(inp))
    binding.bind_ortvalue_output(output_name, ort.OrtValue.ortvalue_from_numpy(out))
    options = ort.RunOptions()
    c_session, c_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    if c_session is not None and c_binding is not None and hasattr(c_session, "run_with_iobinding"):
        return functools.partial(c_session.run_with_iobinding, c_binding, options)
    return functools.partial(session.run_with_iobinding, binding, options)


class Runner:
    """Runs one session on numpy arrays of any row count: rows in (float32, C-contiguous), answers into a
    given array or into memory from ONNX Runtime's arena. Safe to share between threads."""

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


class Slots:
    """Pools of slots for batches of up to SLOT_ROWS rows, keyed by input shape (rows, n_features), so
    that finding a pool stands for the shape check. A slot is ``(inp, cell, run, result, copy_out)``: the
    input buffer, a float memoryview of it when it holds one value (else None), its bound run, the output
    buffer and its ``copy`` method. Take one with ``pool.pop()`` and give it back with ``pool.append(slot)``: both are
    atomic, so no two runs ever share a slot, and no lock or thread-local lookup is paid per call."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str, n_features: int,
                 n_targets: int):
        self.session, self.input_name, self.output_name = session, input_name, output_name
        self.n_features, self.n_targets = n_features, n_targets
        self.pools: dict[tuple[int, int], list[tuple]] = {}

    def pool(self, rows: int) -> list[tuple]:
        """The pool for ``rows`` rows, made (empty) on first use."""
        return self.pools.setdefault((rows, self.n_features), [])

    def new(self, rows: int) -> tuple:
        """A fresh slot for ``rows`` rows, for a caller that found its pool empty."""
        inp = np.zeros((rows, self.n_features), dtype=np.float32)
        out = np.zeros((rows, self.n_targets), dtype=np.float32)
        cell = memoryview(inp).cast("B").cast("f") if inp.size == 1 else None
        return inp, cell, bound_run(self.session, self.input_name, self.output_name, inp, out), out, out.copy
