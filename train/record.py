"""The training record: what a bundle's manifest says, under "training", about how its model was trained (the
data, the settings, the run) and how well it fits (metrics, the exact least-squares fit, the inference
table). Frozen dataclasses with a validating ``from_json`` and a ``to_json`` that writes strict JSON: a value
that does not exist is None, with its reason in an "undefined" mapping."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.inference import Inference, InferenceUnavailable, ols_inference
from torchport.runtime.jsonfields import Fields, finite, finite_array
from torchport.train.lstsq import LeastSquaresFit, fit_least_squares
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


def training_fit(reg: Regressor, data: Dataset) -> LeastSquaresFit:
    """The exact least-squares fit of ``reg``'s training rows (with the covariance for a linear model), which
    the training record and the bundle's intervals share."""
    tr = reg.train_rows_
    linear = reg.spec_.kind == "linear"
    return fit_least_squares(data.X[tr], data.y[tr], bool(getattr(reg, "fit_intercept", True)), covariance=linear)


@dataclass(frozen=True)
class TrainingRecord:
    """How a model was trained and how well it fits.

    ``settings`` are the Regressor's parameters as given (less progress and checkpoint, which do not change
    the result); ``optimizer``, ``lr`` and ``plan`` (epochs, batch_size, patience, scaled) as resolved;
    ``fit_seconds`` is the wall time of the fit (of the last process, for a resumed run; None in records
    written before it was kept).
    ``metrics``, ``exact_least_squares`` and ``inference`` use the ``training_rows`` the model was fitted on
    (with an intercept unless ``settings["fit_intercept"]`` is False);
    with a validation split, ``validation_metrics`` and ``exact_validation`` are the model's and the exact
    fit's on the ``validation_rows`` held out (None without one). ``metrics`` carry the weight and bias of a
    linear model in raw units. ``inference`` is the least-squares table of a linear model, or None with the
    reason in ``inference_unavailable`` when the data cannot support one (None for both for an MLP).
    ``warnings`` say what was wrong with a fit that ended (a linear fit far from the exact one). Records
    written before the validation split was recorded read with every row as training rows."""

    dataset: DatasetRecord
    settings: dict
    optimizer: str
    lr: float | None
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
    training_rows: int | None = None
    validation_rows: int = 0
    validation_metrics: FitMetrics | None = None
    exact_validation: FitMetrics | None = None
    plan: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    fit_seconds: float | None = None

    @classmethod
    def from_fit(cls, reg: Regressor, data: Dataset, fit: LeastSquaresFit | None = None) -> "TrainingRecord":
        """The record of ``reg`` fitted on ``data`` (its training and held-out rows as the fit split them);
        ``fit``: ``training_fit(reg, data)`` where the caller has it."""
        linear = reg.spec_.kind == "linear"
        tr, va = reg.train_rows_, reg.val_rows_
        X, y = data.X[tr], data.y[tr]
        coef = (reg.coef_, reg.intercept_) if linear else (None, None)
        metrics = FitMetrics.of(y, reg.predict(X), *coef, data.target_names)
        intercept = bool(getattr(reg, "fit_intercept", True))
        fit = fit or training_fit(reg, data)
        exact = exact_least_squares(X, y, data.target_names, intercept, fit=fit)
        validation = exact_validation = None
        if len(va):
            validation = FitMetrics.of(data.y[va], reg.predict(data.X[va]), target_names=data.target_names)
            exact_validation = FitMetrics.of(data.y[va], exact.predict(data.X[va]), target_names=data.target_names)
        inference, unavailable = None, None
        if linear:
            try:
                inference = ols_inference(X, y, data.feature_names, data.target_names, fit_intercept=intercept,
                                          fit=fit)
            except InferenceUnavailable as e:
                unavailable = str(e)
        return cls(
            dataset=DatasetRecord.of(data), **cls._run(reg), metrics=metrics, exact_least_squares=exact,
            inference=inference, inference_unavailable=unavailable, feature_stats=FeatureStats.of(X),
            training_rows=int(len(tr)), validation_rows=int(len(va)), validation_metrics=validation,
            exact_validation=exact_validation)

    @classmethod
    def from_summary(cls, reg: Regressor, dataset: DatasetRecord, metrics: FitMetrics, exact: LeastSquares,
                     inference: Inference | None, inference_unavailable: str | None,
                     feature_stats: FeatureStats) -> "TrainingRecord":
        """The record of ``reg`` fitted on every row of a dataset it never held (read in chunks), from
        figures summed over those rows."""
        return cls(dataset=dataset, **cls._run(reg), metrics=metrics, exact_least_squares=exact, inference=inference,
                   inference_unavailable=inference_unavailable, feature_stats=feature_stats,
                   training_rows=dataset.rows, validation_rows=0)

    @staticmethod
    def _run(reg: Regressor) -> dict:
        """What the record says of the run itself: the settings, the optimizer and its plan, the loss, the time."""
        return dict(
            settings={k: _jsonable(v) for k, v in reg.get_params().items() if k not in RUN_ONLY_SETTINGS},
            optimizer=reg.optimizer_, lr=reg.lr_, device=reg.device_, epochs_run=reg.n_epochs_,
            best_epoch=reg.best_epoch_, final_loss=finite(reg.final_loss_),
            val_loss=finite(reg.val_loss_history_[-1]) if len(reg.val_loss_history_) else None,
            plan={"epochs": reg.epochs_, "batch_size": reg.batch_size_, "patience": reg.patience_,
                  "scaled": reg.scaled_, "threads": reg.threads_},
            warnings=tuple(str(w) for w in getattr(reg, "fit_warnings_", ())), fit_seconds=finite(reg.fit_seconds_))

    @property
    def rows_trained(self) -> int:
        """The rows the model was fitted on (every row of records from before the split was recorded)."""
        return self.dataset.rows if self.training_rows is None else self.training_rows

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset.to_json(),
            "settings": {k: _jsonable(v) for k, v in self.settings.items()},
            "optimizer": self.optimizer, "lr": finite(self.lr), "device": self.device, "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch, "final_loss": finite(self.final_loss), "val_loss": finite(self.val_loss),
            "plan": {k: _jsonable(v) for k, v in self.plan.items()},
            "training_rows": self.training_rows, "validation_rows": self.validation_rows,
            "metrics": self.metrics.to_json(),
            "validation_metrics": self.validation_metrics.to_json() if self.validation_metrics else None,
            "exact_least_squares": self.exact_least_squares.to_json(),
            "exact_validation": self.exact_validation.to_json() if self.exact_validation else None,
            "inference": self.inference.to_json() if self.inference is not None else None,
            "inference_unavailable": self.inference_unavailable,
            "feature_stats": self.feature_stats.to_json(),
            "warnings": list(self.warnings),
            "fit_seconds": finite(self.fit_seconds),
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "training") -> "TrainingRecord":
        """The record from ``to_json``'s object (or an older one, without the split); DataError naming the key
        for anything else."""
        f = Fields(obj, where)
        inference = f.get("inference", dict, optional=True)
        validation = f.get("validation_metrics", dict, optional=True)
        exact_validation = f.get("exact_validation", dict, optional=True)
        return cls(
            dataset=DatasetRecord.from_json(f.get("dataset", dict), f"{where}.dataset"),
            settings=dict(f.get("settings", dict)), optimizer=f.get("optimizer", str),
            lr=f.get("lr", float, optional=True),
            device=f.get("device", str), epochs_run=f.get("epochs_run", int),
            best_epoch=f.get("best_epoch", int, optional=True), final_loss=f.get("final_loss", float, optional=True),
            val_loss=f.get("val_loss", float, optional=True),
            metrics=FitMetrics.from_json(f.get("metrics", dict), f"{where}.metrics"),
            exact_least_squares=LeastSquares.from_json(f.get("exact_least_squares", dict),
                                                       f"{where}.exact_least_squares"),
            inference=Inference.from_json(inference, f"{where}.inference") if inference is not None else None,
            inference_unavailable=f.get("inference_unavailable", str, optional=True),
            feature_stats=FeatureStats.from_json(f.get("feature_stats", dict), f"{where}.feature_stats"),
            training_rows=f.get("training_rows", int, optional=True),
            validation_rows=f.get("validation_rows", int, optional=True) or 0,
            validation_metrics=FitMetrics.from_json(validation, f"{where}.validation_metrics") if validation else None,
            exact_validation=FitMetrics.from_json(exact_validation, f"{where}.exact_validation")
            if exact_validation else None,
            plan=dict(f.get("plan", dict, optional=True) or {}),
            warnings=tuple(f.get("warnings", list, optional=True) or ()),
            fit_seconds=f.get("fit_seconds", float, optional=True))
