"""The numpy hot path of Predictor.predict: pooled bound buffers for small batches, zero-copy runs for
larger ones, and for the large-batch graph chunked runs into recycled memory (docs/hot-path.md says why).

ONNX Runtime sessions may be run from many threads at once, but an IOBinding and the buffers bound to it
may not be shared by two runs at once, so small batches take a slot (buffers plus their binding) from a
pool, run, and put it back: a pool holds as many slots as calls ever ran at once, whatever the threads."""
from __future__ import annotations

import math
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import onnxruntime as ort

from torchport.runtime.ort_api import array_runner, bound_run

# Row counts up to this always get pooled slots bound once (one pool per distinct row count); larger
# batches may too, up to SLOT_BYTES of input and answer per slot and MAX_POOLS pools in all.
SLOT_ROWS = 64
SLOT_BYTES = 16 << 10
MAX_POOLS = 256
# From this many rows on, the multi-threaded session runs the batch.
LARGE_ROWS = 32768
# The large-batch graph runs inputs of more than CHUNK_FROM_BYTES in chunks of CHUNK_BYTES: each chunk is
# checked for NaN/inf and run while it is in cache, and its intermediates stay there. Smaller inputs fit in
# the last-level cache whole, and the per-chunk cost is then a loss.
CHUNK_BYTES = 1 << 20
CHUNK_FROM_BYTES = 8 << 20
# Graphs without a large-batch graph (MLPs) run batches of at least two chunks as chunks of rows whose
# widest intermediate (rows x widest layer, in the graph's float32 or float64) takes about CACHE_BYTES, so
# that the layers' outputs stay in each core's L2 cache; the chunks are shared out between the calling thread
# and helper threads, each running a one-thread session. Chunks have at least MIN_CHUNK_ROWS rows.
CACHE_BYTES = 512 << 10
MIN_CHUNK_ROWS = 256
# An MLP batch below two chunks runs whole: on one thread, or on intra_op_threads from this much model
# arithmetic per call on (about 40 µs of one core of the development machine: less does not pay for waking
# the session's threads), if a layer has at least THREADS_FROM_WIDTH units (ONNX Runtime's two-thread runs
# of the 3-32-32-1 MLP were no quicker than one thread's at 2,048-8,192 rows; the 16-128-128-4 MLP's were)
# or the bundle has the threaded graph (model.threaded.onnx, whose layers run on every thread: the
# 3-32-32-1 MLP's two-thread runs of it were quicker than its shared chunks at 4,096 rows). With that graph,
# a batch runs whole on the threads up to THREADED_CHUNKS cache-sized chunks' rows (both reference MLPs'
# whole runs were quicker than the chunks at 4,096 rows and even at 8,192), chunk by chunk above.
THREADS_FROM_FLOP = 4_000_000
THREADS_FROM_WIDTH = 64
THREADED_CHUNKS = 4
# Beside busy processes (Engine.calm) a multi-threaded step runs on one thread, but the threaded graph keeps
# its threads, not spinning, from this much arithmetic a call: the wide MLP beside one busy process (each
# regime in its own process) took 1,087-1,421 µs at 4,096 rows against one thread's 1,742-1,784 and
# 777-849 against 877-1,021 at 2,048; 242-303 against 221-302 at 512 and 80-130 against 66-68 at 128.
CALM_THREADS_FROM_FLOP = 32_000_000


