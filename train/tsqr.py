"""Least squares at any size: a tall-skinny QR (TSQR) of [1, X, y] reduced chunk by chunk, so memory does not
grow with the rows. Each chunk's rows are stacked under the R factor so far and factored again in float64;
two partial reductions (of a file's chunks, or of a Dask collection's partitions on its workers) merge the
same way. The client of a reduction holds only (features + targets + 1)-square matrices.

The columns are shifted by the first chunk's means (an offset costs no digits) and, at the end, scaled by
powers of two as train/lstsq.py scales them; the rank is decided the same way. There is no refinement
(it would need the rows again): the estimates are those of a float64 Householder QR of the whole table."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from torchport.train.lstsq import EPS, RANK_MARGIN, LeastSquaresFit, power_of_two_near_inverse, whitening_factor

METHOD = "tall-skinny QR (TSQR) of centred columns in float64, reduced chunk by chunk"


@dataclass(frozen=True)
class Reduction:
    """A partial reduction: the R factor of [1, [X, Y] - shift] (or [X, Y] without an intercept) over ``rows``
    rows, with the column sums of squares of the raw X (for the rank's tolerance) and whether each feature
    was constant so far (``first`` holds its first value). Merge two with ``merge``; ``fit`` solves."""

    n_features: int
    n_targets: int
    fit_intercept: bool = True
    rows: int = 0
    shift: np.ndarray | None = None
    R: np.ndarray | None = None
    raw_ss: np.ndarray | None = None
    first: np.ndarray | None = None
    constant: np.ndarray | None = None
    method: str = field(default=METHOD)

    @property
    def width(self) -> int:
        return self.n_features + int(self.fit_intercept) + self.n_targets

    def add(self, X: np.ndarray, y: np.ndarray) -> "Reduction":
        """This reduction with the rows of X (rows x features) and y (rows, or rows x targets) added."""
        X = np.asarray(X, np.float64)
        Y = np.asarray(y, np.float64).reshape(len(X), -1)
        if X.shape[1] != self.n_features or Y.shape[1] != self.n_targets:
            raise ValueError(f"expected {self.n_features} features and {self.n_targets} targets; got X "
                             f"{X.shape} and y {Y.shape}")
        if not len(X):
            return self
        columns = np.concatenate([X, Y], axis=1)
        shift = self.shift
        if shift is None:  # the first chunk's means (its first values where it is constant)
            shift = np.where(np.ptp(columns, axis=0) == 0, columns[0], columns.mean(axis=0)) \
                if self.fit_intercept else np.zeros(columns.shape[1])
        ones = [np.ones((len(X), 1))] if self.fit_intercept else []
        block = np.concatenate(ones + [columns - shift], axis=1)
        part = Reduction(self.n_features, self.n_targets, self.fit_intercept, len(X), shift, _r_factor(block),
                         (X * X).sum(axis=0), X[0].copy(), np.ptp(X, axis=0) == 0)
        return self.merge(part)

    def merge(self, other: "Reduction") -> "Reduction":
        """The reduction of both parts' rows (the other's R moved to this one's shift, stacked, factored)."""
        if (other.n_features, other.n_targets, other.fit_intercept) != \
                (self.n_features, self.n_targets, self.fit_intercept):
            raise ValueError("only reductions of the same columns merge")
        if other.R is None:
            return self
        if self.R is None:
            return other
        R_other = other.R.copy()
        if self.fit_intercept:  # column j of [1, Z - s] is column j of [1, Z - s'] plus (s' - s) times the ones
            R_other[:, 1:] += np.outer(R_other[:, 0], other.shift - self.shift)
        R = _r_factor(np.concatenate([self.R, R_other]))
        constant = self.constant & other.constant & (self.first == other.first)
        return replace(self, rows=self.rows + other.rows, R=R, raw_ss=self.raw_ss + other.raw_ss,
                       constant=constant)

    def fit(self) -> LeastSquaresFit:
        """The least-squares fit of the rows reduced so far, as train/lstsq.py's ``LeastSquaresFit``."""
        if self.R is None:
            raise ValueError("no rows were reduced")
        f, t, k = self.n_features, self.n_targets, int(self.fit_intercept)
        p = f + k
        R = self.full_r()
        if self.fit_intercept:  # a constant feature centres to zeros: its column of A, Q R[:, j], is zero
            R[:, k + np.flatnonzero(self.constant)] = 0.0
        scale = power_of_two_near_inverse(np.sqrt((R[:, :p] ** 2).sum(axis=0)))
        R11, R12 = R[:p, :p] * scale, R[:p, p:]
        feature_scale = scale[k:]
        noise = 0.5 * EPS * float(np.sqrt(np.sum(feature_scale ** 2 * self.raw_ss)))
        singular = np.linalg.svd(R11, compute_uv=False)
        tolerance = RANK_MARGIN * math.sqrt(max(self.rows, p)) * max(noise, EPS)
        rank = int(np.sum(singular > tolerance))
        T = np.zeros((p, p), np.longdouble)
        T[np.arange(p), np.arange(p)] = scale
        if self.fit_intercept:
            T[0, 1:] = -(self.shift[:f].astype(np.longdouble) * scale[1:])
        covariance, whitening = None, None
        if rank == p:
            from scipy.linalg import solve_triangular
            z = solve_triangular(R11, R12)
            R_inv = solve_triangular(R11, np.eye(p))
            covariance = np.asarray(T @ (R_inv @ R_inv.T).astype(np.longdouble) @ T.T, np.float64)
            whitening = whitening_factor(R11, scale, self.fit_intercept)
            condition = float(singular[0] / singular[-1])
        else:
            z = np.linalg.lstsq(R11, R12, rcond=tolerance / singular[0])[0] if rank else np.zeros((p, t))
            condition = math.inf
        params = np.asarray(T @ z.astype(np.longdouble), np.float64)
        residual_ss = (R[p:, p:] ** 2).sum(axis=0)
        total_ss = (R[k:, p:] ** 2).sum(axis=0)  # about the mean: all but the ones' row; about zero: all rows
        intercept = params[0] + self.shift[f:] if self.fit_intercept else np.zeros(t)
        return LeastSquaresFit(params[k:].T.copy(), np.asarray(intercept, np.float64), self.fit_intercept, self.rows,
                               rank, condition, residual_ss, total_ss, covariance, 0, self.method, whitening)


    def full_r(self) -> np.ndarray:
        """The R factor, padded with zero rows to a square (fewer rows than columns reduced so far)."""
        R = np.zeros((self.width, self.width))
        if self.R is not None:
            R[:len(self.R)] = self.R
        return R

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column of [X, Y]: the mean and the standard deviation about it (population), from R; without an
        intercept zeros and the root mean square about zero (what a scaling that does not centre uses)."""
        R, k = self.full_r(), int(self.fit_intercept)
        columns = R[:, k:]
        if not self.fit_intercept:
            return np.zeros(columns.shape[1]), np.sqrt((columns ** 2).sum(axis=0) / self.rows)
        mean = self.shift + R[0, 0] * R[0, 1:] / self.rows  # the ones' column is R[0, 0] times Q's first column
        return mean, np.sqrt((columns[1:] ** 2).sum(axis=0) / self.rows)

    def raw_condition(self) -> float:
        """The 2-norm condition number of [X, 1] (of X without an intercept) in raw units, from R."""
        R, f, k = self.full_r(), self.n_features, int(self.fit_intercept)
        R11 = R[:f + k, :f + k].copy()
        if self.fit_intercept:  # [1, X] = [1, X - shift] M, M adding shift times the ones to each column
            R11[:, 1:] += np.outer(R11[:, 0], self.shift[:f])
        with np.errstate(all="ignore"):
            return float(np.linalg.cond(R11))


def _r_factor(block: np.ndarray) -> np.ndarray:
    """The R factor of a float64 block (at most as many rows as columns)."""
    return np.linalg.qr(block, mode="r")
