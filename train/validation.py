"""The Regressor's input checks: X and y become float64 arrays of finite real numbers, or are refused in
torchport's errors with the words scikit-learn uses (its users, and its estimator checks, look for them).
scikit-learn itself is never imported here."""
from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

from torchport.train.errors import DataError, DataTypeError, NotFittedError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_is_fitted(estimator: Any) -> None:
    """Raise NotFittedError unless ``estimator.__sklearn_is_fitted__()``."""
    if not estimator.__sklearn_is_fitted__():
        raise not_fitted_class()(f"this {type(estimator).__name__} is not fitted yet; call fit(X, y) first")


def not_fitted_class() -> type[NotFittedError]:
    """NotFittedError, which also is scikit-learn's NotFittedError once scikit-learn is loaded: code that
    catches scikit-learn's class has imported it, so it catches ours, and train never imports it."""
    theirs = getattr(sys.modules.get("sklearn.exceptions"), "NotFittedError", None)
    return NotFittedError if not isinstance(theirs, type) else _joined(theirs)


@functools.cache
def _joined(theirs: type) -> type[NotFittedError]:
    """A NotFittedError that is also ``theirs``; pickled as the class the unpickling process would raise."""
    return type("NotFittedError", (NotFittedError, theirs), {"__module__": __name__, "__reduce__": _reduce})


def _reduce(error: NotFittedError) -> tuple:
    return _rebuild, (error.message,), error.__dict__


def _rebuild(message: str) -> NotFittedError:
    return not_fitted_class()(message)


def features(X: Any, n_features: int | None = None, float32: bool = False) -> np.ndarray:
    """X as a C-contiguous, writable float64 (rows, features) array of finite numbers (within float32's range
    with ``float32``), with ``n_features`` columns when given; DataError otherwise."""
    a = _real_array(X, "X")
    if a.ndim == 1:
        raise DataError(f"X must have shape (rows, features); got shape {a.shape}. Reshape your data: "
                        "X.reshape(-1, 1) if it is one feature, X.reshape(1, -1) if it is one row", parameter="X")
    if a.ndim != 2:
        raise DataError(f"X must have shape (rows, features); got shape {a.shape}", parameter="X")
    if n_features is not None and a.shape[1] != n_features:
        raise DataError(f"X has {a.shape[1]} features, but Regressor is expecting {n_features} features as input "
                        "(the columns fit was given, in the same order)", parameter="X")
    if a.shape[1] == 0:
        raise DataError(f"X has 0 feature(s) (shape={a.shape}) while a minimum of 1 is required; give at least one "
                        "feature column", parameter="X")
    _check_finite(a, "X", float32)
    return a


def is_dask_collection(value: Any) -> bool:
    """Whether ``value`` is a Dask collection (DataFrame, Series, Array), without importing Dask."""
    return type(value).__module__.split(".")[0] == "dask" and hasattr(value, "__dask_graph__")


def training_arrays(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """X (rows, features) and y (rows, targets) as float64 arrays of finite numbers within float32's range
    (training runs in float32), and whether y was 1-D; DataError otherwise."""
    X = features(X, float32=True)
    if len(X) == 0:
        raise DataError(f"X has 0 row(s) (shape={X.shape}) while a minimum of 1 is required; give at least one row",
                        parameter="X")
    if y is None:
        raise DataError("Regressor requires y to be passed, but the target y is None; call fit(X, y) with the "
                        "targets", parameter="y")
    y = _real_array(y, "y")
    one_d = y.ndim == 1
    if one_d:
        y = y.reshape(-1, 1)
    if y.ndim != 2:
        raise DataError(f"y must have shape (rows,) or (rows, targets); got shape {y.shape}", parameter="y")
    if len(X) != len(y):
        raise DataError(f"expected X of shape (rows, features) and y of shape (rows, targets) with the same number "
                        f"of rows; got X {X.shape} and y {y.shape}", parameter="y")
    if y.shape[1] == 0:
        raise DataError(f"y has 0 target(s) (shape={y.shape}) while a minimum of 1 is required; give at least one "
                        "target column", parameter="y")
    _check_finite(y, "y", True)
    return X, y, one_d


def _real_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a C-contiguous, writable float64 array of any shape; refused with scikit-learn's words
    when sparse or complex, with a TypeError when not numbers."""
    if type(values).__module__.startswith("scipy.sparse"):
        raise DataError(f"{name} is sparse ({type(values).__name__}), but the Regressor needs dense data; give "
                        f"{name}.toarray()", parameter=name)
    try:
        a = np.asarray(values)
    except (TypeError, ValueError) as e:  # ragged rows
        raise DataError(f"{name} must be numbers in a rectangular array ({e})", parameter=name) from None
    if a.dtype.kind == "c":
        raise DataTypeError(f"Complex data not supported: {name} holds complex numbers ({a.dtype}); give real "
                            "numbers", parameter=name)
    try:
        out = np.ascontiguousarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataTypeError(f"{name} must be real numbers ({e})", parameter=name) from None
    return out if out.flags.writeable else out.copy()  # torch warns on read-only arrays (joblib's memmaps)


def _check_finite(a: np.ndarray, name: str, float32: bool) -> None:
    """DataError naming the first value that is NaN or infinite (or, with ``float32``, beyond its range)."""
    ok = np.abs(a) <= FLOAT32_MAX if float32 else np.isfinite(a)
    if ok.all():
        return
    row, column = (int(i) for i in np.argwhere(~ok)[0])
    value = a[row, column]
    what = "NaN" if np.isnan(value) else "inf" if value == np.inf else "-inf" if value == -np.inf else \
        f"{value:g} (beyond float32's largest, {FLOAT32_MAX:.4g})"
    raise DataError(f"{name}[{row}, {column}] is {what}, not a finite{' float32' if float32 else ''} number; clean or "
                    "drop that row", parameter=name)
