"""Ordinary least squares at certified precision, torch-free: the exact fit, the Regressor's linear solution and
the inference table all come from ``fit_least_squares``.

The design is centred (with an intercept) and each column scaled by a power of two to about unit norm, both
exactly: the centred values are held as double-doubles, so an offset (a Unix time near 1.7e9 beside a
temperature) costs no digits and never looks collinear. A float64 Householder QR of it gives a first
solution, which Bjorck's iterative refinement of the augmented system [I A; A^T 0] [r; x] = [b; c] then
corrects with residuals computed in double-double arithmetic (train/double_double.py) until the corrections
vanish: the estimates, residuals and (where the columns are ill-conditioned) the unscaled covariance
(D^T D)^-1 reach NIST StRD's certified values to 9 or more significant digits. The rank is decided on the
centred, scaled columns against the rounding the float64 data itself carries, so it does not depend on the
columns' units or offsets."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from torchport.train import double_double as dd

EPS = float(np.finfo(np.float64).eps)
SETTLED = 2.0 ** -60        # a refinement whose corrections are this small (relative) has converged
MAX_STEPS = 12
RANK_MARGIN = 8.0           # singular values below this many times the data's own rounding (and QR's) are zero
REFINE_COVARIANCE = 1e3     # (D^T D)^-1 is refined above this condition number of the scaled columns,
SMALL = 1_000_000           # and always for designs of at most this many values
BLOCK_ROWS = 1 << 14        # rows per block of the double-double residuals
METHOD = "Householder QR of centred, power-of-two-scaled columns with iterative refinement in double-double"


@dataclass(frozen=True)
class LeastSquaresFit:
    """The ordinary least-squares fit of every target on the same features, in float64.

    ``coef`` (targets x features) and ``intercept`` (targets; zeros without one) are the estimates;
    ``residual_ss`` the residual sums of squares and ``total_ss`` the sums of squares about the mean (about
    zero without an intercept, as statsmodels and NIST count them for a model without a constant);
    ``covariance`` the unscaled covariance (D^T D)^-1 of the parameters in ``terms`` order (the intercept
    first), None when the design is rank-deficient (then the estimates are the minimum-norm solution in the
    centred, scaled coordinates). ``whitening`` (features x features, None where ``covariance`` is) is W with
    x'(X_c'X_c)^-1 x = |x W|^2 for centred rows x (uncentred without an intercept): the slopes' column scales
    times the inverse of the centred, scaled design's R, from which a row's leverage keeps its digits where
    the quadratic form in (X_c'X_c)^-1 would cancel them. ``rank`` counts the intercept; ``condition`` is the 2-norm condition number
    of the centred, scaled design; ``refinement_steps`` how many corrections the refinement took."""

    coef: np.ndarray
    intercept: np.ndarray
    fit_intercept: bool
    n_rows: int
    rank: int
    condition: float
    residual_ss: np.ndarray
    total_ss: np.ndarray
    covariance: np.ndarray | None
    refinement_steps: int
    method: str = METHOD
    whitening: np.ndarray | None = None

    @property
    def n_params(self) -> int:
        """Parameters of the model: the features, and the intercept when there is one."""
        return self.coef.shape[1] + int(self.fit_intercept)

    @property
    def full_rank(self) -> bool:
        return self.rank == self.n_params

    @property
    def params(self) -> np.ndarray:
        """Estimates in ``terms`` order (the intercept first), shape (parameters, targets)."""
        rows = [self.intercept[None, :]] if self.fit_intercept else []
        return np.concatenate(rows + [self.coef.T], axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The fit's predictions (rows, targets) for raw features ``X``, in float64."""
        return np.asarray(X, np.float64) @ self.coef.T + self.intercept


@dataclass(frozen=True)
class _Design:
    """The centred, scaled design A = D T^-1 held exactly as double-doubles, with what undoes it: D = [1, X]
    (or X), column j of A is (X_j - shift_j) * scale_j, and the intercept's column is scale_0."""

    a: dd.DD
    shift: np.ndarray
    scale: np.ndarray
    noise: float               # the float64 rounding of the data, as a 2-norm in A's units
    fit_intercept: bool

    def transform(self) -> np.ndarray:
        """T (parameters x parameters, longdouble): parameters of D = T @ parameters of A."""
        p = len(self.scale)
        T = np.zeros((p, p), np.longdouble)
        T[np.arange(p), np.arange(p)] = self.scale.astype(np.longdouble)
        if self.fit_intercept:
            T[0, 1:] = -(self.shift.astype(np.longdouble) * self.scale[1:].astype(np.longdouble))
        return T


def power_of_two_near_inverse(norms: np.ndarray) -> np.ndarray:
    """2^-round(log2(norm)) per entry (1 where the norm is zero): a scale that changes no digit."""
    norms = np.asarray(norms, np.float64)
    safe = np.where(norms > 0, norms, 1.0)
    return np.where(norms > 0, np.ldexp(1.0, -np.round(np.log2(safe)).astype(int)), 1.0)


def _design(X: np.ndarray, fit_intercept: bool) -> _Design:
    n = len(X)
    if fit_intercept:
        shift = np.asarray(X.astype(np.longdouble).mean(axis=0), np.float64) if n else np.zeros(X.shape[1])
        constant = np.ptp(X, axis=0) == 0 if n else np.ones(X.shape[1], bool)
        shift = np.where(constant, X[0] if n else 0.0, shift)  # a constant column centres to exact zeros
        hi, lo = dd.two_sum(X, -shift)
    else:
        shift = np.zeros(X.shape[1])
        hi, lo = X.copy(), np.zeros_like(X)
    scale = power_of_two_near_inverse(np.sqrt((hi * hi).sum(axis=0)))
    noise = 0.5 * EPS * float(np.sqrt(np.sum((scale * np.sqrt((X * X).sum(axis=0))) ** 2)))
    hi, lo = hi * scale, lo * scale
    if fit_intercept:
        s0 = float(power_of_two_near_inverse(np.array([math.sqrt(max(n, 1))]))[0])
        hi = np.column_stack([np.full(n, s0), hi])
        lo = np.column_stack([np.zeros(n), lo])
        scale = np.concatenate([[s0], scale])
    return _Design((hi, lo), shift, scale, noise, fit_intercept)


def _residuals(design: _Design, b: np.ndarray, c: np.ndarray, r: dd.DD, x: dd.DD) -> tuple[np.ndarray, np.ndarray]:
    """f = b - r - A x and g = c - A^T r of the augmented system, computed in double-double and rounded to
    float64, a block of rows at a time (bounded memory)."""
    a = design.a
    n, p = a[0].shape
    f = np.empty_like(b)
    g = (np.zeros_like(c), np.zeros_like(c))
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        r_rows = (r[0][rows], r[1][rows])
        r_split = dd.split(r_rows[0])
        a_split = dd.split(a[0][rows])
        acc = dd.add(dd.of(b[rows]), dd.neg(r_rows))
        for j in range(p):
            column = (a[0][rows, j:j + 1], a[1][rows, j:j + 1])
            column_split = (a_split[0][:, j:j + 1], a_split[1][:, j:j + 1])
            acc = dd.add(acc, dd.neg(dd.mul(column, (x[0][j], x[1][j]), column_split)))
            s = dd.total(dd.mul(column, r_rows, column_split, r_split))
            g[0][j], g[1][j] = dd.add((g[0][j], g[1][j]), s)
        f[rows] = acc[0]
    return f, dd.add(dd.of(c), dd.neg(g))[0]


def _triangular(R: np.ndarray, b: np.ndarray, transpose: bool = False) -> np.ndarray:
    from scipy.linalg import solve_triangular
    return solve_triangular(R, b, trans="T" if transpose else "N", check_finite=False)


def _refine(design: _Design, Q: np.ndarray, R: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[dd.DD, dd.DD, int]:
    """Solve [I A; A^T 0] [r; x] = [b; c] by Bjorck's iterative refinement: each correction is solved with
    the float64 QR factors, from residuals computed in double-double. Stops when the corrections vanish,
    or stop shrinking (the attainable accuracy); returns r, x and the number of corrections applied."""
    n, k = b.shape
    p = R.shape[1]
    x = (np.zeros((p, k)), np.zeros((p, k)))
    r = (np.zeros((n, k)), np.zeros((n, k)))
    b_size = np.abs(b).max(axis=0, initial=0.0)
    last, steps = math.inf, 0
    for _ in range(MAX_STEPS):
        f, g = _residuals(design, b, c, r, x)
        h = _triangular(R, g, transpose=True)
        d1 = Q.T @ f
        dx = _triangular(R, d1 - h)
        dr = Q @ (h - d1) + f
        if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dr))):
            break
        x_size = np.maximum(np.abs(x[0] + dx).max(axis=0, initial=0.0), np.finfo(np.float64).tiny)
        r_size = np.maximum(np.abs(r[0] + dr).max(axis=0, initial=0.0) + b_size, np.finfo(np.float64).tiny)
        size = max(float(np.max(np.abs(dx).max(axis=0, initial=0.0) / x_size, initial=0.0)),
                   float(np.max(np.abs(dr).max(axis=0, initial=0.0) / r_size, initial=0.0)))
        if steps and size >= last:
            break  # no longer contracting: the last iterate is as good as this arithmetic gets
        x, r = dd.add(x, dd.of(dx)), dd.add(r, dd.of(dr))
        steps += 1
        if size <= SETTLED:
            break
        last = size
    return r, x, steps


