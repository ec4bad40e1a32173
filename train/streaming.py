"""A linear model solved exactly on a table file too large to hold: the file is read twice in chunks by the
runtime's table reader (the rules `torchport predict` uses), so memory does not grow with its rows.

The first pass reduces [1, X, y] by a tall-skinny QR (train/tsqr.py), sums the columns' statistics, hashes
the features for the data's fingerprint and keeps a seeded uniform sample of rows; the model is fitted from
the reduction (``Regressor.fit_reduced``). The second pass runs the fitted model on every row for its own
MSE and R^2 and hashes the targets. The sample stands in for the rows where a bundle needs rows: the parity
check on training data, the golden cases and the plots."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from torchport.runtime.errors import DataError
from torchport.runtime.intervals import RANGE_MARGIN, T_METHOD, Domain, IntervalRecord
from torchport.runtime.tables import TableChunks, table_chunks
from torchport.train.calibration import linear_intervals
from torchport.train.datasets import Dataset, select_columns
from torchport.train.estimator import Regressor
from torchport.train.inference import InferenceUnavailable, inference_of
from torchport.train.metrics import FitMetrics, LeastSquares
from torchport.train.record import DatasetRecord, FeatureStats, TrainingRecord
from torchport.train.tsqr import Reduction
from torchport.train.validation import FLOAT32_MAX

SAMPLE_ROWS = 100_000     # rows kept to verify the bundle on and to plot
CHUNK_ROWS = 1 << 18


@dataclass
class _Moments:
    """Count, mean, sum of squared deviations (Chan's parallel update), minimum and maximum per column."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def empty(cls, width: int) -> "_Moments":
        return cls(0, np.zeros(width), np.zeros(width), np.full(width, np.inf), np.full(width, -np.inf))

    def add(self, values: np.ndarray) -> None:
        n = len(values)
        if not n:
            return
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.count = total
        self.low, self.high = np.minimum(self.low, values.min(axis=0)), np.maximum(self.high, values.max(axis=0))


@dataclass
class _Sample:
    """A uniform sample of ``size`` rows without replacement: each row draws a random key, the smallest keys
    are kept (so the row count need not be known in advance)."""

    size: int
    rng: np.random.Generator
    keys: np.ndarray
    rows: np.ndarray
    values: np.ndarray

    def add(self, values: np.ndarray, first_row: int) -> None:
        keys = np.concatenate([self.keys, self.rng.random(len(values))])
        rows = np.concatenate([self.rows, np.arange(first_row, first_row + len(values))])
        values = np.concatenate([self.values, values])
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size - 1)[:self.size]
            keys, rows, values = keys[keep], rows[keep], values[keep]
        self.keys, self.rows, self.values = keys, rows, values

    def in_file_order(self) -> np.ndarray:
        return self.values[np.argsort(self.rows)]


@dataclass(frozen=True)
class Streamed:
    """What a streamed fit leaves: the training record (of every row), a sample of the rows, and what the
    bundle's prediction intervals need (of every row; None where the fit has no covariance)."""

    record: TrainingRecord
    sample: Dataset
    intervals: IntervalRecord | None = None


