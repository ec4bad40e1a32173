"""What a linear model's MSE says about gradient descent on it, in closed form, and the settings that fix a
run that diverged or stopped short. The loss is quadratic with Hessian H = 2/(n t) A^T A (A = [X, 1], the
features as the model sees them), so full-batch SGD is stable only for lr < 2 / lambda_max(H), and at a
stable lr the slowest direction shrinks by |1 - lr lambda| per epoch: how many epochs reach the optimum
follows from the extreme eigenvalues. Every fix suggested here is one this arithmetic says works."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from torchport.runtime.errors import Fix

# A suggested SGD run must bring the slowest direction's error down by this factor (the loss's excess by
# its square) within its epochs.
CONVERGED = 1e-5
MOST_EPOCHS = 1_000_000  # the most epochs a fix may ask for (the closed-form path runs them in seconds)
EXACT = Fix({"optimizer": "exact"}, "the exact least-squares solution")


@dataclass(frozen=True)
class Quadratic:
    """The extreme eigenvalues of a linear model's MSE Hessian."""

    largest: float
    smallest: float

    @property
    def stable_lr(self) -> float:
        """The largest stable full-batch SGD step: 2 / lambda_max."""
        return 2.0 / self.largest

    @property
    def condition(self) -> float:
        return self.largest / self.smallest if self.smallest > 0 else math.inf

    def best_lr(self) -> float:
        """A round step just below 2 / (lambda_max + lambda_min), the fastest for the slowest direction."""
        return round_down(2.0 / (self.largest + max(self.smallest, 0.0)))

    def epochs_to_converge(self, lr: float) -> float:
        """Epochs of full-batch SGD at ``lr`` for the slowest direction to shrink by CONVERGED (inf if never)."""
        rate = max(abs(1.0 - lr * self.largest), abs(1.0 - lr * max(self.smallest, 0.0)))
        if rate >= 1.0:
            return math.inf
        return math.ceil(math.log(CONVERGED) / math.log(rate)) if rate > 0 else 1


def round_down(value: float) -> float:
    """``value`` rounded down to one significant digit (0.37 -> 0.3), so a suggested step stays below it."""
    scale = 10.0 ** math.floor(math.log10(value))
    return float(f"{math.floor(value / scale) * scale:.1g}")


def round_up_epochs(epochs: float) -> int:
    """An epoch count rounded up to two significant digits (12345 -> 13000)."""
    scale = 10 ** max(0, int(math.log10(epochs)) - 1)
    return int(math.ceil(epochs / scale) * scale)


def quadratic(X: np.ndarray, n_targets: int) -> Quadratic:
    """The MSE Hessian's extreme eigenvalues for a linear model with a bias on features ``X`` (as the model
    sees them, scaled or not), from the (features + 1)-square Gram matrix in float64."""
    A = np.column_stack([np.asarray(X, np.float64), np.ones(len(X))])
    eig = np.linalg.eigvalsh(2.0 / (len(A) * n_targets) * (A.T @ A))
    return Quadratic(float(eig[-1]), float(eig[0]))


def sgd_fix(q: Quadratic, epochs: int, settings: dict, purpose: str) -> Fix | None:
    """``settings`` with the best round lr for ``q`` (and more epochs when ``epochs`` are too few), or None when
    even that would need more than MOST_EPOCHS."""
    lr = q.best_lr()
    need = q.epochs_to_converge(lr)
    if need > MOST_EPOCHS:
        return None
    more = {"epochs": round_up_epochs(need)} if need > epochs else {}
    return Fix({**settings, "lr": lr, **more}, purpose)


def linear_fixes(raw: Quadratic, scaled: Quadratic, is_scaled: bool, epochs: int) -> tuple[Fix, ...]:
    """What makes a linear model's full-batch SGD reach the optimum: the exact solution first, then SGD at a
    step that converges (on standardised features, and on the features as they are, where either works)."""
    fixes = [EXACT]
    on_scaled = sgd_fix(scaled, epochs, {} if is_scaled else {"scale": "on"},
                        "SGD on standardised features, which converges there")
    as_they_are = None if is_scaled else sgd_fix(raw, epochs, {}, "a stable step that converges")
    fixes += [f for f in (as_they_are, on_scaled) if f is not None]
    return tuple(fixes)


def describe(q: Quadratic, lr: float, is_scaled: bool) -> str:
    """The stable step and the conditioning of the features the model trained on, in words."""
    where = "the standardised features" if is_scaled else "these features"
    text = (f"full-batch SGD on {where} is stable only for lr below {q.stable_lr:.3g} (2 / the largest "
            f"eigenvalue of the loss's Hessian), and lr {lr:g} is {'above' if lr >= q.stable_lr else 'below'} it")
    if q.condition > 1e4:
        text += (f"; the Hessian's condition number is {q.condition:.3g}, so at any stable step SGD needs about "
                 f"{min(q.epochs_to_converge(q.best_lr()), 1e99):.2g} epochs to reach the least-squares optimum")
    return text
