"""The exact least-squares fit of a Dask DataFrame or Array, reduced where it lives: each partition's rows become
a TSQR reduction (train/tsqr.py) on the worker that holds them, and the reductions merge pairwise in a tree,
so the client receives one (features + targets + 1)-square R factor, never the rows."""
from __future__ import annotations

from typing import Any

import numpy as np

from torchport.runtime.errors import DataError
from torchport.train.tsqr import Reduction
from torchport.train.validation import FLOAT32_MAX



def _is_frame(collection: Any) -> bool:
    """A Dask DataFrame or Series (as opposed to an Array)."""
    return hasattr(collection, "columns") or hasattr(collection, "to_frame")


def _aligned_parts(X: Any, y: Any) -> tuple[list, int, int, bool]:
    """Each partition's rows of X and y together as one delayed object (a DataFrame with y's columns last, or
    a (rows, features + targets) array), and the feature and target counts and whether y is 1-D. Columns
    taken from one DataFrame may be partitioned differently by Dask, so they are put side by side first."""
    if _is_frame(X) and _is_frame(y):
        if not hasattr(X, "columns") or getattr(X, "ndim", 2) != 2:
            raise DataError("X must be a Dask DataFrame (or Array), not a Series", parameter="X")
        one_d = getattr(y, "ndim", 2) == 1
        targets = [y] if one_d else [y[c] for c in y.columns]
        names = {f"__torchport_y{j}": column for j, column in enumerate(targets)}
        return list(X.assign(**names).to_delayed()), len(X.columns), len(targets), one_d
    if hasattr(X, "chunks") and hasattr(y, "chunks"):
        if X.ndim != 2 or y.ndim not in (1, 2):
            raise DataError(f"X must be a 2-D Dask Array and y a 1-D or 2-D one; got {X.ndim} and {y.ndim} "
                            "dimensions", parameter="X")
        import dask.array as da
        X = X.rechunk({1: -1})
        y2 = (y[:, None] if y.ndim == 1 else y).rechunk({0: X.chunks[0], 1: -1})
        both = da.concatenate([X, y2], axis=1).rechunk({1: -1})
        return list(both.to_delayed()[:, 0]), int(X.shape[1]), int(y2.shape[1]), y.ndim == 1
    raise DataError(f"X is a {type(X).__name__} and y a {type(y).__name__}; give both as Dask DataFrames "
                    "(y a Series or DataFrame) or both as Dask Arrays", parameter="y")


def _reduce_partition(part: Any, n_features: int, n_targets: int, fit_intercept: bool) -> Reduction:
    """One partition's reduction (on the worker that holds it); DataError for values training cannot use."""
    values = np.asarray(part, dtype=np.float64).reshape(-1, n_features + n_targets)
    Xa, ya = values[:, :n_features], values[:, n_features:]
    for block, name in ((Xa, "X"), (ya, "y")):
        if not np.all(np.isfinite(block)):
            raise DataError(f"{name} holds NaN or infinite values in a partition; clean or drop those rows",
                            parameter=name)
    if np.any(np.abs(Xa) > FLOAT32_MAX):
        raise DataError("X holds values beyond float32's range, which the model computes in", parameter="X")
    return Reduction(n_features, n_targets, fit_intercept).add(Xa, ya)


def _merge(a: Reduction, b: Reduction) -> Reduction:
    return a.merge(b)


def reduce_dask(X: Any, y: Any, fit_intercept: bool = True) -> tuple[Reduction, bool]:
    """The TSQR reduction of a Dask X (DataFrame or Array) and y (Series or DataFrame of the same rows, or an
    Array), computed on the workers; returns it and whether y is 1-D."""
    import dask

    partitions, n_features, n_targets, one_d = _aligned_parts(X, y)
    if not partitions:
        raise DataError("X has no partitions", parameter="X")
    parts = [dask.delayed(_reduce_partition)(part, n_features, n_targets, fit_intercept) for part in partitions]
    while len(parts) > 1:
        pairs = [dask.delayed(_merge)(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
    reduction = parts[0].compute()
    if reduction.rows == 0:
        raise DataError("X has 0 rows while a minimum of 1 is required", parameter="X")
    return reduction, one_d
