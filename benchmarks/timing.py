"""What the benchmark scripts share: timing candidates against each other in one run (interleaved rounds in
a new random order each round, each call timed on its own with the garbage collector off) and the folder
their results go to. Needs neither torch nor onnx."""
from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Callable

import numpy as np

# Where the scripts save their JSON (and Markdown) by default: relative to the current directory, so that
# run from the repository's root they land in benchmarks/results/ beside the reference runs.
RESULTS_DIR = Path("benchmarks", "results")


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, calls: int,
                seed: int = 0) -> dict[str, list[float]]:
    """Seconds of each call of every candidate: ``rounds`` rounds of ``calls`` calls each, the candidates in
    a new (seeded) random order every round, so that drift in the machine's load falls on all of them alike
    and none always runs right after the same other one (a session's thread pool still spins for a while
    after its run and slows whatever comes next on a small machine)."""
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    names = list(candidates)
    order = np.random.default_rng(seed)
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(rounds):
            for name in order.permutation(names):
                fn, out = candidates[name], samples[name]
                for _ in range(calls):
                    t0 = clock()
                    fn()
                    out.append((clock() - t0) / 1e9)
    finally:
        gc.enable()
    return samples


def rates(samples: dict[str, list[float]], rows: int) -> dict[str, float]:
    """Rows per second of each candidate at its median call of ``rows`` rows."""
    return {k: rows / float(np.median(v)) for k, v in samples.items()}
