"""Regression metrics and the exact least-squares fit that SGD is compared against."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from torchport.runtime.jsonfields import Fields, as_lists, finite, finite_array, has_none
from torchport.train.lstsq import LeastSquaresFit, fit_least_squares


def _columns(values: Any) -> np.ndarray:
    """Values as a float64 (rows, targets) array."""
    a = np.asarray(values, np.float64)
    return a.reshape(len(a), -1)


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error over every element, in float64."""
    d = _columns(y_true) - _columns(y_pred)
    return float(np.mean(d * d))


def r2_undefined(y_true: np.ndarray, target_names: Sequence[str] | None = None) -> str | None:
    """Why R^2 is undefined for these targets (fewer than two rows, or a target that does not vary), or None."""
    yt = _columns(y_true)
    return r2_reason(len(yt), [bool(np.ptp(yt[:, j]) == 0) for j in range(yt.shape[1])], target_names)


def r2_reason(rows: int, constant: Sequence[bool], target_names: Sequence[str] | None = None) -> str | None:
    """``r2_undefined`` from the row count and which targets are constant (for rows it does not hold)."""
    if rows < 2:
        return f"R^2 needs at least two rows; there {'is' if rows == 1 else 'are'} {rows}"
    targets = len(constant)
    constant = [j for j, flat in enumerate(constant) if flat]
    if not constant:
        return None
    if targets == 1:
        return "the target is constant, so R^2 is undefined"
    names = ", ".join(target_names[j] if target_names else f"#{j + 1}" for j in constant)
    return f"the target(s) {names} are constant, so R^2 is undefined"


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, averaged uniformly over targets (as scikit-learn does); NaN where
    ``r2_undefined`` gives a reason (a constant target, fewer than two rows)."""
    yt, yp = _columns(y_true), _columns(y_pred)
    if r2_undefined(yt) is not None:
        return float("nan")
    ss_res = ((yt - yp) ** 2).sum(axis=0)
    ss_tot = ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - ss_res / ss_tot))


@dataclass(frozen=True)
class FitMetrics:
    """How well a fit answers on its data: MSE and R^2, and for a linear fit its weight (targets x features)
    and bias (targets) in raw units. A value that does not exist is None, with the reason in ``undefined``."""

    mse: float | None
    r2: float | None
    weight: tuple[tuple[float | None, ...], ...] | None = None
    bias: tuple[float | None, ...] | None = None
    undefined: dict[str, str] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("mse", "r2", "weight", "bias")  # the JSON object's order

    @classmethod
    def of(cls, y: np.ndarray, pred: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
           target_names: Sequence[str] | None = None) -> "FitMetrics":
        """The metrics of predictions ``pred`` for ``y``, with the fit's coefficients if it is linear."""
        return cls._made(mse(y, pred), lambda: r2_score(y, pred), r2_undefined(y, target_names), weight, bias)

    @classmethod
    def of_sums(cls, rows: int, residual_ss: np.ndarray, total_ss: np.ndarray, constant: Sequence[bool],
                weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                target_names: Sequence[str] | None = None) -> "FitMetrics":
        """The metrics from per-target sums over rows not held: residual and total (about the mean) sums of
        squares, and which targets are constant."""
        residual_ss, total_ss = np.asarray(residual_ss, np.float64), np.asarray(total_ss, np.float64)
        reason = r2_reason(rows, constant, target_names)
        return cls._made(float(residual_ss.sum() / (rows * len(residual_ss))),
                         lambda: float(np.mean(1.0 - residual_ss / total_ss)), reason, weight, bias)

    @classmethod
    def _made(cls, mse_value: float, r2: Callable[[], float], reason: str | None, weight: np.ndarray | None,
              bias: np.ndarray | None) -> "FitMetrics":
        """The metrics from the MSE, R^2 (computed only where defined) and the coefficients."""
        undefined: dict[str, str] = {}
        w = None if weight is None else finite_array(np.asarray(weight).reshape(np.shape(weight)[0], -1))
        b = None if bias is None else finite_array(np.asarray(bias).reshape(-1))
        if (w is not None and has_none(w)) or (b is not None and has_none(b)):
            undefined["weight"] = undefined["bias"] = "the coefficients are not finite in float64"
            w = b = None
        if reason:
            undefined["r2"] = reason
        values = {"mse": finite(mse_value), "r2": None if reason else finite(r2())}
        for name, value in values.items():
            if value is None:
                undefined.setdefault(name, "not a finite number in float64")
        return cls(values["mse"], values["r2"], w, b, undefined)

    def to_json(self) -> dict:
        values = {"mse": finite(self.mse), "r2": finite(self.r2), "weight": as_lists(self.weight),
                  "bias": as_lists(self.bias)}
        return {**{key: values[key] for key in self.KEYS}, "undefined": dict(self.undefined)}

    @classmethod
    def from_json(cls, obj: Any, where: str = "metrics") -> "FitMetrics":
        f = Fields(obj, where)
        return cls(f.number("mse"), f.number("r2"), f.numbers("weight", 2, optional=True),
                   f.numbers("bias", optional=True), f.reasons())


@dataclass(frozen=True)
class LeastSquares(FitMetrics):
    """The ordinary least-squares fit (with an intercept, or none: then the bias is zero) in float64
    (``exact_least_squares``)."""

    KEYS: ClassVar[tuple[str, ...]] = ("weight", "bias", "mse", "r2")

    @classmethod
    def from_json(cls, obj: Any, where: str = "exact_least_squares") -> "LeastSquares":
        return super().from_json(obj, where)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The fit's predictions (rows, targets) for raw features ``X``, in float64."""
        w, b = np.asarray(self.weight, np.float64), np.asarray(self.bias, np.float64)
        return np.asarray(X, np.float64) @ w.T + b


def least_squares_coefficients(X: np.ndarray, y: np.ndarray,
                               fit_intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weight (targets x features) and bias (targets; zeros without an intercept) of ordinary least squares in
    float64, from the least-squares core (train/lstsq.py: QR with refinement in double-double)."""
    fit = fit_least_squares(X, y, fit_intercept, covariance=False)
    return fit.coef, fit.intercept


def exact_least_squares(X: np.ndarray, y: np.ndarray, target_names: Sequence[str] | None = None,
                        fit_intercept: bool = True, fit: LeastSquaresFit | None = None) -> LeastSquares:
    """The exact ordinary least-squares fit in float64 (with an intercept unless ``fit_intercept`` is False):
    the optimum that full-batch SGD on MSE converges to. ``fit``: the core's fit of these rows, where the
    caller has it already. R^2 is scikit-learn's (about the mean), as for every other fit's metrics."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(len(X), -1)
    if fit is None:
        fit = fit_least_squares(X, y, fit_intercept, covariance=False)
    return LeastSquares.of(y, fit.predict(X), fit.coef, fit.intercept, target_names)
