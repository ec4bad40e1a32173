"""Precision chosen by the data: the exported model is held to the float64 fit on the training rows, not only
to its own float64 run. Where the float32 model (float32 inputs, weights and arithmetic) answers further from
the float64 fit than max(1e-3 x the residual standard error, 1e-7 x the largest |y|), the bundle is written
in float64 (inputs, weights and arithmetic); where the float64 model cannot hold it either, nothing is
written. The float64 fit is a linear model's exact least-squares estimates (``coef_``, ``intercept_``), or
for an iterative fit the trained module run in float64 on the float64 rows."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchport.runtime.bundle import Precision
from torchport.runtime.errors import DataError
from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor

RSE_SHARE = 1e-3  # of the residual standard error
Y_SHARE = 1e-7    # of the largest |y|: the floor for a fit that is (nearly) exact
ROWS = 100_000    # rows held to the fit at most (evenly spread over the training rows)


class PrecisionError(DataError):
    """Not even a float64 model holds the float64 fit on the training rows: nothing is published."""


def _exact(reg: Regressor) -> bool:
    return reg.spec_.kind == "linear" and reg.optimizer_ == "exact"


def reference_answers(reg: Regressor, X: np.ndarray) -> tuple[np.ndarray, str]:
    """The float64 fit's answers on ``X`` (rows, targets), and what that fit is in words: X @ coef_.T +
    intercept_ for an exact linear fit (summed in extended precision), else the trained module run in
    float64."""
    if _exact(reg):  # evaluated in extended precision (80-bit on x86-64), so that its own rounding stays out
        wide = np.longdouble
        answers = X.astype(wide) @ reg.coef_.T.astype(wide) + reg.intercept_.astype(wide)[None, :]
        return answers.astype(np.float64), "the float64 least-squares estimates (coef_, intercept_)"
    return _run(reg.float64_module(), X, torch.float64), "the trained module run in float64"


def fit_bound(reg: Regressor, y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per target, max(RSE_SHARE x the residual standard error, Y_SHARE x the largest |y|); the residual
    standard error on n - p degrees of freedom for a linear model (p: features plus the intercept), on n
    rows for an MLP (or when n <= p)."""
    n = len(y)
    p = reg.spec_.n_features + int(reg.fit_intercept) if reg.spec_.kind == "linear" else 0
    dof = n - p if n > p else n
    rse = np.sqrt(((y - reference) ** 2).sum(axis=0) / max(dof, 1))
    return np.maximum(RSE_SHARE * rse, Y_SHARE * np.abs(y).max(axis=0, initial=0.0))


def _run(module: nn.Module, X: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(X)).to(dtype))
    return out.double().numpy().reshape(len(X), -1)


def _errors(answers: np.ndarray, reference: np.ndarray) -> tuple[float, ...]:
    """The largest |answer - reference| per target (NaN counts as infinitely far)."""
    diff = np.abs(answers - reference)
    return tuple(float(v) for v in np.where(np.isnan(diff), np.inf, diff).max(axis=0, initial=0.0))


def _g(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def choose_precision(reg: Regressor, data: Dataset) -> tuple[nn.Module, Precision]:
    """The module to export (``reg.module_`` itself in float32, or its float64 copy) and the Precision record
    saying which and why; PrecisionError when neither holds the float64 fit on the training rows."""
    X, y = np.asarray(data.X, np.float64), np.asarray(data.y, np.float64).reshape(len(data.X), -1)
    if len(X) > ROWS:
        rows = np.linspace(0, len(X) - 1, ROWS).round().astype(int)
        X, y = X[rows], y[rows]
    reference, what = reference_answers(reg, X)
    bound = tuple(float(b) for b in fit_bound(reg, y, reference))
    narrow = _errors(_run(reg.module_.eval(), X.astype(np.float32), torch.float32), reference)
    criterion = (f"the model's answers on {len(X)} training rows within max({RSE_SHARE:g} x the residual standard "
                 f"error, {Y_SHARE:g} x the largest |y|) = {_g(bound)} of {what}")
    if all(e <= b for e, b in zip(narrow, bound)):
        return reg.module_, Precision("float32", f"float32 holds the fit: {criterion}; float32 is off by at most "
                                      f"{_g(narrow)}", what, len(X), bound, narrow)
    module = reg.float64_module()
    wide = _errors(_run(module, X, torch.float64), reference)
    if not all(e <= b for e, b in zip(wide, bound)):
        raise PrecisionError(f"neither float32 nor float64 holds this fit: {criterion} is asked for, and float32 "
                             f"answers are off by up to {_g(narrow)}, float64 ones by up to {_g(wide)}; nothing was "
                             "written. Rescale or centre the features (for example subtract a large offset) so "
                             "that float64 can hold them", parameter="data")
    return module, Precision("float64", f"float32 cannot hold the fit: {criterion} is asked for, and float32 "
                             f"answers are off by up to {_g(narrow)}; float64 ones by up to {_g(wide)}", what,
                             len(X), bound, narrow, wide)
