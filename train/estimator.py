"""Regressor: fit/predict for the tutorial's linear model and MLPs. It follows scikit-learn's estimator
contract (get_params/set_params, clone, Pipeline, GridSearchCV, and its estimator checks) without importing
scikit-learn, which only the tests need; train/validation.py checks its inputs in scikit-learn's words.

Defaults that reach the optimum: a linear model is solved exactly (float64 least squares, standardised
inside the model when the raw features are ill-conditioned) unless an iterative run is asked for; the
tutorial's recipe is ``optimizer='sgd'`` (full-batch SGD, lr 0.002, 6000 epochs). An MLP trains with Adam,
full batch on small tables and in mini-batches with an epoch budget that scales with the rows on large
ones, stopping early on a validation split."""
from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import math
import numbers
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from torchport.train import advice
from torchport.train.choices import DEFAULT_LR, OPTIMIZERS, SCALES, SCHEDULES
from torchport.runtime.errors import DataError, Fix
from torchport.runtime.files import write_bytes
from torchport.train.errors import FitWarning, SettingsError, TrainingDiverged
from torchport.train.fast import fit_full_batch_sgd
from torchport.train.lstsq import fit_least_squares
from torchport.train.tsqr import Reduction
from torchport.train.metrics import exact_least_squares, mse, r2_score
from torchport.train.models import (
    MODEL_KINDS, ModelSpec, build_model, check_activation, core_and_scalers, linear_coefficients, number_in,
    scaler_stats, set_linear_estimates, set_scaling, set_scaling_stats, whole_number,
)
from torchport.train.progress import Reporter
from torchport.train.validation import check_is_fitted, features, is_dask_collection, training_arrays

CHECKS_PER_RUN = 100  # reading the loss syncs the host: the divergence check and checkpoints happen this often
# The settings of an iterative run, at their defaults; giving any of them to a linear model without an
# optimizer asks for SGD (the tutorial's) instead of the exact solution.
ITERATIVE = {"lr": None, "momentum": 0.0, "epochs": None, "batch_size": None, "patience": None,
             "lr_schedule": "none"}
SGD_EPOCHS = 6000          # the tutorial's
LBFGS_EPOCHS = 200         # each up to 20 iterations with a line search
FULL_BATCH_ROWS = 4096     # an MLP trains on the full batch up to this many training rows
BATCH_ROWS = 1024          # and in mini-batches of this many rows above it,
STEP_BUDGET = 20_000       # for about this many optimizer steps (MIN_EPOCHS to SGD_EPOCHS epochs)
MIN_EPOCHS = 5
SCALE_ABOVE_CONDITION = 100.0  # a linear model is standardised when cond([X, 1]) of its raw features is above
UNDERFIT = 0.01            # an iterative linear fit whose MSE is this much above the exact fit's says so
# A CPU step over at most this many values (batch rows x the widest layer) runs on one thread: a thread
# pool's wake-ups cost more than they save on such small ops, and far more when other work shares the cores.
ONE_THREAD_VALUES = 1 << 17
PREDICT_ROWS = 1 << 16     # predict runs the float64 module on this many rows at a time (bounded memory)


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU; 'cuda' without a GPU is a SettingsError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SettingsError(f"device {device!r} was asked for but torch sees no CUDA GPU "
                                f"(torch {torch.__version__}); use device='cpu' or device='auto'", parameter="device")
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise SettingsError(f"device {device!r} is not a CUDA device name ({e})", parameter="device") from None
    raise SettingsError(f"unknown device {device!r}; expected auto, cpu or cuda", parameter="device")