def slot_rows(n_features: int, n_targets: int) -> int:
    """The most rows a pooled slot holds: SLOT_BYTES of float32 input and answer (twice that for a float64 graph), at least SLOT_ROWS."""
    return max(SLOT_ROWS, SLOT_BYTES // (4 * (n_features + n_targets)))


def cache_chunk_rows(widest: int, itemsize: int = 4) -> int:
    """Rows per chunk for a graph whose widest layer has ``widest`` values a row of ``itemsize`` bytes (4 for
    float32, 8 for float64): the largest power of two whose intermediate fits in CACHE_BYTES, at least
    MIN_CHUNK_ROWS."""
    rows = CACHE_BYTES // (itemsize * max(1, widest))
    return max(MIN_CHUNK_ROWS, 1 << (rows.bit_length() - 1))


def all_finite(a: np.ndarray) -> bool:
    """True if no element of the C-contiguous float32 or float64 array ``a`` is NaN or infinite, in one BLAS pass: a
    sum of squares is finite only if every element is. False can be a false alarm (squares of finite values
    above 1.8e19 overflow): the caller then checks each element."""
    v = a.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow and NaN are the answers looked for
        return math.isfinite(np.dot(v, v))


def finite(a: np.ndarray) -> bool:
    """False if ``a`` (float32 or float64, C-contiguous) may hold NaN/inf, in one pass: the value itself for one, else
    the BLAS pass of ``all_finite`` above (quicker than numpy's float64 sum at every size, docs/hot-path.md)."""
    if a.size == 1:
        return math.isfinite(a.item())
    return all_finite(a)


class _Lease:
    """The owner of one answer's memory. Every view, slice or memoryview of the answer refers to it, directly
    or through the array it was made from, so it (and its weak reference) lives as long as any of them."""
    __slots__ = ("__array_interface__", "memory", "__weakref__")

    def __init__(self, memory: np.ndarray, shape: tuple[int, int]):
        self.memory = memory
        self.__array_interface__ = {"data": (memory.__array_interface__["data"][0], False), "shape": shape,
                                    "typestr": memory.dtype.str, "version": 3}


class Answers:
    """Memory for large answers, reused once nothing refers to the last answer made in it: a fresh
    64 MB array costs a page-zeroing pass (about as long as the run itself), which ONNX Runtime's arena
    spares plain runs. Keeps at most ``keep`` blocks; each is reused for answers of half to all its size."""

    def __init__(self, keep: int = 2, dtype: np.dtype = np.dtype(np.float32)):
        self.keep, self.dtype = keep, dtype
        self._blocks: list[tuple[np.ndarray, weakref.ref]] = []
        self._lock = threading.Lock()

    def new(self, rows: int, cols: int) -> np.ndarray:
        """A (rows, cols) array of ``dtype``, in a block no live array uses, or in new memory."""
        need = rows * cols
        with self._lock:
            blocks = self._blocks
            free = [i for i, (memory, ref) in enumerate(blocks) if ref() is None]
            fits = [i for i in free if need <= blocks[i][0].size <= 2 * need]
            if fits:
                memory = blocks.pop(fits[0])[0]
            else:
                memory = np.empty(need, dtype=self.dtype)
                if len(blocks) >= self.keep:
                    blocks.pop(free[0] if free else 0)
            lease = _Lease(memory, (rows, cols))
            blocks.append((memory, weakref.ref(lease)))
        return np.asarray(lease)


class Runner:
    """Runs one session on numpy arrays of any row count: rows in (the session's float32 or float64, C-contiguous), answers into a
    given array or into new memory. Safe to share between threads. With ``chunk_rows`` (every torchport
    graph answers each row on its own), batches of more than ``chunk_from`` rows run chunk by chunk, each
    checked and run while it is in cache, into memory from ``answers``; with ``workers`` > 1 the chunks are
    taken one at a time by the calling thread and ``workers - 1`` helper threads (the session is then a
    one-thread one), so a core busy with other work simply takes fewer chunks."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str, n_targets: int,
                 chunk_rows: int | None = None, chunk_from: int = 0, workers: int = 1,
                 dtype: np.dtype = np.dtype(np.float32)):
        self.session, self.n_targets = session, n_targets
        self.chunk_rows, self.chunk_from = chunk_rows, max(chunk_from, chunk_rows or 0)
        self.answers = Answers(dtype=dtype) if chunk_rows else None
        self.workers = max(1, workers) if chunk_rows else 1
        self._helpers: ThreadPoolExecutor | None = None
        self._helpers_lock = threading.Lock()
        self._run_whole = array_runner(session, input_name, output_name)

    def run(self, matrix: np.ndarray, out: np.ndarray | None = None,
            check: Callable[[np.ndarray, int], None] | None = None) -> np.ndarray:
        """The model's answer for ``matrix`` (the session's dtype, C-contiguous), written into ``out`` when given.
        ``check(rows, first_row)`` sees every row before it is run and may raise; in chunks, rows of
        earlier chunks are then already written into ``out``. Without ``out`` an unchunked answer is
        memory ONNX Runtime allocates, which the returned array owns until it is freed (as a plain ``run``
        does); on a session with the arena it is reused across calls, so large answers cost no fresh page
        faults, and a chunked answer is memory from ``answers``, reused in the same way."""
        rows, step = matrix.shape[0], self.chunk_rows
        if step is None or rows <= self.chunk_from:
            if check is not None:
                check(matrix, 0)
            return self._run_whole(matrix, out)
        if out is None:
            out = self.answers.new(rows, self.n_targets)
        if self.workers > 1:
            return self._run_shared(matrix, out, check)
        for start in range(0, rows, step):
            part = matrix[start:start + step]
            if check is not None:
                check(part, start)
            self._run_whole(part, out[start:start + step])
        return out

    def _run_shared(self, matrix: np.ndarray, out: np.ndarray,
                    check: Callable[[np.ndarray, int], None] | None) -> np.ndarray:
        """The chunks of ``matrix`` shared out between this thread and the helpers, each taking the next
        chunk when it is done with its last. A refused chunk stops the others; the error raised is that of
        the first bad row (rows before the first refused chunk are checked again here)."""
        rows, step = matrix.shape[0], self.chunk_rows
        starts = iter(range(0, rows, step))
        lock, failed = threading.Lock(), []

        def work() -> None:
            while not failed:
                with lock:
                    start = next(starts, None)
                if start is None:
                    return
                part = matrix[start:start + step]
                try:
                    if check is not None:
                        check(part, start)
                    self._run_whole(part, out[start:start + step])
                except BaseException as e:  # re-raised in the calling thread below
                    failed.append((start, e))
                    return

        helpers = self._pool()
        pending = [helpers.submit(work) for _ in range(min(self.workers, -(-rows // step)) - 1)]
        work()
        for future in pending:
            if not future.cancel():
                future.result()
        if failed:
            start, error = min(failed, key=lambda f: f[0])
            if check is not None and start:
                check(matrix[:start], 0)
            raise error
        return out

    def _pool(self) -> ThreadPoolExecutor:
        """The helper threads, started on the first shared run."""
        with self._helpers_lock:
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="torchport-chunks")
            return self._helpers


class Slots:
    """Pools of slots for small batches, keyed by input shape (rows, n_features), so that finding a pool
    stands for the shape check. A slot is ``(inp, cell, run, result, copy_out)``: the input buffer, a float
    memoryview of it when it holds one value (else None), its bound run, the output buffer and its ``copy``
    method. Take one with ``pool.pop()`` and give it back with ``pool.append(slot)``: both are atomic, so no
    two runs ever share a slot, and no lock or thread-local lookup is paid per call."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str, n_features: int,
                 n_targets: int, dtype: np.dtype = np.dtype(np.float32)):
        self.session, self.input_name, self.output_name = session, input_name, output_name
        self.n_features, self.n_targets, self.dtype = n_features, n_targets, np.dtype(dtype)
        self.pools: dict[tuple[int, int], list[tuple]] = {}

    def pool(self, rows: int) -> list[tuple] | None:
        """The pool for ``rows`` rows, made (empty) on first use; None for more than SLOT_ROWS rows once
        MAX_POOLS pools exist (the batch then runs zero-copy)."""
        key = (rows, self.n_features)
        pool = self.pools.get(key)
        if pool is None and (rows <= SLOT_ROWS or len(self.pools) < MAX_POOLS):
            pool = self.pools.setdefault(key, [])
        return pool

    def new(self, rows: int) -> tuple:
        """A fresh slot for ``rows`` rows, for a caller that found its pool empty."""
        inp = np.zeros((rows, self.n_features), dtype=self.dtype)
        out = np.zeros((rows, self.n_targets), dtype=self.dtype)
        cell = memoryview(inp).cast("B").cast(self.dtype.char) if inp.size == 1 else None
        run = bound_run(self.session, self.input_name, self.output_name, inp, out)
        return inp, cell, run, out, out.copy
