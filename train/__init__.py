"""torchport.train: datasets, models and the training loop (uses torch; never imports export or runtime)."""
from torchport.train.datasets import DATASETS, DataError, Dataset, load_dataset, load_islands
from torchport.train.estimator import Regressor
from torchport.train.metrics import exact_least_squares, mse, r2_score

__all__ = [
    "DATASETS", "DataError", "Dataset", "Regressor",
    "exact_least_squares", "load_dataset", "load_islands", "mse", "r2_score",
]
