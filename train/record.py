"""The training record: what a bundle's manifest says, under "training", about how its model was trained (the
data, the settings, the run) and how well it fits (metrics, the exact least-squares fit, the inference
table). Frozen dataclasses with a validating ``from_json`` and a ``to_json`` that writes strict JSON: a value
that does not exist is None, with its reason in an "undefined" mapping."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.inference import Inference, InferenceUnavailable, ols_inference
from torchport.train.jsonfields import Fields, finite, finite_array
from torchport.train.metrics import FitMetrics, LeastSquares, exact_least_squares

# Constructor arguments that change how a run is watched or where it checkpoints, never its result.
RUN_ONLY_SETTINGS = ("progress", "checkpoint")


def _jsonable(value: Any) -> Any:
    """A parameter value as JSON: tuples as lists, numpy scalars as numbers, paths as strings, and a
    non-finite float as None."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        return finite(value)
    return value


@dataclass(frozen=True)
class DatasetRecord:
    """Which data the model was trained on: its name and source, its size and columns, and a sha256 of its
    column names and values (``Dataset.fingerprint``)."""

    name: str
    source: str
    rows: int
    features: tuple[str, ...]
    targets: tuple[str, ...]
    fingerprint_sha256: str

    @classmethod
    def of(cls, data: Dataset) -> "DatasetRecord":
        return cls(data.name, data.source, int(len(data.X)), tuple(data.feature_names), tuple(data.target_names),
                   data.fingerprint)

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "rows": self.rows, "features": list(self.features),
                "targets": list(self.targets), "fingerprint_sha256": self.fingerprint_sha256}

    @classmethod
    def from_json(cls, obj: Any, where: str = "dataset") -> "DatasetRecord":
        f = Fields(obj, where)
        return cls(f.get("name", str), f.get("source", str), f.get("rows", int), f.strings("features"),
                   f.strings("targets"), f.get("fingerprint_sha256", str))


@dataclass(frozen=True)
class FeatureStats:
    """Per feature of the training data: mean, standard deviation (population), minimum and maximum."""

    mean: tuple[float | None, ...]
    std: tuple[float | None, ...]
    min: tuple[float | None, ...]
    max: tuple[float | None, ...]

    KEYS = ("mean", "std", "min", "max")

    @classmethod
    def of(cls, X: np.ndarray) -> "FeatureStats":
        X = np.asarray(X, np.float64)
        return cls(finite_array(X.mean(axis=0)), finite_array(X.std(axis=0)), finite_array(X.min(axis=0)),
                   finite_array(X.max(axis=0)))

    def to_json(self) -> dict:
        return {key: list(getattr(self, key)) for key in self.KEYS}

    @classmethod
    def from_json(cls, obj: Any, where: str = "feature_stats") -> "FeatureStats":
        f = Fields(obj, where)
        return cls(*(f.numbers(key) for key in cls.KEYS))


@dataclass(frozen=True)
class TrainingRecord:
    """How a model was trained and how well it fits its training data.

    ``settings`` are the Regressor's parameters as given (less progress and checkpoint, which do not change
    the result); ``optimizer`` and ``lr`` as resolved; ``fit_seconds`` is the wall time of the fit (of the
    last process, for a resumed run; None in records written before it was kept). ``metrics`` carry the weight and bias of a linear model
    in raw units. ``inference`` is the least-squares table of a linear model, or None with the reason in
    ``inference_unavailable`` when the data cannot support one (None for both for an MLP)."""

    dataset: DatasetRecord
    settings: dict
    optimizer: str
    lr: float
    device: str
    epochs_run: int
    best_epoch: int | None
    final_loss: float | None
    val_loss: float | None
    metrics: FitMetrics
    exact_least_squares: LeastSquares
    inference: Inference | None
    inference_unavailable: str | None
    feature_stats: FeatureStats
    fit_seconds: float | None = None

    @classmethod
    def from_fit(cls, reg: Regressor, data: Dataset) -> "TrainingRecord":
        """The record of ``reg`` fitted on ``data``."""
        linear = reg.spec_.kind == "linear"
        metrics = FitMetrics.of(data.y, reg.predict(data.X), reg.coef_ if linear else None,
                                reg.intercept_ if linear else None, data.target_names)
        inference, unavailable = None, None
        if linear:
            try:
                inference = ols_inference(data.X, data.y, data.feature_names, data.target_names)
            except InferenceUnavailable as e:
                unavailable = str(e)
        settings = {k: _jsonable(v) for k, v in reg.get_params().items() if k not in RUN_ONLY_SETTINGS}
        return cls(
            dataset=DatasetRecord.of(data), settings=settings, optimizer=reg.optimizer_, lr=reg.lr_,
            device=reg.device_, epochs_run=reg.n_epochs_, best_epoch=reg.best_epoch_, final_loss=finite(reg.final_loss_),
            val_loss=finite(reg.val_loss_history_[-1]) if len(reg.val_loss_history_) else None, metrics=metrics,
            exact_least_squares=exact_least_squares(data.X, data.y, data.target_names), inference=inference,
            inference_unavailable=unavailable, feature_stats=FeatureStats.of(data.X),
            fit_seconds=finite(reg.fit_seconds_))

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset.to_json(),
            "settings": {k: _jsonable(v) for k, v in self.settings.items()},
            "optimizer": self.optimizer, "lr": self.lr, "device": self.device, "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch, "final_loss": finite(self.final_loss), "val_loss": finite(self.val_loss),
            "metrics": self.metrics.to_json(),
            "exact_least_squares": self.exact_least_squares.to_json(),
            "inference": self.inference.to_json() if self.inference is not None else None,
            "inference_unavailable": self.inference_unavailable,
            "feature_stats": self.feature_stats.to_json(),
            "fit_seconds": finite(self.fit_seconds),
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "training") -> "TrainingRecord":
        """The record from ``to_json``'s object; DataError naming the key for anything else."""
        f = Fields(obj, where)
        inference = f.get("inference", dict, optional=True)
        return cls(
            dataset=DatasetRecord.from_json(f.get("dataset", dict), f"{where}.dataset"),
            settings=dict(f.get("settings", dict)), optimizer=f.get("optimizer", str), lr=f.get("lr", float),
            device=f.get("device", str), epochs_run=f.get("epochs_run", int),
            best_epoch=f.get("best_epoch", int, optional=True), final_loss=f.get("final_loss", float, optional=True),
            val_loss=f.get("val_loss", float, optional=True),
            metrics=FitMetrics.from_json(f.get("metrics", dict), f"{where}.metrics"),
            exact_least_squares=LeastSquares.from_json(f.get("exact_least_squares", dict),
                                                       f"{where}.exact_least_squares"),
            inference=Inference.from_json(inference, f"{where}.inference") if inference is not None else None,
            inference_unavailable=f.get("inference_unavailable", str, optional=True),
            feature_stats=FeatureStats.from_json(f.get("feature_stats", dict), f"{where}.feature_stats"),
            fit_seconds=f.get("fit_seconds", float, optional=True))
