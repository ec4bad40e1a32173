"""Prediction intervals and domain flags from what the bundle keeps (manifest field ``intervals``), with numpy
alone: exact t intervals for linear models (from a factor W of the exact fit's (X_c'X_c)^-1 and the residual
variance, as statsmodels' ``get_prediction(...).summary_frame`` gives them, centred on the exact fit's float64
answer where the model was solved exactly), split-conformal intervals for other models (from the sorted
absolute residuals of held-out calibration rows), and per row whether it lies outside what the model was
trained on, with the reason. The t quantile is computed here (the base install has no scipy): the
regularized incomplete beta function by its continued fraction, inverted by bisection."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from torchport.runtime.errors import BundleError, DataError, Fix, InputError
from torchport.runtime.jsonfields import FLAG, INT, NUMBER, TEXT, items, present, scalar, values

# A feature value further than this share of the training range beyond the range's ends is out of domain.
RANGE_MARGIN = 0.1
# A linear model's row is out of domain when its leverage x'(X'X)^-1 x exceeds the largest leverage of a
# training row (the data's hull, in the covariance's metric: "hidden extrapolation") by this relative slack,
# which absorbs float32 rounding of the inputs.
LEVERAGE_SLACK = 1e-6
# At most this many calibration rows are kept per target (a seeded random subset of more: still exchangeable
# with new rows, so the coverage guarantee holds with this n).
MAX_CALIBRATION_ROWS = 4096
KINDS = ("prediction", "mean")
T_METHOD, CONFORMAL_METHOD = "t", "conformal"
_RETRAIN = "retrain the model with this torchport (`torchport train ...`), which keeps what intervals need"


def _tuple(obj: Any, where: str) -> tuple[float, ...]:
    return items(obj, where, scalar(NUMBER))


@dataclass(frozen=True)
class Domain:
    """The training rows' range per feature, and for linear models the largest leverage among them
    (None where it was not measured)."""
    low: tuple[float, ...]
    high: tuple[float, ...]
    margin: float = RANGE_MARGIN
    max_leverage: float | None = None

    def to_json(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "margin": self.margin,
                "max_leverage": self.max_leverage}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Domain":
        v = values(obj, where, {"low": (list,), "high": (list,), "margin": NUMBER, "max_leverage": (*NUMBER,
                                                                                                      type(None))})
        return cls(_tuple(v["low"], f"{where}.low"), _tuple(v["high"], f"{where}.high"), v["margin"],
                   v["max_leverage"])


@dataclass(frozen=True)
class LinearIntervals:
    """What a linear model's t intervals need, in float64: the training rows' feature means, the rows and
    residual degrees of freedom, each target's residual variance (residual sum of squares / df), and the
    ``whitening`` factor W (features x features) of the exact fit: (X_c'X_c)^-1 = W W' for the centred
    training features X_c (uncentred without an intercept), from the inverse of its R factor, so that a row's
    leverage is a sum of squares and keeps its digits on ill-conditioned designs (NIST's Filip). For a model
    solved exactly, ``coef`` (targets x features) and ``intercept`` (targets) are its float64 estimates, on
    which its intervals are centred; None for any other fit (SGD's) and in bundles written before they were
    kept, whose intervals are centred on the model's own answer."""
    fit_intercept: bool
    n_rows: int
    df_resid: int
    mean: tuple[float, ...]
    whitening: tuple[tuple[float, ...], ...]
    residual_variance: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...] | None = None
    intercept: tuple[float, ...] | None = None

    def to_json(self) -> dict:
        exact = {} if self.coef is None else {"coef": [list(r) for r in self.coef], "intercept": list(self.intercept)}
        return {"fit_intercept": self.fit_intercept, "n_rows": self.n_rows, "df_resid": self.df_resid,
                "mean": list(self.mean), "whitening": [list(r) for r in self.whitening],
                "residual_variance": list(self.residual_variance), **exact}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "LinearIntervals":
        v = values(obj, where, {"fit_intercept": FLAG, "n_rows": INT, "df_resid": INT, "mean": (list,),
                                "whitening": (list,), "residual_variance": (list,)})
        exact = present(obj, where, {"coef": (list,), "intercept": (list,)})
        if len(exact) == 1:
            raise DataError(f"{where} must hold both 'coef' and 'intercept' (the exact fit's estimates) or neither")
        w = items(v["whitening"], f"{where}.whitening", _tuple)
        coef = items(exact["coef"], f"{where}.coef", _tuple) if exact else None
        intercept = _tuple(exact["intercept"], f"{where}.intercept") if exact else None
        return cls(v["fit_intercept"], v["n_rows"], v["df_resid"], _tuple(v["mean"], f"{where}.mean"), w,
                   _tuple(v["residual_variance"], f"{where}.residual_variance"), coef, intercept)

    def leverage(self, x: np.ndarray) -> np.ndarray:
        """x'(X'X)^-1 x per row (with the intercept's 1 in x): 1/n + |(x - mean) W|^2 with an intercept,
        |x W|^2 without."""
        w = np.asarray(self.whitening, np.float64)
        if self.fit_intercept:
            z = (x - np.asarray(self.mean, np.float64)) @ w
            return 1.0 / self.n_rows + np.einsum("ij,ij->i", z, z)
        z = x @ w
        return np.einsum("ij,ij->i", z, z)


@dataclass(frozen=True)
class ConformalIntervals:
    """Split-conformal intervals: per target, the absolute residuals |y - prediction| of the held-out
    calibration rows (``source``: which rows), sorted."""
    source: str
    scores: tuple[tuple[float, ...], ...]

    def to_json(self) -> dict:
        return {"source": self.source, "scores": [list(s) for s in self.scores]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ConformalIntervals":
        v = values(obj, where, {"source": TEXT, "scores": (list,)})
        return cls(v["source"], items(v["scores"], f"{where}.scores", _tuple))

    @property
    def rows(self) -> int:
        return len(self.scores[0]) if self.scores else 0

    def half_width(self, level: float) -> np.ndarray:
        """Per target, the ceil((n + 1) level)-th smallest score: with n exchangeable calibration rows, a new
        row's interval covers it with probability >= level."""
        n = self.rows
        k = math.ceil((n + 1) * level - 1e-9)
        if k > n:
            needed = math.ceil(level / (1 - level))
            raise InputError(f"a {level:g} conformal interval needs at least {needed} calibration rows; this "
                             f"bundle kept {n} ({self.source})", parameter="level",
                             fixes=(Fix({"level": math.floor(1000 * n / (n + 1)) / 1000},
                                        "about the highest level these rows give"),))
        return np.array([s[k - 1] for s in self.scores], np.float64)


@dataclass(frozen=True)
class Coverage:
    """Measured at training: the share of held-out rows inside their ``level`` prediction intervals, per
    target, with the intervals' mean width, over ``rows`` rows counted as ``how`` says."""
    level: float
    rows: int
    covered: tuple[float, ...]
    width: tuple[float, ...]
    how: str

    def to_json(self) -> dict:
        return {"level": self.level, "rows": self.rows, "covered": list(self.covered), "width": list(self.width),
                "how": self.how}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Coverage":
        v = values(obj, where, {"level": NUMBER, "rows": INT, "covered": (list,), "width": (list,), "how": TEXT})
        return cls(v["level"], v["rows"], _tuple(v["covered"], f"{where}.covered"),
                   _tuple(v["width"], f"{where}.width"), v["how"])


@dataclass(frozen=True)
class IntervalRecord:
    """Manifest field ``intervals``: how the bundle's intervals are made (``method`` "t" for a linear
    model's exact t intervals, "conformal" for split-conformal ones), the training domain, and the coverage
    measured on held-out rows at training (None without such rows)."""
    method: str
    domain: Domain
    linear: LinearIntervals | None = None
    conformal: ConformalIntervals | None = None
    coverage: Coverage | None = None

    def to_json(self) -> dict:
        return {"method": self.method, "domain": self.domain.to_json(),
                "linear": self.linear.to_json() if self.linear else None,
                "conformal": self.conformal.to_json() if self.conformal else None,
                "coverage": self.coverage.to_json() if self.coverage else None}

    @classmethod
    def from_json(cls, obj: Any, where: str, features: int = 0, targets: int = 0) -> "IntervalRecord":
        v = values(obj, where, {"method": TEXT, "domain": (dict,)})
        parts = present(obj, where, {"linear": (dict, type(None)), "conformal": (dict, type(None)),
                                     "coverage": (dict, type(None))})
        linear = LinearIntervals.from_json(parts["linear"], f"{where}.linear") if parts.get("linear") else None
        conformal = ConformalIntervals.from_json(parts["conformal"], f"{where}.conformal") \
            if parts.get("conformal") else None
        coverage = Coverage.from_json(parts["coverage"], f"{where}.coverage") if parts.get("coverage") else None
        record = cls(v["method"], Domain.from_json(v["domain"], f"{where}.domain"), linear, conformal, coverage)
        record._check(where, features, targets)
        return record

    def _check(self, where: str, features: int, targets: int) -> None:
        if self.method not in (T_METHOD, CONFORMAL_METHOD):
            raise DataError(f"{where}.method must be 't' or 'conformal', got {self.method!r}")
        if (self.method == T_METHOD) != (self.linear is not None) or \
                (self.method == CONFORMAL_METHOD) != (self.conformal is not None):
            raise DataError(f"{where}: method {self.method!r} needs its own part ('linear' for t, 'conformal')")
        if features and not len(self.domain.low) == len(self.domain.high) == features:
            raise DataError(f"{where}.domain must give one low and high per feature ({features})")
        if self.linear and targets:
            f = features
            if len(self.linear.residual_variance) != targets or len(self.linear.whitening) != f or \
                    len(self.linear.mean) != f or \
                    any(len(r) != f for r in self.linear.whitening) or self.linear.df_resid < 1:
                raise DataError(f"{where}.linear must hold a mean of {f} values, a {f} x {f} whitening factor, "
                                f"df_resid >= 1 and one residual variance per target ({targets})")
            coef = self.linear.coef
            if coef is not None and (len(coef) != targets or any(len(r) != f for r in coef) or
                                     len(self.linear.intercept) != targets):
                raise DataError(f"{where}.linear.coef must be {targets} x {f} and intercept hold {targets} value(s)")
        if self.conformal and targets and (len(self.conformal.scores) != targets or
                                           len({len(s) for s in self.conformal.scores}) > 1):
            raise DataError(f"{where}.conformal must hold as many scores for each of the {targets} targets")


def check_level(level: Any) -> float:
    """``level`` as a float strictly between 0 and 1 (InputError naming it otherwise)."""
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise InputError(f"level must be a number strictly between 0 and 1 (0.95 for 95% intervals); got {level!r}",
                         parameter="level")
    return float(level)


def half_widths(record: IntervalRecord, x: np.ndarray, level: float, kind: str = "prediction") -> np.ndarray:
    """(rows, targets) half-widths of the ``level`` intervals for raw features ``x`` (float64): t intervals
    of ``kind`` "prediction" (a new observation) or "mean" (the expected value) for a linear model,
    split-conformal prediction intervals otherwise."""
    level = check_level(level)
    if kind not in KINDS:
        raise InputError(f"kind must be 'prediction' or 'mean'; got {kind!r}", parameter="kind")
    rows = len(x)
    if record.method == T_METHOD:
        lin = record.linear
        h = lin.leverage(x)[:, None]
        var = np.asarray(lin.residual_variance, np.float64)[None, :]
        q = t_quantile(0.5 + level / 2.0, lin.df_resid)
        return q * np.sqrt(var * (h + (1.0 if kind == "prediction" else 0.0)))
    if kind == "mean":
        raise InputError("kind='mean' intervals exist for linear models only; this model's intervals are "
                         "split-conformal prediction intervals", parameter="kind",
                         fixes=(Fix({"kind": "prediction"}, "intervals for a new observation"),))
    return np.broadcast_to(record.conformal.half_width(level), (rows, len(record.conformal.scores))).copy()


def centres(record: IntervalRecord, x: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """(rows, targets) float64 centres of the intervals for raw features ``x`` (float64): for a linear model
    solved exactly, its own float64 answer x coef' + intercept (the exported graph's float32 answer is this
    rounded); for any other model, or a bundle that keeps no estimates, the model's ``answers``. Summed a
    feature at a time from the intercept, as intervals.mjs sums it: the same bits whatever the rows' count or
    memory layout (a matrix product's order of summation depends on both)."""
    lin = record.linear
    if lin is None or lin.coef is None:
        return np.asarray(answers, np.float64)
    coef = np.asarray(lin.coef, np.float64)
    out = np.tile(np.asarray(lin.intercept, np.float64), (len(x), 1))
    for j in range(coef.shape[1]):
        out += x[:, j:j + 1] * coef[:, j]
    return out


def domain_flags(record: IntervalRecord, x: np.ndarray,
                 features: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per row of raw features ``x`` (float64): whether it lies outside the training domain, and why ("" when
    it does not): a feature beyond the training range by more than ``margin`` of the range, or (linear
    models) a leverage above the largest of the training rows, or a missing (NaN) or infinite value (rows a
    Predictor with allow_nonfinite=True runs)."""
    d = record.domain
    low, high = np.asarray(d.low, np.float64), np.asarray(d.high, np.float64)
    span = np.where(high > low, high - low, np.maximum(np.abs(low), 1.0))
    below, above = x < low - d.margin * span, x > high + d.margin * span
    nonfinite = ~np.isfinite(x)
    flags = (below | above | nonfinite).any(axis=1)
    leverage = None
    if record.linear is not None and d.max_leverage is not None:
        leverage = record.linear.leverage(x)
        flags |= leverage > d.max_leverage * (1 + LEVERAGE_SLACK)
    reasons = []
    for i in np.flatnonzero(flags) if flags.any() else ():
        said = [f"{features[j]} {x[i, j]:.6g} {'below' if below[i, j] else 'above'} the training range "
                f"[{low[j]:.6g}, {high[j]:.6g}] by more than {d.margin:.0%} of it"
                for j in np.flatnonzero(below[i] | above[i])]
        said += [f"{features[j]} is {x[i, j]}, not a finite number" for j in np.flatnonzero(nonfinite[i])]
        if leverage is not None and leverage[i] > d.max_leverage * (1 + LEVERAGE_SLACK):
            said.append(f"leverage {leverage[i]:.4g} above the training rows' largest, {d.max_leverage:.4g}")
        reasons.append((int(i), "; ".join(said)))
    out = [""] * len(x)
    for i, text in reasons:
        out[i] = text
    return flags, tuple(out)


def no_intervals(where: str) -> BundleError:
    """The error for a bundle without what intervals need (written before torchport kept it, or an MLP
    trained without held-out rows)."""
    return BundleError(f"{where} keeps nothing to make intervals from (a bundle written before torchport kept "
                       "them, an MLP trained without held-out calibration rows, or a bare .onnx file); "
                       f"{_RETRAIN}, with --val-fraction 0.2 for an MLP")


# The t distribution, without scipy.

def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom, t >= 0."""
    return 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


@lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 <= p < 1) of Student's t with ``df`` degrees of freedom, by bisection on the
    tail (about 1e-14 relative to scipy's up to df 1,000, 2e-10 at df 1e7)."""
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_tail(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_tail(mid, df) > tail else (lo, mid)
    return 0.5 * (lo + hi)
