"""Inference for a linear model: the exact least-squares fit with standard errors, t statistics, p-values and
confidence intervals, R^2, adjusted R^2 and the F test, from the least-squares core (train/lstsq.py, which
reaches NIST StRD's certified values) with scipy's t and F distributions, and counted as statsmodels' OLS
counts them (for a model without an intercept: the uncentred R^2, about zero, and the F test against the zero
model). It is what the seed says a neural network does not give: the significance of the regression
parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from torchport.runtime.errors import DataError
from torchport.runtime.jsonfields import Fields, finite
from torchport.train.lstsq import LeastSquaresFit, fit_least_squares

INTERCEPT = "(intercept)"


class InferenceUnavailable(DataError):
    """The data cannot support the inference (too few rows, collinear features): the message says why."""


@dataclass(frozen=True)
class Coefficient:
    """One row of the coefficient table: the estimate, its standard error, t, the two-sided p-value and the
    confidence interval (None where the number does not exist, as for the standard error of a perfect fit)."""

    term: str
    estimate: float | None
    std_error: float | None
    t: float | None
    p: float | None
    ci_low: float | None
    ci_high: float | None

    NUMBERS: ClassVar[tuple[str, ...]] = ("estimate", "std_error", "t", "p", "ci_low", "ci_high")

    def to_json(self) -> dict:
        return {"term": self.term, **{k: finite(getattr(self, k)) for k in self.NUMBERS}}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Coefficient":
        f = Fields(obj, where)
        return cls(f.get("term", str), *(f.number(k) for k in cls.NUMBERS))


@dataclass(frozen=True)
class TargetInference:
    """The OLS fit of one target: its coefficient table and the fit statistics."""

    target: str
    n: int
    df_model: int
    df_resid: int
    coefficients: tuple[Coefficient, ...]
    r2: float | None
    adj_r2: float | None
    f: float | None
    f_p: float | None
    residual_se: float | None

    NUMBERS: ClassVar[tuple[str, ...]] = ("r2", "adj_r2", "f", "f_p", "residual_se")

    def to_json(self) -> dict:
        return {"target": self.target, "n": self.n, "df_model": self.df_model, "df_resid": self.df_resid,
                "coefficients": [c.to_json() for c in self.coefficients],
                **{k: finite(getattr(self, k)) for k in self.NUMBERS}}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "TargetInference":
        f = Fields(obj, where)
        coefficients = tuple(Coefficient.from_json(c, f"{where}.coefficients[{i}]")
                             for i, c in enumerate(f.get("coefficients", list)))
        return cls(f.get("target", str), f.get("n", int), f.get("df_model", int), f.get("df_resid", int),
                   coefficients, *(f.number(k) for k in cls.NUMBERS))


@dataclass(frozen=True)
class Inference:
    """The least-squares inference of a dataset: how it was computed, and one table per target.
    ``fit_intercept`` False: a model without an intercept, whose R^2 is the uncentred one, about zero (records
    from before it was kept read as True)."""

    method: str
    library: str
    confidence: float
    features: tuple[str, ...]
    targets: tuple[TargetInference, ...]
    fit_intercept: bool = True

    def to_json(self) -> dict:
        return {"method": self.method, "library": self.library, "confidence": self.confidence,
                "fit_intercept": self.fit_intercept, "features": list(self.features),
                "targets": [t.to_json() for t in self.targets]}

    @classmethod
    def from_json(cls, obj: Any, where: str = "inference") -> "Inference":
        f = Fields(obj, where)
        targets = tuple(TargetInference.from_json(t, f"{where}.targets[{i}]")
                        for i, t in enumerate(f.get("targets", list)))
        intercept = f.get("fit_intercept", bool, optional=True)
        return cls(f.get("method", str), f.get("library", str), f.get("confidence", float), f.strings("features"),
                   targets, True if intercept is None else intercept)


def ols_inference(X: np.ndarray, y: np.ndarray, feature_names: Sequence[str], target_names: Sequence[str],
                  confidence: float = 0.95, fit_intercept: bool = True,
                  fit: LeastSquaresFit | None = None) -> Inference:
    """One OLS fit per target column (with an intercept unless ``fit_intercept`` is False): the coefficient
    table and the fit statistics. ``fit``: the core's fit of these rows with its covariance, where the caller
    has it. Raises InferenceUnavailable when there are no residual degrees of freedom, the features are
    collinear (decided on centred, scaled columns: an offset is not collinearity) or a target is constant
    (zero throughout, without an intercept)."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(len(X), -1)
    n, p = X.shape
    _check_rows(n, p + int(fit_intercept), fit_intercept)
    if fit is None:
        fit = fit_least_squares(X, y, fit_intercept)
    low, high = (y.min(axis=0), y.max(axis=0)) if n else (np.zeros(y.shape[1]), np.zeros(y.shape[1]))
    return inference_of(fit, feature_names, target_names, low, high, confidence)


