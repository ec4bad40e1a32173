"""The machine's limit beside every figure: the float32 matrix-product rate of a large square matmul in
numpy (its BLAS, at the run's thread count), measured in the same run as the figures it is set against,
and the arithmetic a model does per row, so that a backend's rows/s reads as FLOP/s and as a share of it."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from torchport.runtime.jsonfields import INT, NUMBER, Flat

PEAK_SIZE = 2048  # n of the n x n @ n x n float32 product: large enough for the BLAS to reach its rate


@dataclass(frozen=True)
class MatmulPeak(Flat):
    """The best and median FLOP/s of ``calls`` float32 ``size`` x ``size`` matmuls at ``threads`` threads."""
    flops_per_s: float
    median_flops_per_s: float
    size: int
    threads: int
    calls: int

    SCHEMA = {"flops_per_s": NUMBER, "median_flops_per_s": NUMBER, "size": INT, "threads": INT, "calls": INT}

    def merged(self, other: "MatmulPeak") -> "MatmulPeak":
        """The two measurements (before and after a run) as one: the best of both, the mean of the medians."""
        return MatmulPeak(max(self.flops_per_s, other.flops_per_s),
                          (self.median_flops_per_s + other.median_flops_per_s) / 2, self.size, self.threads,
                          self.calls + other.calls)


def matmul_peak(threads: int, size: int = PEAK_SIZE, calls: int = 5) -> MatmulPeak:
    """numpy's float32 ``size``-square matmul rate with its BLAS limited to ``threads`` threads (where
    threadpoolctl is installed; else the BLAS's own count), after one warm-up product."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.empty_like(a)
    try:
        import threadpoolctl
        limits = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        limits = None
    try:
        np.matmul(a, a, out=b)
        seconds = []
        for _ in range(calls):
            t0 = time.perf_counter()
            np.matmul(a, a, out=b)
            seconds.append(time.perf_counter() - t0)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    flops = 2.0 * size ** 3
    return MatmulPeak(flops / min(seconds), flops / float(np.median(seconds)), size, threads, calls)
