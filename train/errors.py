"""The training side's errors: bad settings, unusable data, a run that failed. Messages speak to Python
callers and name the argument at fault in ``parameter``; the `torchport` command shows its flag instead,
and says each suggested fix in its own terms (``render``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Fix:
    """Settings that resolve a problem, with what they do: said as ``name=value`` to Python callers and as
    flags on the command line (a setting to go back to its default, None, is said as dropping the flag)."""

    settings: dict = field(default_factory=dict)
    purpose: str = ""

    def render(self, flag_of: Callable[[str], str | None] | None = None) -> str:
        parts = []
        for name, value in self.settings.items():
            flag = flag_of(name) if flag_of else None
            if flag is None:
                parts.append(f"{name}={value!r}")
            elif value is None:
                parts.append(f"without {flag}")
            elif value is True:
                parts.append(flag)
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return " ".join(parts) if flag_of else ", ".join(parts)


def render_fixes(fixes: tuple[Fix, ...], flag_of: Callable[[str], str | None] | None = None) -> str:
    """'use A (what it does), or B (...)' for the fixes, in Python's or the command's terms."""
    said = [f.render(flag_of) + (f" ({f.purpose})" if f.purpose else "") for f in fixes]
    return "use " + ", or ".join(said) if said else ""


class TrainError(Exception):
    """Base: bad settings, unusable data, or a run that failed. ``parameter`` names the constructor/function
    argument at fault (the CLI shows its flag); ``fixes`` are settings that resolve it, best first;
    ``exit_code`` is what the `torchport` command exits with."""
    exit_code = 2

    def __init__(self, message: str, *, parameter: str | None = None, fixes: tuple[Fix, ...] = ()):
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.fixes = tuple(fixes)

    def render(self, flag_of: Callable[[str], str | None] | None = None) -> str:
        """The message and its fixes; with ``flag_of`` (parameter name -> flag or None) in the command's terms."""
        return self.message + (f"; {render_fixes(self.fixes, flag_of)}" if self.fixes else "")

    def __str__(self) -> str:
        return self.render()


class DataError(TrainError, ValueError):
    """Data that cannot be used: the message names the file, column and row, and the fix."""


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

    def render(self, flag_of: Callable[[str], str | None] | None = None) -> str:
        return self.message + (f"; {render_fixes(self.fixes, flag_of)}" if self.fixes else "")

    def __str__(self) -> str:
        return self.render()


class DataTypeError(DataError, TypeError):
    """Values that are not real numbers (strings, objects, complex numbers): a TypeError too, as scikit-learn
    raises for them."""


class NotFittedError(TrainError, ValueError, AttributeError):
    """A method that needs a fitted model, called before fit: a ValueError and an AttributeError, as
    scikit-learn's NotFittedError is (``hasattr(reg, "coef_")`` is False before fit)."""
