"""Inference for a linear model: the exact least-squares fit with standard errors, t statistics, p-values and
confidence intervals, R^2, adjusted R^2 and the F test, computed by statsmodels' OLS in float64. It is
what the seed says a neural network does not give: the significance of the regression parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from torchport.runtime.errors import DataError
from torchport.runtime.jsonfields import Fields, finite

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
    """The least-squares inference of a dataset: how it was computed, and one table per target."""

    method: str
    library: str
    confidence: float
    features: tuple[str, ...]
    targets: tuple[TargetInference, ...]

    def to_json(self) -> dict:
        return {"method": self.method, "library": self.library, "confidence": self.confidence,
                "features": list(self.features), "targets": [t.to_json() for t in self.targets]}

    @classmethod
    def from_json(cls, obj: Any, where: str = "inference") -> "Inference":
        f = Fields(obj, where)
        targets = tuple(TargetInference.from_json(t, f"{where}.targets[{i}]")
                        for i, t in enumerate(f.get("targets", list)))
        return cls(f.get("method", str), f.get("library", str), f.get("confidence", float), f.strings("features"),
                   targets)


def ols_inference(X: np.ndarray, y: np.ndarray, feature_names: Sequence[str], target_names: Sequence[str],
                  confidence: float = 0.95) -> Inference:
    """One OLS fit with an intercept per target column: the coefficient table and the fit statistics.
    Raises InferenceUnavailable when there are no residual degrees of freedom, the features are collinear or
    a target is constant."""
    import statsmodels
    import statsmodels.api as sm

    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(len(X), -1)
    n, p = X.shape
    if n <= p + 1:
        raise InferenceUnavailable(f"{n} rows cannot give standard errors for {p + 1} coefficients "
                                   f"(features and intercept): it needs at least {p + 2} rows")
    A = sm.add_constant(X, has_constant="add")
    rank = np.linalg.matrix_rank(A)
    if rank < p + 1:
        raise InferenceUnavailable(f"the features {', '.join(feature_names)} and the intercept are collinear "
                                   f"(rank {rank} of {p + 1}): drop a redundant feature")
    alpha = 1.0 - confidence
    targets = []
    for j, target in enumerate(target_names):
        if np.ptp(y[:, j]) == 0:
            raise InferenceUnavailable(f"the target {target} is constant: R^2 and the F test are undefined")
        fit = sm.OLS(y[:, j], A).fit()
        ci = fit.conf_int(alpha=alpha)
        coefficients = tuple(
            Coefficient(term, finite(fit.params[i]), finite(fit.bse[i]), finite(fit.tvalues[i]),
                        finite(fit.pvalues[i]), finite(ci[i, 0]), finite(ci[i, 1]))
            for i, term in enumerate([INTERCEPT, *feature_names]))
        targets.append(TargetInference(
            target, int(fit.nobs), int(fit.df_model), int(fit.df_resid), coefficients, finite(fit.rsquared),
            finite(fit.rsquared_adj), finite(fit.fvalue), finite(fit.f_pvalue), finite(math.sqrt(fit.scale))))
    return Inference("ordinary least squares with intercept, float64", f"statsmodels {statsmodels.__version__}",
                     confidence, tuple(feature_names), tuple(targets))


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
    for t in inference.targets:
        lines.append(f"least-squares inference for {t.target} ~ {' + '.join(inference.features)} "
                     f"({inference.library}, n = {t.n}):")
        lines.append(f"{'':<{width}}{'estimate':>12}{'std error':>12}{'t':>10}{'p':>11}   {level} confidence interval")
        for c in t.coefficients:
            lines.append(f"{c.term:<{width}}{_fmt(c.estimate, '.6g'):>12}{_fmt(c.std_error, '.6g'):>12}"
                         f"{_fmt(c.t, '.4g'):>10}{_p(c.p):>11}   [{_fmt(c.ci_low, '.6g')}, {_fmt(c.ci_high, '.6g')}]")
        lines.append(f"residual standard error {_fmt(t.residual_se, '.6g')} on {t.df_resid} degrees of freedom; "
                     f"R^2 {_fmt(t.r2, '.5f')}, adjusted R^2 {_fmt(t.adj_r2, '.5f')}")
        lines.append(f"F {_fmt(t.f, '.6g')} on {t.df_model} and {t.df_resid} DF, p {_p(t.f_p)}")
    return "\n".join(lines)
