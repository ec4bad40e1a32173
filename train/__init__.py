"""torchport.train: datasets, models, the training loop, the least-squares core, metrics, the inference table,
plots and the training report (uses torch; of the runtime it imports only the torch-free foundation: errors,
strict JSON, tables). Names are loaded on first use, so that a caller of one light module (train.choices) does
not import torch."""
from __future__ import annotations

from torchport.runtime.lazy import lazy_names

_NAMES = {
    "DATASETS": "datasets", "Dataset": "datasets", "load_dataset": "datasets", "load_islands": "datasets",
    "DataError": "errors", "SettingsError": "errors", "TrainError": "errors", "TrainingDiverged": "errors",
    "FitWarning": "errors", "Regressor": "estimator", "LeastSquares": "metrics",
    "exact_least_squares": "metrics", "mse": "metrics", "r2_score": "metrics", "ModelSpec": "models",
    "TrainingRecord": "record", "DataTypeError": "errors", "NotFittedError": "errors",
    "fit_least_squares": "lstsq", "LeastSquaresFit": "lstsq",
}
__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES)
