"""What a bundle keeps for prediction intervals and domain flags (the manifest's ``intervals``), made from a
fitted Regressor: a linear model's exact-fit whitening factor and residual variance (from the least-squares core's
fit, not computed again), or the sorted absolute residuals of an MLP's held-out calibration rows; and the
coverage of those intervals measured on held-out rows, for the report."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from torchport.runtime.intervals import CONFORMAL_METHOD, MAX_CALIBRATION_ROWS, RANGE_MARGIN, T_METHOD, \
    ConformalIntervals, Coverage, Domain, IntervalRecord, LinearIntervals, half_widths
from torchport.train.datasets import Dataset
from torchport.train.lstsq import LeastSquaresFit, fit_least_squares

REPORT_LEVEL = 0.9


def _targets(y: np.ndarray, rows: int) -> np.ndarray:
    return np.asarray(y, np.float64).reshape(rows, -1)


def calibration_rows(reg) -> tuple[np.ndarray, str]:
    """The rows an MLP's conformal intervals are calibrated on, and which they are: the calibration split
    when there is one, else the validation split."""
    own = getattr(reg, "calibration_rows_", np.arange(0))
    if len(own):
        return own, "calibration split"
    return reg.val_rows_, "validation split"


def linear_intervals(fit: LeastSquaresFit, mean: np.ndarray, reg=None) -> LinearIntervals | None:
    """The t intervals' record of a least-squares fit of rows whose features average ``mean``, with the float64
    estimates of ``reg`` when it is a linear model solved exactly (its intervals are centred on them; any
    other fit's on its own answer); None when the fit has no whitening factor (collinear features) or no
    residual degrees of freedom."""
    df = fit.n_rows - fit.n_params
    if fit.whitening is None or df < 1:
        return None
    exact = reg is not None and getattr(reg, "optimizer_", None) == "exact"
    coef = tuple(tuple(float(v) for v in row) for row in np.atleast_2d(reg.coef_)) if exact else None
    intercept = tuple(float(v) for v in np.atleast_1d(reg.intercept_)) if exact else None
    return LinearIntervals(fit.fit_intercept, fit.n_rows, df, tuple(float(v) for v in mean),
                           tuple(tuple(float(v) for v in row) for row in fit.whitening),
                           tuple(float(v) / df for v in fit.residual_ss), coef, intercept)


def interval_record(reg, data: Dataset, fit: LeastSquaresFit | None = None) -> IntervalRecord | None:
    """The manifest's ``intervals`` for ``reg`` fitted on ``data``, with their coverage on held-out rows: t
    intervals for a linear model (``fit``: the core's fit of the training rows with its whitening factor, made here
    if not given), conformal ones for an MLP with held-out rows; None where neither can be made (then
    predict_interval says why)."""
    record = _record(reg, data, fit)
    return None if record is None else replace(record, coverage=held_out_coverage(record, reg, data))


def _record(reg, data: Dataset, fit: LeastSquaresFit | None) -> IntervalRecord | None:
    X = np.asarray(data.X[reg.train_rows_], np.float64)
    low, high = tuple(float(v) for v in X.min(axis=0)), tuple(float(v) for v in X.max(axis=0))
    if reg.spec_.kind == "linear":
        if fit is None or fit.whitening is None:
            fit = fit_least_squares(X, _targets(data.y[reg.train_rows_], len(X)), bool(reg.fit_intercept))
        lin = linear_intervals(fit, X.mean(axis=0), reg)
        if lin is None:
            return None
        return IntervalRecord(T_METHOD, Domain(low, high, RANGE_MARGIN, float(lin.leverage(X).max())), linear=lin)
    rows, source = calibration_rows(reg)
    if not len(rows):
        return None
    if len(rows) > MAX_CALIBRATION_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_CALIBRATION_ROWS, replace=False))
    scores = np.abs(_targets(data.y[rows], len(rows)) - _targets(reg.predict(data.X[rows]), len(rows)))
    conformal = ConformalIntervals(f"{source}, {len(rows)} rows",
                                   tuple(tuple(float(v) for v in np.sort(scores[:, j])) for j in range(scores.shape[1])))
    return IntervalRecord(CONFORMAL_METHOD, Domain(low, high, RANGE_MARGIN), conformal=conformal)


def held_out_coverage(record: IntervalRecord | None, reg, data: Dataset,
                      level: float = REPORT_LEVEL) -> Coverage | None:
    """Coverage of the bundle's intervals on rows the fit did not use: a linear model's validation and
    calibration rows; for conformal intervals calibrated on the validation split, each half of it calibrates
    the other (the intervals' own rows cannot test them). None without held-out rows."""
    if record is None:
        return None
    if record.method == T_METHOD:
        rows = np.concatenate([reg.val_rows_, getattr(reg, "calibration_rows_", np.arange(0))]).astype(int)
        if not len(rows):
            return None
        X = np.asarray(data.X[rows], np.float64)
        y, pred = _targets(data.y[rows], len(rows)), _targets(reg.predict(X), len(rows))
        half = half_widths(record, X, level)
        inside = np.abs(y - pred) <= half
        return Coverage(level, len(rows), tuple(float(v) for v in inside.mean(axis=0)),
                        tuple(float(v) for v in 2 * half.mean(axis=0)),
                        "validation rows, not used by the fit")
    rows, _ = calibration_rows(reg)
    if len(rows) < 4:
        return None
    order = np.random.default_rng(0).permutation(rows)
    halves = (order[:len(order) // 2], order[len(order) // 2:])
    inside, widths = [], []
    for calibrate, test in (halves, halves[::-1]):
        scores = np.abs(_targets(data.y[calibrate], len(calibrate)) - _targets(reg.predict(data.X[calibrate]),
                                                                                 len(calibrate)))
        part = ConformalIntervals("half", tuple(tuple(np.sort(scores[:, j])) for j in range(scores.shape[1])))
        try:
            half = part.half_width(level)
        except ValueError:
            return None
        err = np.abs(_targets(data.y[test], len(test)) - _targets(reg.predict(data.X[test]), len(test)))
        inside.append(err <= half)
        widths.append(np.broadcast_to(2 * half, err.shape))
    inside, widths = np.concatenate(inside), np.concatenate(widths)
    return Coverage(level, len(rows), tuple(float(v) for v in inside.mean(axis=0)),
                    tuple(float(v) for v in widths.mean(axis=0)),
                    "held-out rows, each half of them calibrating the other")
