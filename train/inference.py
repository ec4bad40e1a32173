"""Inference for a linear model: the exact least-squares fit with standard errors, t statistics, p-values and
confidence intervals, R^2, adjusted R^2 and the F test, computed by statsmodels' OLS in float64. It is
what the seed says a neural network does not give: the significance of the regression parameters."""
from __future__ import annotations

import math

import numpy as np

INTERCEPT = "(intercept)"


class InferenceUnavailable(ValueError):
    """The data cannot support the inference (too few rows, collinear features): the message says why."""


def _number(value) -> float | None:
    """A JSON-safe float: NaN and infinities (a perfect fit, a constant target) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def ols_inference(X: np.ndarray, y: np.ndarray, feature_names: list[str], target_names: list[str],
                  confidence: float = 0.95) -> dict:
    """One OLS fit with an intercept per target column; a JSON-able record of the coefficient table and the
    fit statistics. Raises InferenceUnavailable when there are no residual degrees of freedom or the
    features are collinear."""
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
        coefficients = [
            {"term": term, "estimate": _number(fit.params[i]), "std_error": _number(fit.bse[i]),
             "t": _number(fit.tvalues[i]), "p": _number(fit.pvalues[i]),
             "ci_low": _number(ci[i, 0]), "ci_high": _number(ci[i, 1])}
            for i, term in enumerate([INTERCEPT, *feature_names])
        ]
        targets.append({
            "target": target, "n": int(fit.nobs), "df_model": int(fit.df_model), "df_resid": int(fit.df_resid),
            "coefficients": coefficients, "r2": _number(fit.rsquared), "adj_r2": _number(fit.rsquared_adj),
            "f": _number(fit.fvalue), "f_p": _number(fit.f_pvalue), "residual_se": _number(math.sqrt(fit.scale)),
        })
    return {"method": "ordinary least squares with intercept, float64",
            "library": f"statsmodels {statsmodels.__version__}", "confidence": confidence,
            "features": list(feature_names), "targets": targets}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 2e-16" if value < 2e-16 else f"{value:.4g}"


def format_inference(record: dict) -> str:
    """The inference record as text, one coefficient table per target (in the manner of R's summary.lm)."""
    level = f"{record['confidence'] * 100:g}%"
    width = max(12, *(len(name) for name in [INTERCEPT, *record["features"]])) + 2
    lines = []
    for t in record["targets"]:
        lines.append(f"least-squares inference for {t['target']} ~ {' + '.join(record['features'])} "
                     f"({record['library']}, n = {t['n']}):")
        lines.append(f"{'':<{width}}{'estimate':>12}{'std error':>12}{'t':>10}{'p':>11}   {level} confidence interval")
        for c in t["coefficients"]:
            lines.append(f"{c['term']:<{width}}{_fmt(c['estimate'], '.6g'):>12}{_fmt(c['std_error'], '.6g'):>12}"
                         f"{_fmt(c['t'], '.4g'):>10}{_p(c['p']):>11}   "
                         f"[{_fmt(c['ci_low'], '.6g')}, {_fmt(c['ci_high'], '.6g')}]")
        lines.append(f"residual standard error {_fmt(t['residual_se'], '.6g')} on {t['df_resid']} degrees of freedom; "
                     f"R^2 {_fmt(t['r2'], '.5f')}, adjusted R^2 {_fmt(t['adj_r2'], '.5f')}")
        lines.append(f"F {_fmt(t['f'], '.6g')} on {t['df_model']} and {t['df_resid']} DF, p {_p(t['f_p'])}")
    return "\n".join(lines)
