"""The training side's errors: bad settings, unusable data, a run that failed. Messages speak to Python
callers and name the argument at fault in ``parameter``; the `torchport` command shows its flag instead."""
from __future__ import annotations


class TrainError(Exception):
    """Base: bad settings, unusable data, or a run that failed. ``parameter`` names the constructor/function
    argument at fault (the CLI shows its flag); ``exit_code`` is what the `torchport` command exits with."""
    exit_code = 2

    def __init__(self, message: str, *, parameter: str | None = None):
        super().__init__(message)
        self.message = message
        self.parameter = parameter

    def __str__(self) -> str:
        return self.message


class DataError(TrainError, ValueError):
    """Data that cannot be used: the message names the file, column and row, and the fix."""


class SettingsError(TrainError, ValueError):
    """A bad Regressor or ModelSpec setting; ``parameter`` is the setting's name."""


class TrainingDiverged(TrainError, RuntimeError):
    """The loss became NaN or infinite: the learning rate is too large for this data."""
    exit_code = 1

    def __init__(self, message: str, *, parameter: str | None = "lr"):
        super().__init__(message, parameter=parameter)