def _check_rows(n: int, k: int, fit_intercept: bool) -> None:
    if n <= k:
        what = "features and intercept" if fit_intercept else "features"
        raise InferenceUnavailable(f"{n} rows cannot give standard errors for {k} coefficients ({what}): it "
                                   f"needs at least {k + 1} rows")


def inference_of(fit: LeastSquaresFit, feature_names: Sequence[str], target_names: Sequence[str],
                 y_min: np.ndarray, y_max: np.ndarray, confidence: float = 0.95) -> Inference:
    """The inference table of a least-squares fit with its covariance (of rows held or reduced), given each
    target's smallest and largest value; raises InferenceUnavailable as ``ols_inference`` does."""
    k = fit.n_params
    _check_rows(fit.n_rows, k, fit.fit_intercept)
    if not fit.full_rank or fit.covariance is None:
        names = ", ".join(feature_names)
        collinear = f"the features {names} and the intercept are" if fit.fit_intercept \
            else f"the features {names} are"
        raise InferenceUnavailable(f"{collinear} collinear (rank {fit.rank} of {k}): drop a redundant feature")
    for j, target in enumerate(target_names):
        if fit.fit_intercept and y_min[j] == y_max[j]:
            raise InferenceUnavailable(f"the target {target} is constant: R^2 and the F test are undefined")
        if not fit.fit_intercept and y_min[j] == 0 == y_max[j]:
            raise InferenceUnavailable(f"the target {target} is zero throughout: R^2 and the F test are undefined")
    terms = [INTERCEPT, *feature_names] if fit.fit_intercept else list(feature_names)
    targets = tuple(_target_table(fit, j, target, terms, confidence) for j, target in enumerate(target_names))
    import scipy
    return Inference(f"ordinary least squares {'with' if fit.fit_intercept else 'without'} intercept: "
                     f"{fit.method}", f"torchport.train.lstsq, scipy {scipy.__version__}", confidence,
                     tuple(feature_names), targets, fit.fit_intercept)


def _target_table(fit: LeastSquaresFit, j: int, target: str, terms: list[str], confidence: float) -> TargetInference:
    """One target's coefficient table and fit statistics, as statsmodels' OLS results count them."""
    from scipy import stats

    n, k = fit.n_rows, fit.n_params
    df_resid, df_model = n - k, k - int(fit.fit_intercept)
    ssr, tss = float(fit.residual_ss[j]), float(fit.total_ss[j])
    scale = ssr / df_resid
    estimates = fit.params[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(scale * np.diag(fit.covariance))
        t = estimates / se
        r2 = 1.0 - ssr / tss
        adj_r2 = 1.0 - (n - int(fit.fit_intercept)) / df_resid * (1.0 - r2)
        f = ((tss - ssr) / df_model) / scale if df_model else math.nan
    p = 2.0 * stats.t.sf(np.abs(t), df_resid)
    q = stats.t.ppf(0.5 + confidence / 2.0, df_resid)
    coefficients = tuple(Coefficient(term, finite(estimates[i]), finite(se[i]), finite(t[i]), finite(p[i]),
                                     finite(estimates[i] - q * se[i]), finite(estimates[i] + q * se[i]))
                         for i, term in enumerate(terms))
    f_p = float(stats.f.sf(f, df_model, df_resid)) if df_model and not math.isnan(f) else math.nan
    return TargetInference(target, n, df_model, df_resid, coefficients, finite(r2), finite(adj_r2), finite(f),
                           finite(f_p), finite(math.sqrt(scale)))


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 2e-16" if value < 2e-16 else f"{value:.4g}"


def format_inference(inference: Inference) -> str:
    """The inference as text, one coefficient table per target (in the manner of R's summary.lm)."""
    level = f"{inference.confidence * 100:g}%"
    width = max(12, *(len(name) for name in [INTERCEPT, *inference.features])) + 2
    lines = []
    model = " + ".join(inference.features) + ("" if inference.fit_intercept else ", no intercept")
    r2 = "R^2" if inference.fit_intercept else "uncentred R^2"
    for t in inference.targets:
        lines.append(f"least-squares inference for {t.target} ~ {model} ({inference.library}, n = {t.n}):")
        lines.append(f"{'':<{width}}{'estimate':>12}{'std error':>12}{'t':>10}{'p':>11}   {level} confidence interval")
        for c in t.coefficients:
            lines.append(f"{c.term:<{width}}{_fmt(c.estimate, '.6g'):>12}{_fmt(c.std_error, '.6g'):>12}"
                         f"{_fmt(c.t, '.4g'):>10}{_p(c.p):>11}   [{_fmt(c.ci_low, '.6g')}, {_fmt(c.ci_high, '.6g')}]")
        lines.append(f"residual standard error {_fmt(t.residual_se, '.6g')} on {t.df_resid} degrees of freedom; "
                     f"{r2} {_fmt(t.r2, '.5f')}, adjusted {r2} {_fmt(t.adj_r2, '.5f')}")
        lines.append(f"F {_fmt(t.f, '.6g')} on {t.df_model} and {t.df_resid} DF, p {_p(t.f_p)}")
    return "\n".join(lines)
