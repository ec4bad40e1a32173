"""torchport.train: datasets, models, the training loop, metrics, the inference table, plots and the training
report (uses torch; never imports export or runtime). Names are loaded on first use, so that a caller of
one light module (train.choices) does not import torch."""
from __future__ import annotations

import importlib

_NAMES = {
    "DATASETS": "datasets", "Dataset": "datasets", "load_dataset": "datasets", "load_islands": "datasets",
    "DataError": "errors", "SettingsError": "errors", "TrainError": "errors", "TrainingDiverged": "errors",
    "FitWarning": "errors", "Regressor": "estimator", "LeastSquares": "metrics",
    "exact_least_squares": "metrics", "mse": "metrics", "r2_score": "metrics", "ModelSpec": "models",
    "TrainingRecord": "record", "DataTypeError": "errors", "NotFittedError": "errors",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'torchport.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"torchport.train.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