def fit_streamed(reg: Regressor, path: str | Path, target: Sequence[str] | None = None,
                 features: Sequence[str] | None = None, *, delimiter: str | None = None, seed: int = 0,
                 chunk_rows: int = CHUNK_ROWS, sample_rows: int = SAMPLE_ROWS,
                 on_rows: Callable[[str, int], None] | None = None) -> Streamed:
    """Fit ``reg`` (a linear model, solved exactly) on every row of a CSV/TSV/Parquet file read in chunks;
    columns are chosen as ``load_dataset`` chooses them. ``on_rows(pass, rows_read)`` follows each pass."""
    reg.check_reducible()
    path = Path(path)
    chosen: dict[str, list[str]] = {}

    def pick(columns: list[str]) -> list[str]:
        chosen["target"], chosen["features"] = select_columns(columns, target, features, str(path))
        return chosen["target"] + chosen["features"]

    def chunks(pick_columns) -> TableChunks:
        return table_chunks(path, pick_columns, delimiter=delimiter, parameter="name_or_path", chunk_rows=chunk_rows)

    with chunks(pick) as first:
        names = first.names
        targets, feature_names = chosen["target"], chosen["features"]
        reduction, moments, sample, fingerprint, rows = _first_pass(first, path, targets, feature_names, reg, seed,
                                                                    sample_rows, on_rows)
    reg.fit_reduced(reduction)
    t = len(targets)
    linear = linear_intervals(reduction.fit(), moments.mean[t:], reg)
    residual_ss = np.zeros(t)
    done, max_leverage = 0, 0.0
    with chunks(names) as second:
        for values in second:
            residual_ss += ((values[:, :t] - reg.predict(values[:, t:])) ** 2).sum(axis=0)
            if linear is not None:
                max_leverage = max(max_leverage, float(linear.leverage(values[:, t:]).max(initial=0.0)))
            fingerprint.update(np.ascontiguousarray(values[:, :t], dtype="<f8").tobytes())
            done += len(values)
            if on_rows is not None:
                on_rows("scoring", done)
    kept = sample.in_file_order()
    data = Dataset(path.stem, str(path), kept[:, t:], kept[:, :t], feature_names, targets)
    record = _record(reg, reduction, moments, residual_ss,
                     DatasetRecord(path.stem, str(path), rows, tuple(feature_names), tuple(targets),
                                   fingerprint.hexdigest()))
    intervals = None if linear is None else IntervalRecord(
        T_METHOD, Domain(tuple(float(v) for v in moments.low[t:]), tuple(float(v) for v in moments.high[t:]),
                         RANGE_MARGIN, max_leverage), linear=linear)
    return Streamed(record, data, intervals)


def _first_pass(source: TableChunks, path: Path, targets: list[str], feature_names: list[str], reg: Regressor,
                seed: int, sample_rows: int, on_rows: Callable[[str, int], None] | None):
    """The reduction, the columns' moments, the sample and the fingerprint's features, and the row count."""
    t, f = len(targets), len(feature_names)
    reduction = Reduction(f, t, bool(reg.fit_intercept))
    moments = _Moments.empty(t + f)
    sample = _Sample(sample_rows, np.random.default_rng(seed), np.zeros(0), np.zeros(0, np.int64),
                     np.zeros((0, t + f)))
    fingerprint = hashlib.sha256(repr((feature_names, targets)).encode())
    rows = 0
    for values in source:
        X = values[:, t:]
        big = np.abs(X) > FLOAT32_MAX
        if big.any():
            row, column = np.argwhere(big)[0]
            raise DataError(f"{path}: column {feature_names[column]!r}, row {rows + row + 1} (data row, 1-based) "
                            f"holds {X[row, column]!r}, beyond float32's range, which the model computes in",
                            parameter="X")
        reduction = reduction.add(X, values[:, :t])
        moments.add(values)
        fingerprint.update(np.ascontiguousarray(X, dtype="<f8").tobytes())
        sample.add(values, rows)
        rows += len(values)
        if on_rows is not None:
            on_rows("reducing", rows)
    if rows == 0:
        raise DataError(f"{path}: no data rows")
    return reduction, moments, sample, fingerprint, rows


def _record(reg: Regressor, reduction: Reduction, moments: _Moments, residual_ss: np.ndarray,
            dataset: DatasetRecord) -> TrainingRecord:
    """The training record from the pass's sums: the model's metrics, the exact fit's, the inference table."""
    t = len(dataset.targets)
    fit = reduction.fit()
    total_ss = moments.m2[:t]
    constant = list(moments.low[:t] == moments.high[:t])
    names = list(dataset.targets)
    metrics = FitMetrics.of_sums(dataset.rows, residual_ss, total_ss, constant, reg.coef_, reg.intercept_, names)
    exact = LeastSquares.of_sums(dataset.rows, fit.residual_ss, total_ss, constant, fit.coef, fit.intercept, names)
    inference, unavailable = None, None
    try:
        inference = inference_of(fit, list(dataset.features), names, moments.low[:t], moments.high[:t])
    except InferenceUnavailable as e:
        unavailable = str(e)
    std = np.sqrt(moments.m2[t:] / moments.count)
    stats = FeatureStats(*(tuple(float(v) for v in a) for a in (moments.mean[t:], std, moments.low[t:],
                                                                 moments.high[t:])))
    return TrainingRecord.from_summary(reg, dataset, metrics, exact, inference, unavailable, stats)
