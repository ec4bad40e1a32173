"""The training side's own errors: bad settings and a run that failed, both torchport errors (the family and
``Fix`` live in torchport.runtime.errors; data that cannot be used is its DataError, re-exported here)."""
from __future__ import annotations

from torchport.runtime.errors import DataError, FlagOf, Fix, TorchportError, render_fixes

__all__ = ["DataError", "FitWarning", "SettingsError", "TrainError", "TrainingDiverged"]


class TrainError(TorchportError):
    """Base of the training side's own errors: ``parameter`` names the constructor/function argument at
    fault (the CLI shows its flag)."""


class SettingsError(TrainError, ValueError):
    """A bad Regressor or ModelSpec setting; ``parameter`` is the setting's name."""


class TrainingDiverged(TrainError, RuntimeError):
    """The loss became NaN or infinite: the message says why (for a linear model, the largest stable learning
    rate, in closed form) and ``fixes`` what works instead."""
    exit_code = 1

    def __init__(self, message: str, *, parameter: str | None = "lr", fixes: tuple[Fix, ...] = ()):
        super().__init__(message, parameter=parameter, fixes=fixes)


class FitWarning(UserWarning):
    """A fit that ended but is worse than it should be (a linear fit far from the exact least-squares one):
    the message says how much, ``fixes`` what reaches the optimum."""

    def __init__(self, message: str, fixes: tuple[Fix, ...] = ()):
        super().__init__(message)
        self.message, self.fixes = message, tuple(fixes)

    def render(self, flag_of: FlagOf | None = None) -> str:
        return self.message + (f"; {render_fixes(self.fixes, flag_of)}" if self.fixes else "")

    def __str__(self) -> str:
        return self.render()


class DataTypeError(DataError, TypeError):
    """Values that are not real numbers (strings, objects, complex numbers): a TypeError too, as scikit-learn
    raises for them."""


class NotFittedError(TrainError, ValueError, AttributeError):
    """A method that needs a fitted model, called before fit: a ValueError and an AttributeError, as
    scikit-learn's NotFittedError is (``hasattr(reg, "coef_")`` is False before fit)."""