@dataclass(frozen=True)
class _Settings:
    """The constructor's arguments, checked, with the defaults filled in; ``plan`` fills in those that depend
    on the data (the scaling, epochs, mini-batches and early stopping), which is what fit trains with."""

    model: str
    optimizer: str
    lr: float | None
    momentum: float
    epochs: int | None
    batch_size: int | None
    val_fraction: float
    patience: int | None
    lr_schedule: str
    scale: str
    seed: int
    device: torch.device
    fit_intercept: bool = True
    scaled: bool | None = None
    threads: int | None = None
    calibration_fraction: float = 0.0

    @property
    def check_every(self) -> int:
        return max(1, (self.epochs or 1) // CHECKS_PER_RUN)

    def plan(self, X_train: np.ndarray, widest: int = 1) -> "_Settings":
        """The settings with the data-dependent defaults resolved for these training rows (float64) and a
        model whose widest layer has ``widest`` units."""
        scaled = {"on": True, "off": False}.get(self.scale)
        if scaled is None:
            scaled = self.model == "mlp" or raw_condition(X_train, self.fit_intercept) > SCALE_ABOVE_CONDITION
        batch, epochs, n = self.batch_size, self.epochs, len(X_train)
        if batch is None and self.model == "mlp" and self.optimizer != "lbfgs" and n > FULL_BATCH_ROWS:
            batch = BATCH_ROWS
        if self.optimizer == "exact":
            epochs = 0
        elif epochs is None:
            epochs = LBFGS_EPOCHS if self.optimizer == "lbfgs" else SGD_EPOCHS
            if batch is not None and batch < n:
                epochs = min(SGD_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / math.ceil(n / batch))))
        patience = self.patience
        if patience is None and self.val_fraction and self.optimizer != "exact":
            patience = max(MIN_EPOCHS, epochs // 10)
        return replace(self, scaled=scaled, batch_size=batch, epochs=epochs, patience=patience,
                       threads=self._threads(min(batch or n, n), widest))

    def _threads(self, rows: int, widest: int) -> int | None:
        """One intra-op thread for small CPU steps (ONE_THREAD_VALUES), else torch's own setting (None)."""
        return 1 if self.device.type == "cpu" and rows * widest <= ONE_THREAD_VALUES else None


def raw_condition(X: np.ndarray, fit_intercept: bool = True) -> float:
    """The 2-norm condition number of [X, 1] (of X without an intercept): how ill-conditioned an iterative
    linear fit on these raw features is."""
    A = np.asarray(X, np.float64)
    A = np.column_stack([A, np.ones(len(A))]) if fit_intercept else A
    with np.errstate(all="ignore"):
        return float(np.linalg.cond(A)) if len(A) else 1.0


@dataclass
class _Run:
    """One fit in progress: the module and its training rows on the device, the optimizer, and the progress
    so far (what a training checkpoint holds)."""

    key: str
    spec: ModelSpec
    module: nn.Module
    core: nn.Module
    X_tr: torch.Tensor
    y_tr: torch.Tensor
    X_va: torch.Tensor
    y_va: torch.Tensor
    optimizer: torch.optim.Optimizer | None
    scheduler: Any
    shuffle: torch.Generator
    losses: torch.Tensor
    loss_fn: nn.Module = field(default_factory=nn.MSELoss)
    val_losses: list[float] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = -1
    best_state: dict | None = None
    start: int = 0             # epochs done before this fit (resumed from a checkpoint)
    epochs_run: int = 0        # epochs done
    theta: torch.Tensor | None = None  # the fast path's exact float64 state ([W^T; b]) at the last check
    reporter: Reporter | None = None


class Regressor:
    """Fits a torch regression model with MSE loss; ``module_`` is the fitted module (raw features in,
    targets in their own units out) on the CPU, in eval mode, and ``predict`` runs it in float64.

    ``optimizer`` None picks for the model: a linear model is solved exactly ('exact': float64 least
    squares by train/lstsq.py, its estimates kept in float64 as ``coef_`` and ``intercept_``), or trained
    with SGD (the tutorial's: full batch, lr 0.002, 6000 epochs) when an iterative setting (lr, momentum,
    epochs, batch_size, patience, lr_schedule) is given; an MLP trains with Adam (lr 1e-3). ``scale`` 'auto'
    standardises an MLP's features and targets inside the model, and a linear model's when its raw features
    are ill-conditioned (cond([X, 1]) above 100); weight and bias are still reported in the data's units.
    ``epochs``, ``batch_size`` and ``patience`` None: an MLP trains on the full batch for 6000 epochs up to
    4096 training rows, and above that in mini-batches of 1024 rows for about 20,000 steps; with
    ``val_fraction`` it stops early after ``patience`` epochs (a tenth of them, at least 5) without a better
    validation loss and keeps the best weights. ``calibration_fraction`` holds out a seeded random share of the
    rows of its own (``calibration_rows_``), used neither to fit nor to stop: the rows a model's split-conformal
    prediction intervals are calibrated on (without it, the validation rows). ``hidden``, ``activation`` and ``dropout`` shape an MLP only.
    ``fit_intercept`` False fits a linear model without an intercept (its bias is held at zero and its
    scaling does not centre; an MLP is refused). ``progress``: True for a bar on stderr, or a function given a
    ``torchport.train.progress.Progress`` at least every half second. Settings are kept as given and
    checked when ``fit`` starts (``check_params`` checks them earlier), as scikit-learn's estimators do."""

    def __init__(self, model: str = "linear", hidden: Sequence[int] = (32, 32), activation: str = "relu",
                 dropout: float = 0.0, fit_intercept: bool = True, scale: str = "auto", optimizer: str | None = None,
                 lr: float | None = None, momentum: float = 0.0, epochs: int | None = None,
                 batch_size: int | None = None, val_fraction: float = 0.0, calibration_fraction: float = 0.0,
                 patience: int | None = None,
                 lr_schedule: str = "none", seed: int = 0, device: str = "auto",
                 progress: bool | Callable[..., Any] = False, checkpoint: str | os.PathLike | None = None):
        self.model = model
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.fit_intercept = fit_intercept
        self.scale = scale
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.epochs = epochs
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.calibration_fraction = calibration_fraction
        self.patience = patience
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.device = device
        self.progress = progress
        self.checkpoint = checkpoint

    # --- scikit-learn's estimator contract ---

    @classmethod
    def _param_names(cls) -> list[str]:
        """The constructor's argument names, in order: the estimator's parameters."""
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments as they were given (``Regressor(**r.get_params())`` is a copy)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Regressor":
        """Set constructor arguments by name (checked when fit starts); returns self."""
        names = self._param_names()
        for name in params:
            if name not in names:
                raise SettingsError(f"Regressor has no parameter {name!r}; its parameters are {', '.join(names)}",
                                    parameter=name)
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: a regressor of one or several targets (scikit-learn is imported only here,
        when it asks)."""
        from sklearn.utils import RegressorTags, Tags, TargetTags
        return Tags(estimator_type="regressor", regressor_tags=RegressorTags(),
                    target_tags=TargetTags(required=True, single_output=True, multi_output=True))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "module_")

    # --- settings ---

    def check_params(self) -> str:
        """Raise SettingsError naming the first bad setting, before any work is done; returns the optimizer
        the fit will use ('exact' for a linear model given no iterative setting)."""
        return self._settings().optimizer

    def _settings(self) -> _Settings:
        """The one check of the settings (SettingsError with ``parameter``), defaults filled in."""
        if self.model not in MODEL_KINDS:
            raise SettingsError(f"model must be one of {', '.join(MODEL_KINDS)}; got {self.model!r}", parameter="model")
        opt = self.optimizer or self._default_optimizer()
        if opt not in OPTIMIZERS:
            raise SettingsError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {opt!r}",
                                parameter="optimizer")
        if opt == "exact":
            self._check_exact()
        lr = None if opt == "exact" else DEFAULT_LR[opt] if self.lr is None else self.lr
        if lr is not None and not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(lr)
                                   and lr > 0):
            raise SettingsError(f"lr must be a positive number; got {lr!r}", parameter="lr")
        epochs = None if self.epochs is None else whole_number(self.epochs, "epochs", 1)
        momentum = number_in(self.momentum, "momentum", 0.0, 1.0)
        if momentum and opt != "sgd":
            raise SettingsError(f"momentum is for optimizer='sgd' only; got momentum={momentum!r} with optimizer "
                                f"{opt!r}", parameter="momentum")
        batch_size = None if self.batch_size is None else whole_number(self.batch_size, "batch_size", 1)
        if batch_size is not None and opt == "lbfgs":
            raise SettingsError("lbfgs trains on the full batch; leave batch_size=None", parameter="batch_size")
        val_fraction = number_in(self.val_fraction, "val_fraction", 0.0, 1.0)
        calibration_fraction = number_in(self.calibration_fraction, "calibration_fraction", 0.0, 1.0)
        patience = None if self.patience is None else whole_number(self.patience, "patience", 1)
        if patience is not None and not val_fraction:
            raise SettingsError("patience (early stopping) needs a validation split (val_fraction > 0); got "
                                f"patience={patience!r}, val_fraction={self.val_fraction!r}", parameter="patience")
        if self.lr_schedule not in SCHEDULES:
            raise SettingsError(f"lr_schedule must be one of {', '.join(SCHEDULES)}; got {self.lr_schedule!r}",
                                parameter="lr_schedule")
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise SettingsError(f"fit_intercept must be True or False; got {self.fit_intercept!r}",
                                parameter="fit_intercept")
        if not self.fit_intercept and self.model != "linear":
            raise SettingsError("fit_intercept=False (no intercept) is for model='linear'; an mlp's layers keep "
                                "their biases: leave fit_intercept=True", parameter="fit_intercept")
        if self.scale not in SCALES:
            raise SettingsError(f"scale must be one of {', '.join(SCALES)}; got {self.scale!r}", parameter="scale")
        check_activation(self.activation)
        if self.model == "mlp":  # the spec checks hidden and dropout; the data's widths come in fit
            self._spec(1, 1, scaled=True)
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise SettingsError(f"checkpoint must be a file path or None; got {self.checkpoint!r}",
                                parameter="checkpoint")
        if not (isinstance(self.progress, bool) or callable(self.progress)):
            raise SettingsError(f"progress must be True, False or a function; got {self.progress!r}",
                                parameter="progress")
        return _Settings(self.model, opt, None if lr is None else float(lr), momentum, epochs, batch_size,
                         val_fraction, patience, self.lr_schedule, self.scale, whole_number(self.seed, "seed", 0),
                         resolve_device(self.device), bool(self.fit_intercept),
                         calibration_fraction=calibration_fraction)

    def _default_optimizer(self) -> str:
        """An MLP's is Adam; a linear model's the exact solution, or SGD when an iterative setting is given."""
        if self.model == "mlp":
            return "adam"
        iterative = any(not _same(getattr(self, name), default) for name, default in ITERATIVE.items())
        return "sgd" if iterative else "exact"

    def _check_exact(self) -> None:
        if self.model != "linear":
            raise SettingsError("optimizer='exact' (the least-squares solution) is for model='linear'; an mlp "
                                "trains with 'adam', 'sgd' or 'lbfgs'", parameter="optimizer")
        for name, default in ITERATIVE.items():
            if not _same(getattr(self, name), default):
                raise SettingsError(f"{name}={getattr(self, name)!r} does not apply to optimizer='exact' (the "
                                    f"least-squares solution, in one step); leave {name}={default!r}, or train "
                                    "iteratively with optimizer='sgd'", parameter=name)

    def _spec(self, n_features: int, n_targets: int, scaled: bool) -> ModelSpec:
        mlp = dict(hidden=self.hidden, activation=self.activation, dropout=self.dropout) if self.model == "mlp" else {}
        return ModelSpec(self.model, n_features, n_targets, **mlp, scale_features=scaled, scale_targets=scaled)

    # --- fitting ---

    def fit(self, X: np.ndarray, y: np.ndarray, resume: bool = False) -> "Regressor":
        """Train on X (rows x features) and y (rows, or rows x targets).

        With ``checkpoint`` set, the training state of an iterative run is saved there (atomically) at every
        check, about 100 times a run, so an interrupted or crashed run can go on with ``fit(X, y,
        resume=True)`` and reach the same final weights as an uninterrupted run. An iterative linear fit
        much worse than the exact one warns (FitWarning) and says so in ``fit_warnings_``.

        A Dask DataFrame or Array (y a Dask Series or DataFrame of the same rows, or an Array) is reduced where
        it lives, partition by partition on the workers (train/dask_fit.py), for the exact solution of a linear
        model: the client holds only small square matrices (``fit_reduced``)."""
        if is_dask_collection(X):
            from torchport.train.dask_fit import reduce_dask
            self.check_reducible(self._settings())
            reduction, one_d = reduce_dask(X, y, fit_intercept=bool(self.fit_intercept))
            return self.fit_reduced(reduction, one_d)
        started = time.perf_counter()
        s = self._settings()
        self._estimates = None
        if resume and self.checkpoint is None:
            raise SettingsError("resume=True needs checkpoint=, the path the interrupted run was given",
                                parameter="checkpoint")
        X64, y64, one_d = training_arrays(X, y)
        X32, y32 = X64.astype(np.float32), y64.astype(np.float32)
        train_idx, val_idx, calibration_idx = self._split_rows(len(X32), s)
        widest = max([X32.shape[1], y32.shape[1], *(self.hidden if self.model == "mlp" else ())])
        s = s.plan(X64[train_idx], widest)
        run = self._start(X32, y32, s, train_idx, val_idx)
        if resume and s.optimizer != "exact":
            self._restore(run)
        run.reporter = Reporter(self.progress, s.epochs, run.start) if s.epochs else None
        threads = torch.get_num_threads()
        try:
            if s.optimizer == "exact":
                self._fit_exact(run, X64[train_idx], y64[train_idx], s.fit_intercept)
            elif self._closed_form_applies(run, s):
                if run.start < s.epochs:
                    self._fit_closed_form(run, s)
            else:
                torch.set_num_threads(s.threads or threads)
                self._epoch_loop(run, s)
        finally:
            torch.set_num_threads(threads)
            if run.reporter is not None:
                run.reporter.close()
        self._finish(run, s, X32.shape[1], one_d, train_idx, val_idx)
        self.calibration_rows_ = calibration_idx
        self.fit_seconds_ = time.perf_counter() - started
        self.fit_warnings_ = self._underfit(run, s, X64[train_idx], y64[train_idx])
        for w in self.fit_warnings_:
            warnings.warn(w, stacklevel=2)
        return self

    def fit_reduced(self, reduction: Reduction, one_d: bool = False) -> "Regressor":
        """Fit a linear model exactly from a least-squares reduction of rows it never holds (train/tsqr.py: a
        file read in chunks, a Dask collection reduced on its workers). ``coef_`` and ``intercept_`` are the
        reduction's float64 estimates; the scaling (``scale``, or raw features ill-conditioned) comes from its
        column statistics; ``loss_history_`` holds the exact fit's float64 loss in the space the model was
        fitted in; ``train_rows_`` is every row. ``one_d``: predict answers (rows,), as for a 1-D y."""
        started = time.perf_counter()
        s = self._settings()
        self.check_reducible(s)
        if reduction.fit_intercept != s.fit_intercept:
            raise SettingsError(f"the reduction was made with fit_intercept={reduction.fit_intercept}; the Regressor "
                                f"has fit_intercept={s.fit_intercept}", parameter="fit_intercept")
        fit = reduction.fit()
        f, t = reduction.n_features, reduction.n_targets
        scaled = {"on": True, "off": False}.get(s.scale)
        if scaled is None:
            scaled = reduction.raw_condition() > SCALE_ABOVE_CONDITION
        s = replace(s, scaled=scaled, epochs=0, batch_size=None, patience=None, threads=None)
        spec = self._spec(f, t, scaled)
        torch.manual_seed(s.seed)
        module = build_model(spec)
        mean, std = reduction.moments()
        set_scaling_stats(module, mean[:f], std[:f], mean[f:], std[f:])
        core, _, s_out = core_and_scalers(module)
        if not s.fit_intercept:
            core.bias.requires_grad_(False)
        self._estimates = (fit.coef, fit.intercept)
        set_linear_estimates(module, fit.coef, fit.intercept)
        _, std_out = scaler_stats(s_out, t)
        loss = float(np.mean(fit.residual_ss / fit.n_rows / std_out ** 2))
        empty = torch.empty(0, f)
        run = _Run("", spec, module, core, empty, torch.empty(0, t), empty, torch.empty(0, t), None, None,
                   torch.Generator().manual_seed(s.seed), torch.tensor([loss]))
        self._finish(run, s, f, one_d, np.arange(fit.n_rows), np.arange(0))
        self.fit_seconds_ = time.perf_counter() - started
        self.fit_warnings_ = []
        return self

    def check_reducible(self, s: _Settings | None = None) -> None:
        """Raise SettingsError unless these settings fit from a reduction: the exact solution of a linear model
        on every row, nothing else."""
        s = self._settings() if s is None else s
        if self.model != "linear" or s.optimizer != "exact" or s.val_fraction or s.calibration_fraction:
            raise SettingsError("rows reduced without being held (a Dask collection, a file read in chunks) fit "
                                "only the exact solution of a linear model on every row: use model='linear', "
                                "optimizer=None or 'exact', val_fraction=0, calibration_fraction=0",
                                parameter="optimizer")

    @staticmethod
    def _split_rows(n: int, s: _Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training rows, validation rows, calibration rows): seeded random shares ``val_fraction`` and
        ``calibration_fraction`` of the rows are held out (the validation rows first, as without calibration)."""
        if not s.val_fraction and not s.calibration_fraction:
            return np.arange(n), np.arange(0), np.arange(0)
        n_val = max(1, int(round(n * s.val_fraction))) if s.val_fraction else 0
        n_cal = max(1, int(round(n * s.calibration_fraction))) if s.calibration_fraction else 0
        if n_val + n_cal >= n:
            held = " and ".join(f"{name} {value}" for name, value in (("val_fraction", s.val_fraction),
                                                                      ("calibration_fraction", s.calibration_fraction))
                                if value)
            raise SettingsError(f"{held} {'leave' if n_val and n_cal else 'leaves'} no training rows out of {n}",
                                parameter="val_fraction" if n_val else "calibration_fraction")
        perm = np.random.default_rng(s.seed).permutation(n)
        return np.sort(perm[n_val + n_cal:]), np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_cal])

    def _start(self, X: np.ndarray, y: np.ndarray, s: _Settings, train_idx: np.ndarray,
               val_idx: np.ndarray) -> _Run:
        """Build the seeded module on the device, learn its scaling from the training rows and set up the
        optimizer; the core then learns in the standardised space, the scalers are fixed data statistics."""
        spec = self._spec(X.shape[1], y.shape[1], s.scaled)
        torch.manual_seed(s.seed)
        module = build_model(spec).to(s.device)
        Xt, yt = torch.from_numpy(X).to(s.device), torch.from_numpy(y).to(s.device)
        set_scaling(module, Xt[train_idx], yt[train_idx], centre=s.fit_intercept)
        core, s_in, s_out = core_and_scalers(module)
        if not s.fit_intercept:  # no intercept: the bias stays zero (scaling without centring keeps it so)
            with torch.no_grad():
                core.bias.zero_()
            core.bias.requires_grad_(False)
        with torch.no_grad():
            Xs = s_in(Xt) if s_in is not None else Xt
            ys = (yt - s_out.mean) / s_out.std if s_out is not None else yt
        optimizer = None if s.optimizer == "exact" else self._make_optimizer(core.parameters(), s)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, s.epochs) \
            if s.lr_schedule == "cosine" else None
        return _Run(_state_key(s, spec, X, y), spec, module, core, Xs[train_idx], ys[train_idx], Xs[val_idx],
                    ys[val_idx], optimizer, scheduler, torch.Generator().manual_seed(s.seed),
                    torch.empty(max(s.epochs, 1), device=s.device))

    def _make_optimizer(self, params, s: _Settings) -> torch.optim.Optimizer:
        if s.optimizer == "sgd":
            return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum)
        if s.optimizer == "adam":
            return torch.optim.Adam(params, lr=s.lr)
        return torch.optim.LBFGS(params, lr=s.lr, max_iter=20, line_search_fn="strong_wolfe")

    @staticmethod
    def _closed_form_applies(run: _Run, s: _Settings) -> bool:
        """Whether the run is the tutorial's loop (full-batch plain SGD on a linear layer, no validation
        split or schedule), which train/fast.py runs as one closed-form matrix step per epoch."""
        return isinstance(run.core, nn.Linear) and s.optimizer == "sgd" and not s.momentum and \
            s.batch_size is None and not len(run.X_va) and run.scheduler is None and s.fit_intercept

    def _fit_exact(self, run: _Run, X: np.ndarray, y: np.ndarray, fit_intercept: bool) -> None:
        """The least-squares solution in float64 (train/lstsq.py), kept as ``coef_`` and ``intercept_``, and
        set as the module's weights in the space its core sees (the features and targets scaled by the model's
        own float32 statistics), so the module computes the optimum up to float32 rounding."""
        fit = fit_least_squares(X, y, fit_intercept, covariance=False)
        self._estimates = (fit.coef, fit.intercept)
        set_linear_estimates(run.module, fit.coef, fit.intercept)
        core = run.core
        with torch.no_grad():
            run.losses[0] = run.loss_fn(core(run.X_tr), run.y_tr)
            if len(run.X_va):
                run.val_losses.append(float(run.loss_fn(core(run.X_va), run.y_va)))

    def _fit_closed_form(self, run: _Run, s: _Settings) -> None:
        start = run.start

        def keep_state(done: int, theta: torch.Tensor, seen: torch.Tensor) -> None:
            run.theta = theta.cpu()
            run.losses[start:start + done] = seen

        rest = fit_full_batch_sgd(run.core, run.X_tr, run.y_tr, s.lr, s.epochs - start,
                                  check_every=s.check_every, on_check=lambda d, v: self._check(run, s, start + d, v),
                                  theta0=run.theta, on_state=keep_state)
        run.losses = torch.cat([run.losses[:start], rest])
        run.epochs_run = s.epochs

    def _epoch_loop(self, run: _Run, s: _Settings) -> None:
        """Train epoch by epoch (any model and optimizer), with early stopping on the validation loss."""
        for epoch in range(run.start, s.epochs):
            run.core.train()
            run.losses[epoch] = self._epoch(run, s, epoch)
            if run.scheduler is not None:
                run.scheduler.step()
            run.epochs_run = epoch + 1
            stop = self._validation_stops(run, s, epoch) if len(run.X_va) else False
            if run.epochs_run % s.check_every == 0 or run.epochs_run == s.epochs or stop or \
                    (run.reporter is not None and run.reporter.due()):
                self._check(run, s, run.epochs_run, float(run.losses[epoch]))
            if stop:
                break

    def _epoch(self, run: _Run, s: _Settings, epoch: int) -> torch.Tensor:
        """One pass over the training rows; returns the epoch's mean loss as a device tensor (no sync, but for
        the progress display of a long epoch)."""
        core, optimizer, loss_fn, X, y = run.core, run.optimizer, run.loss_fn, run.X_tr, run.y_tr
        if isinstance(optimizer, torch.optim.LBFGS):
            def closure() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(core(X), y)
                loss.backward()
                return loss
            return optimizer.step(closure).detach()
        if s.batch_size is None or s.batch_size >= len(X):
            loss = loss_fn(core(X), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()
        order = torch.randperm(len(X), generator=run.shuffle).to(X.device)
        total = torch.zeros((), device=X.device)
        for start in range(0, len(X), s.batch_size):
            idx = order[start:start + s.batch_size]
            loss = loss_fn(core(X[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
            if run.reporter is not None and run.reporter.due():
                seen = start + len(idx)
                self._check(run, s, epoch + seen / len(X), float(total) / seen, final=False)
        return total / len(X)

    @staticmethod
    def _validation_stops(run: _Run, s: _Settings, epoch: int) -> bool:
        """Record the validation loss and keep the best weights; True when ``patience`` epochs went by
        without a better one."""
        run.core.eval()
        with torch.no_grad():
            v = float(run.loss_fn(run.core(run.X_va), run.y_va))
        run.val_losses.append(v)
        if v < run.best_val:
            run.best_val, run.best_epoch, run.best_state = v, epoch, copy.deepcopy(run.core.state_dict())
            return False
        return s.patience is not None and epoch - run.best_epoch >= s.patience

    def _check(self, run: _Run, s: _Settings, epochs_done: float, value: float, final: bool = True) -> None:
        """Divergence check, progress display and checkpoint: the only host syncs of a run (``final``: at the
        end of an epoch, where a checkpoint may be written)."""
        if not math.isfinite(value):
            raise self._diverged(run, s, math.ceil(epochs_done), value)
        if run.reporter is not None and (run.reporter.due() or epochs_done >= s.epochs):
            run.reporter.show(epochs_done, value, run.val_losses[-1] if run.val_losses else None)
        if final and epochs_done < s.epochs:
            self._save_state(run, int(epochs_done))

    def _diverged(self, run: _Run, s: _Settings, epoch: int, value: float) -> TrainingDiverged:
        """The error for a loss that became NaN or infinite: why, and what works instead."""
        head = f"training diverged at epoch {epoch}: the loss is {value}"
        if isinstance(run.core, nn.Linear) and s.optimizer == "sgd":
            raw, scaled = self._quadratics(run)
            text = advice.describe(scaled if s.scaled else raw, s.lr, s.scaled)
            fixes = advice.linear_fixes(raw, scaled, s.scaled, s.epochs)
        else:
            text = f"lr {s.lr:g} is too large for this model and data"
            fixes = (Fix({"lr": advice.round_down(s.lr / 10)}, "a smaller step"),)
            if not s.scaled:
                fixes += (Fix({"scale": "on", "lr": advice.round_down(s.lr / 10)},
                              "standardised features and targets, and a smaller step"),)
        return TrainingDiverged(f"{head}; {text}", fixes=tuple(self._relative(f) for f in fixes))

    def _quadratics(self, run: _Run) -> tuple[advice.Quadratic, advice.Quadratic]:
        """The MSE Hessian of a linear model on its raw training features and on them standardised."""
        _, s_in, _ = core_and_scalers(run.module)
        seen = run.X_tr.double().cpu().numpy()
        raw = seen * s_in.std.double().cpu().numpy() + s_in.mean.double().cpu().numpy() if s_in is not None \
            else seen
        std = raw.std(axis=0)
        standardised = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)
        n_targets = run.y_tr.shape[1]
        return advice.quadratic(raw, n_targets), advice.quadratic(standardised, n_targets)

    def _relative(self, fix: Fix) -> Fix:
        """``fix`` as a change to this estimator's parameters: a switch to the exact solution also takes back
        the iterative settings that were given; settings already as suggested are left out."""
        settings = dict(fix.settings)
        if settings.get("optimizer") == "exact":
            settings.update({k: d for k, d in ITERATIVE.items() if not _same(getattr(self, k), d)})
        settings = {k: v for k, v in settings.items() if not _same(getattr(self, k), v)}
        return Fix(settings, fix.purpose)

    def _underfit(self, run: _Run, s: _Settings, X: np.ndarray, y: np.ndarray) -> list[FitWarning]:
        """For an iterative linear fit: a warning when its training MSE is well above the exact fit's."""
        if not isinstance(run.core, nn.Linear) or s.optimizer == "exact":
            return []
        exact = exact_least_squares(X, y, fit_intercept=s.fit_intercept)
        with torch.no_grad():
            fitted = self.module_(torch.from_numpy(X.astype(np.float32))).double().numpy()
        ours, best = mse(y, fitted), exact.mse
        if best is None or not ours > best * (1 + UNDERFIT) + 1e-12 * float(np.var(y)):
            return []
        if s.optimizer == "sgd" and s.batch_size is None:
            raw, scaled = self._quadratics(run)
            fixes = advice.linear_fixes(raw, scaled, s.scaled, s.epochs)
        else:
            fixes = (advice.EXACT,)
        r2 = r2_score(y, fitted)
        scores = "" if exact.r2 is None or math.isnan(r2) else f" (R^2 {r2:.4f} against {exact.r2:.4f})"
        times = f"{ours / best:.3g} times" if best > 0 and ours / best < 1e6 else "far above"
        return [FitWarning(f"the {s.optimizer.upper()} fit's training MSE {ours:.6g} is {times} the exact "
                           f"least-squares fit's {best:.6g}{scores}: it stopped short of the optimum",
                           tuple(self._relative(f) for f in fixes))]

    def _finish(self, run: _Run, s: _Settings, n_features: int, one_d: bool, train_idx: np.ndarray,
                val_idx: np.ndarray) -> None:
        """Keep the best weights when early stopping asked for them; set the learned attributes."""
        if s.patience is not None and run.best_state is not None:
            run.core.load_state_dict(run.best_state)
        self.spec_ = run.spec
        self.optimizer_, self.lr_, self.device_ = s.optimizer, s.lr, str(s.device)
        self.epochs_, self.batch_size_, self.patience_, self.scaled_ = s.epochs, s.batch_size, s.patience, s.scaled
        self.threads_ = s.threads
        self.best_epoch_ = run.best_epoch + 1 if run.best_state is not None else None
        self.module_ = run.module.to("cpu").eval()
        history = run.losses if s.optimizer == "exact" else run.losses[:run.epochs_run]
        self.loss_history_ = history.cpu().numpy().astype(np.float64)
        self.val_loss_history_ = np.asarray(run.val_losses, dtype=np.float64)
        self.final_loss_ = float(self.loss_history_[-1])
        self.n_epochs_ = run.epochs_run
        self.n_features_in_ = n_features
        self.train_rows_, self.val_rows_ = train_idx, val_idx
        self.calibration_rows_ = np.arange(0)
        self._predicts_1d = one_d

    # --- training checkpoints ---

    def _save_state(self, run: _Run, epochs_done: int) -> None:
        """Write the whole training state to ``checkpoint`` through a temp file, so it is never half written."""
        if self.checkpoint is None:
            return
        payload = {"key": run.key, "epoch": epochs_done, "core": run.core.state_dict(),
                   "optimizer": run.optimizer.state_dict(),
                   "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
                   "shuffle": run.shuffle.get_state(), "rng": torch.get_rng_state(),
                   "losses": run.losses[:epochs_done].cpu(), "val_losses": torch.tensor(run.val_losses),
                   "best_val": run.best_val, "best_epoch": run.best_epoch, "best_state": run.best_state or {},
                   "theta": run.theta}
        buffer = io.BytesIO()  # serialised in memory, written by Python: a full disk is an OSError naming the file
        torch.save(payload, buffer)
        write_bytes(self.checkpoint, buffer.getvalue())

    def _restore(self, run: _Run) -> None:
        """Continue from the training state in ``checkpoint``, written by a run with the same settings and data."""
        state = self._load_state(run.key)
        run.start = run.epochs_run = int(state["epoch"])
        run.core.load_state_dict(state["core"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler"])
        run.shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["rng"])
        run.losses[:run.start] = state["losses"].to(run.losses.device)
        run.val_losses = state["val_losses"].tolist()
        run.best_val, run.best_epoch = float(state["best_val"]), int(state["best_epoch"])
        run.best_state = state["best_state"] or None
        run.theta = state["theta"]

    def _load_state(self, key: str) -> dict:
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(f"no training checkpoint at {self.checkpoint} to resume from; start from the "
                            "beginning with resume=False", parameter="resume") from None
        except Exception as e:  # a truncated or foreign file: torch raises several types
            raise DataError(f"{self.checkpoint} is not a torchport training checkpoint ({e})",
                            parameter="checkpoint") from None
        if not isinstance(state, dict) or state.get("key") != key:
            raise DataError(f"{self.checkpoint} was written by a run with other settings or data; resume with the "
                            "same settings and data, or start over with resume=False", parameter="resume")
        return state

    # --- using the fitted model ---

    def float64_module(self) -> nn.Module:
        """The fitted module in float64, a copy (``module_`` is float32): an exact linear fit with its float64
        estimates (``coef_``, ``intercept_``) as weights, any other fit with its own weights widened."""
        check_is_fitted(self)
        wide = copy.deepcopy(self.module_).double().eval()
        estimates = getattr(self, "_estimates", None)
        if estimates is not None:
            set_linear_estimates(wide, *estimates)
        return wide

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions in float64, of ``float64_module()`` (the float64 fit, which the exported copies are held
        to): shape (rows,) when fit was given a 1-D y, else (rows, targets)."""
        check_is_fitted(self)
        X = features(X, self.n_features_in_)
        wide = self.float64_module()  # a copy: predict changes nothing, and threads may share self
        pred = np.empty((len(X), self.spec_.n_targets))
        with torch.no_grad():
            for start in range(0, len(X), PREDICT_ROWS):
                pred[start:start + PREDICT_ROWS] = wide(torch.from_numpy(X[start:start + PREDICT_ROWS])).numpy()
        return pred[:, 0] if self._predicts_1d else pred

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """R^2 of the predictions for X against y, averaged over targets (scikit-learn's score for
        regressors); NaN when a target is constant."""
        return r2_score(y, self.predict(X))

    @property
    def coef_(self) -> np.ndarray:
        """Weights of a linear model in raw units, shape (targets, features): the float64 least-squares
        estimates of an exact fit, else the module's weights."""
        check_is_fitted(self)
        estimates = getattr(self, "_estimates", None)
        return estimates[0].copy() if estimates is not None else linear_coefficients(self.module_)[0].numpy()

    @property
    def intercept_(self) -> np.ndarray:
        """Bias of a linear model in raw units, shape (targets,): the float64 least-squares estimate of an
        exact fit (zeros without an intercept), else the module's bias."""
        check_is_fitted(self)
        estimates = getattr(self, "_estimates", None)
        return estimates[1].copy() if estimates is not None else linear_coefficients(self.module_)[1].numpy()


def _same(a: Any, b: Any) -> bool:
    """Whether a parameter still has its default (for the repr)."""
    try:
        return a is b or bool(a == b)
    except Exception:  # arrays and other values without a plain truth value
        return False


def _state_key(s: _Settings, spec: ModelSpec, X: np.ndarray, y: np.ndarray) -> str:
    """Identifies the settings and data a training state belongs to (resuming needs the same; the device may
    differ)."""
    settings = {k: v for k, v in asdict(s).items() if k != "device"}
    h = hashlib.sha256(json.dumps({"settings": settings, "spec": spec.to_json()}, sort_keys=True).encode())
    h.update(X.tobytes())
    h.update(y.tobytes())
    return h.hexdigest()
