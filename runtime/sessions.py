"""ONNX Runtime session options: the one place torchport builds them."""
from __future__ import annotations

import onnxruntime as ort


def session_options(intra_op_threads: int | None = None, *, tuned: bool = True, arena: bool = False,
                    spin: bool = False) -> ort.SessionOptions:
    """Options for one session. ``tuned=False`` is ONNX Runtime's defaults (with the thread count when
    given): what an app that loads the file itself runs. Tuned: sequential execution, full graph
    optimisation, threads that sleep instead of spinning between runs unless ``spin`` (a spinning thread
    takes a core from the next run, the Predictor's own helper threads and other processes alike, but wakes
    at once for each parallel part of a run: docs/hot-path.md), and for one thread no memory-pattern
    lookup and no arena (its allocations are small; malloc serves them quicker) unless ``arena``: an MLP's
    intermediates are large enough that reusing them beats malloc; more threads keep the arena, which
    reuses the pages of large answers."""
    so = ort.SessionOptions()
    if intra_op_threads is not None:
        so.intra_op_num_threads = intra_op_threads
    if not tuned:
        return so
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if intra_op_threads == 1:
        so.enable_mem_pattern = arena
        so.enable_cpu_mem_arena = arena
    return so
