"""torchport.train: datasets, models, the training loop, metrics, the inference table, plots and the training
report (uses torch; never imports export or runtime)."""
from torchport.train.datasets import DATASETS, Dataset, load_dataset, load_islands
from torchport.train.errors import DataError, SettingsError, TrainError, TrainingDiverged
from torchport.train.estimator import Regressor
from torchport.train.metrics import LeastSquares, exact_least_squares, mse, r2_score
from torchport.train.models import ModelSpec
from torchport.train.record import TrainingRecord

__all__ = [
    "DATASETS", "DataError", "Dataset", "LeastSquares", "ModelSpec", "Regressor", "SettingsError", "TrainError",
    "TrainingDiverged", "TrainingRecord", "exact_least_squares", "load_dataset", "load_islands", "mse", "r2_score",
]
