"""Double-double arithmetic on numpy float64 arrays: each number is an unevaluated sum hi + lo of two float64s
(about 106 bits), built from error-free transformations (Knuth's two-sum, Dekker's two-product). The
least-squares core (train/lstsq.py) computes its refinement residuals with it, so that rounding in them
does not limit the digits of the solution."""
from __future__ import annotations

import numpy as np

DD = tuple[np.ndarray, np.ndarray]
SPLITTER = 134217729.0  # 2^27 + 1: splits a float64 into two halves of 26 bits


def two_sum(a: np.ndarray, b: np.ndarray) -> DD:
    """s, e with s = fl(a + b) and s + e = a + b exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _quick_two_sum(a: np.ndarray, b: np.ndarray) -> DD:
    """two_sum for |a| >= |b|."""
    s = a + b
    return s, b - (s - a)


def split(a: np.ndarray) -> DD:
    """Dekker's split: hi + lo = a with each half of 26 bits, so that their products are exact."""
    t = SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray, a_split: DD | None = None, b_split: DD | None = None) -> DD:
    """p, e with p = fl(a * b) and p + e = a * b exactly (barring overflow and underflow); ``a_split`` and
    ``b_split`` are ``split(a)`` and ``split(b)`` where the caller keeps them for many products."""
    p = a * b
    ah, al = split(a) if a_split is None else a_split
    bh, bl = split(b) if b_split is None else b_split
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add(a: DD, b: DD) -> DD:
    """a + b in double-double."""
    s, e = two_sum(a[0], b[0])
    return _quick_two_sum(s, e + a[1] + b[1])


def mul(a: DD, b: DD, a_split: DD | None = None, b_split: DD | None = None) -> DD:
    """a * b in double-double (``a_split``, ``b_split``: ``split`` of the high parts, kept by the caller)."""
    p, e = two_prod(a[0], b[0], a_split, b_split)
    return _quick_two_sum(p, e + (a[0] * b[1] + a[1] * b[0]))


def neg(a: DD) -> DD:
    return -a[0], -a[1]


def total(a: DD) -> DD:
    """The sum over the first axis, in double-double, by pairwise halving (vectorised)."""
    hi, lo = a
    if len(hi) == 0:
        return np.zeros(hi.shape[1:]), np.zeros(hi.shape[1:])
    while len(hi) > 1:
        half = len(hi) // 2
        s = add((hi[:half], lo[:half]), (hi[half:2 * half], lo[half:2 * half]))
        if len(hi) % 2:
            hi, lo = np.concatenate([s[0], hi[-1:]]), np.concatenate([s[1], lo[-1:]])
        else:
            hi, lo = s
    return hi[0], lo[0]


def of(a: np.ndarray) -> DD:
    """A float64 array as double-double (lo = 0)."""
    a = np.asarray(a, np.float64)
    return a, np.zeros_like(a)


def to_longdouble(a: DD) -> np.ndarray:
    """hi + lo in numpy's longdouble (80-bit extended on x86-64; float64 where the platform has no wider type)."""
    return a[0].astype(np.longdouble) + a[1].astype(np.longdouble)