def _unscaled_covariance(design: _Design, Q: np.ndarray, R: np.ndarray, condition: float) -> np.ndarray:
    """(D^T D)^-1: from the augmented system with b = 0 and c = -I (x = (A^T A)^-1), refined where the scaled
    columns are ill-conditioned or the design small; else R^-1 R^-T, accurate to about condition x eps."""
    n, p = design.a[0].shape
    if condition > REFINE_COVARIANCE or n * p <= SMALL:
        _, inverse, _ = _refine(design, Q, R, np.zeros((n, p)), -np.eye(p))
        Z = dd.to_longdouble(inverse)
        Z = (Z + Z.T) / 2
    else:
        R_inv = _triangular(R, np.eye(p))
        Z = (R_inv @ R_inv.T).astype(np.longdouble)
    T = design.transform()
    return np.asarray(T @ Z @ T.T, np.float64)


def whitening_factor(R: np.ndarray, scale: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """W = diag(slope scales) R_s^-1, R_s being the slopes' block of the R factor of the centred, scaled design
    (the intercept's column first when there is one; centring makes its row of R zero past the diagonal)."""
    k = int(fit_intercept)
    slopes = R[k:, k:]
    return scale[k:, None] * _triangular(slopes, np.eye(len(slopes)))


def fit_least_squares(X: np.ndarray, y: np.ndarray, fit_intercept: bool = True,
                      covariance: bool = True) -> LeastSquaresFit:
    """Ordinary least squares of each column of ``y`` (rows, or rows x targets) on ``X`` (rows x features),
    with an intercept unless ``fit_intercept`` is False; see the module's docstring for how. ``covariance``
    False leaves (D^T D)^-1 out (None), for a fit that needs only the estimates."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(y, np.float64).reshape(len(X), -1)
    n, t = len(X), Y.shape[1]
    design = _design(X, fit_intercept)
    p = len(design.scale)
    Q, R = np.linalg.qr(design.a[0])
    singular = np.linalg.svd(R, compute_uv=False) if min(R.shape) else np.zeros(0)
    tolerance = RANK_MARGIN * math.sqrt(max(n, p)) * max(design.noise, EPS)
    rank = int(np.sum(singular > tolerance))
    condition = float(singular[0] / singular[-1]) if rank == p and p else math.inf
    y_scale = power_of_two_near_inverse(np.sqrt((Y * Y).sum(axis=0)))
    b = Y * y_scale
    steps, unscaled, whitening = 0, None, None
    if rank < p:
        z64 = np.linalg.lstsq(design.a[0], b, rcond=tolerance / singular[0])[0] if rank else np.zeros((p, t))
        z = dd.of(z64)
        residual = dd.of(_residuals(design, b, np.zeros((p, t)), dd.of(np.zeros_like(b)), z)[0])
    else:
        residual, z, steps = _refine(design, Q, R, b, np.zeros((p, t)))
        if covariance:
            unscaled = _unscaled_covariance(design, Q, R, condition)
            whitening = whitening_factor(R, design.scale, fit_intercept)
    params = design.transform() @ dd.to_longdouble(z) / y_scale.astype(np.longdouble)
    params = np.asarray(params, np.float64)
    r = dd.to_longdouble(residual)
    residual_ss = np.asarray((r * r).sum(axis=0), np.float64) / y_scale ** 2
    Yl = Y.astype(np.longdouble)
    centred = Yl - Yl.mean(axis=0) if fit_intercept and n else Yl
    total_ss = np.asarray((centred * centred).sum(axis=0), np.float64)
    intercept = params[0] if fit_intercept else np.zeros(t)
    coef = params[int(fit_intercept):].T.copy()
    return LeastSquaresFit(coef, np.asarray(intercept, np.float64), fit_intercept, n, rank, condition,
                           residual_ss, total_ss, unscaled, steps, whitening=whitening)
