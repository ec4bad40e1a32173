"""Regression metrics and the exact least-squares fit that SGD is compared against."""
from __future__ import annotations

import numpy as np


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error over every element, in float64."""
    d = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.mean(d * d))


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, averaged uniformly over targets (as scikit-learn does)."""
    yt = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    yp = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1)
    ss_res = ((yt - yp) ** 2).sum(axis=0)
    ss_tot = ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - ss_res / ss_tot))


def exact_least_squares(X: np.ndarray, y: np.ndarray) -> dict:
    """Closed-form ordinary least squares with an intercept, in float64: weight (targets x features),
    bias (targets), MSE and R^2. This is the optimum that full-batch SGD on MSE converges to."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(len(X), -1)
    A = np.column_stack([X, np.ones(len(X))])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    pred = A @ coef
    return {
        "weight": coef[:-1].T.tolist(),
        "bias": coef[-1].tolist(),
        "mse": mse(y, pred),
        "r2": r2_score(y, pred),
    }
