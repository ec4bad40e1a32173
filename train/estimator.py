"""Regressor: fit/predict for the tutorial's linear model and MLPs, with the tutorial's defaults."""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from typing import Sequence

import numpy as np
import torch
from torch import nn

from torchport.train.fast import fit_full_batch_sgd
from torchport.train.models import (
    ACTIVATIONS, MODEL_KINDS, build_model, core_and_scalers, linear_coefficients, normalize_spec, set_scaling,
)

OPTIMIZERS = ("sgd", "adam", "lbfgs")
DEFAULT_LR = {"sgd": 0.002, "adam": 0.001, "lbfgs": 1.0}
SCHEDULES = ("none", "cosine")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the learning rate is too large for this data."""


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU; 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu or --device auto")
        return torch.device(device)
    raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")


class Regressor:
    """Fits a torch regression model with MSE loss; ``module_`` is the fitted module (raw features in,
    targets in their own units out) on the CPU, in eval mode.

    Defaults are the tutorial's: a linear model, full-batch SGD, lr 0.002, 6000 epochs. An MLP defaults
    to Adam (lr 1e-3) with features and targets standardised inside the model."""

    def __init__(self, model: str = "linear", hidden: Sequence[int] = (32, 32), activation: str = "relu",
                 dropout: float = 0.0, scale: str = "auto", optimizer: str | None = None,
                 lr: float | None = None, momentum: float = 0.0, epochs: int = 6000,
                 batch_size: int | None = None, val_fraction: float = 0.0, patience: int | None = None,
                 lr_schedule: str = "none", seed: int = 0, device: str = "auto", progress: bool = False,
                 checkpoint: str | os.PathLike | None = None):
        self.model = model
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.scale = scale
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.epochs = epochs
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.patience = patience
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.device = device
        self.progress = progress
        self.checkpoint = checkpoint

    def _resolved(self) -> tuple[str, float]:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}; got {self.model!r}")
        opt = self.optimizer or ("sgd" if self.model == "linear" else "adam")
        if opt not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {opt!r}")
        lr = DEFAULT_LR[opt] if self.lr is None else self.lr
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number; got {lr!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be a whole number >= 1; got {self.epochs!r}")
        if not 0.0 <= self.momentum < 1.0 or (self.momentum and opt != "sgd"):
            raise ValueError(f"momentum must be in [0, 1) and is for sgd only; got {self.momentum!r} with {opt}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1 or None (full batch); got {self.batch_size!r}")
        if self.batch_size is not None and opt == "lbfgs":
            raise ValueError("lbfgs trains on the full batch; leave batch_size unset")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction!r}")
        if self.patience is not None and (self.patience < 1 or not self.val_fraction):
            raise ValueError("patience (early stopping) needs a validation split (val_fraction > 0) and "
                             f"must be >= 1; got patience {self.patience!r}, val_fraction {self.val_fraction!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}; got {self.lr_schedule!r}")
        if self.scale not in ("auto", "on", "off"):
            raise ValueError(f"scale must be auto, on or off; got {self.scale!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}")
        return opt, float(lr)

    def check_params(self) -> None:
        """Raise ValueError naming the first bad setting, before any work is done."""
        self._resolved()

    def get_params(self) -> dict:
        """The constructor settings, as recorded in a bundle's manifest."""
        return {"model": self.model, "hidden": list(self.hidden) if self.model == "mlp" else None,
                "activation": self.activation if self.model == "mlp" else None,
                "dropout": self.dropout if self.model == "mlp" else None, "scale": self.scale,
                "optimizer": self.optimizer, "lr": self.lr, "momentum": self.momentum, "epochs": self.epochs,
                "batch_size": self.batch_size, "val_fraction": self.val_fraction, "patience": self.patience,
                "lr_schedule": self.lr_schedule, "seed": self.seed, "device": self.device, "loss": "mse"}

    def _make_optimizer(self, params, opt: str, lr: float) -> torch.optim.Optimizer:
        if opt == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum)
        if opt == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.LBFGS(params, lr=lr, max_iter=20, line_search_fn="strong_wolfe")

    def fit(self, X: np.ndarray, y: np.ndarray, resume: bool = False) -> "Regressor":
        """Train on X (rows x features) and y (rows x targets).

        With ``checkpoint`` set, the training state is saved there (atomically) at every check, about 100
        times a run, so an interrupted or crashed run can go on with ``fit(X, y, resume=True)`` and reach
        the same final weights as an uninterrupted run."""
        opt_name, lr = self._resolved()
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if X.ndim != 2 or y.ndim != 2 or len(X) != len(y) or len(X) == 0:
            raise ValueError(f"expected X of shape (rows, features) and y of shape (rows, targets) with the "
                             f"same number of rows; got X {X.shape} and y {y.shape}")
        dev = resolve_device(self.device)
        scaled = {"auto": self.model == "mlp", "on": True, "off": False}[self.scale]
        self.spec_ = normalize_spec({"kind": self.model, "n_features": X.shape[1], "n_targets": y.shape[1],
                                     "hidden": list(self.hidden), "activation": self.activation,
                                     "dropout": self.dropout, "scale_features": scaled, "scale_targets": scaled})
        self.optimizer_, self.lr_ = opt_name, lr
        self.hyperparameters_ = {**self.get_params(), "optimizer": opt_name, "lr": lr,
                                 "batch_size": self.batch_size or "full", "scale": scaled}

        train_idx, val_idx = np.arange(len(X)), np.arange(0)
        if self.val_fraction:
            n_val = max(1, int(round(len(X) * self.val_fraction)))
            if n_val >= len(X):
                raise ValueError(f"val_fraction {self.val_fraction} leaves no training rows out of {len(X)}")
            perm = np.random.default_rng(self.seed).permutation(len(X))
            val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

        torch.manual_seed(self.seed)
        module = build_model(self.spec_).to(dev)
        Xt, yt = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
        set_scaling(module, Xt[train_idx], yt[train_idx])
        core, s_in, s_out = core_and_scalers(module)
        # The core learns in the standardised space; the scalers are fixed data statistics.
        with torch.no_grad():
            Xs = s_in(Xt) if s_in is not None else Xt
            ys = (yt - s_out.mean) / s_out.std if s_out is not None else yt
        X_tr, y_tr = Xs[train_idx], ys[train_idx]
        X_va, y_va = Xs[val_idx], ys[val_idx]

        optimizer = self._make_optimizer(core.parameters(), opt_name, lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.epochs) \
            if self.lr_schedule == "cosine" else None
        loss_fn = nn.MSELoss()
        shuffle = torch.Generator().manual_seed(self.seed)
        losses = torch.empty(self.epochs, device=dev)
        val_losses: list[float] = []
        best = (math.inf, -1, None)  # (val loss, epoch, state)
        check_every = max(1, self.epochs // 100)  # reading the loss syncs the host: ~100 times a run
        bar = self._progress_bar()
        done, epochs_run, start, theta0 = 0, 0, 0, None
        key = self._state_key(X, y)
        if resume:
            state = self._load_state(key)
            start = epochs_run = done = int(state["epoch"])
            core.load_state_dict(state["core"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            shuffle.set_state(state["shuffle"])
            torch.set_rng_state(state["rng"])
            losses[:start] = state["losses"].to(dev)
            val_losses = state["val_losses"].tolist()
            best = (float(state["best_val"]), int(state["best_epoch"]), state["best_state"] or None)
            theta0 = state["theta"]
            if bar is not None:
                bar.update(start)
        latest_theta: list = [theta0]

        def keep_fast_state(epochs_done: int, theta: torch.Tensor, seen: torch.Tensor) -> None:
            latest_theta[0] = theta.cpu()
            losses[start:epochs_done] = seen

        def save(epochs_done: int) -> None:
            if self.checkpoint is None:
                return
            payload = {"key": key, "epoch": epochs_done, "core": core.state_dict(),
                       "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict() if scheduler is not None else None,
                       "shuffle": shuffle.get_state(), "rng": torch.get_rng_state(),
                       "losses": losses[:epochs_done].cpu(), "val_losses": torch.tensor(val_losses),
                       "best_val": best[0], "best_epoch": best[1], "best_state": best[2] or {},
                       "theta": latest_theta[0]}
            tmp = f"{self.checkpoint}.tmp"
            torch.save(payload, tmp)
            os.replace(tmp, self.checkpoint)

        def check(epochs_done: int, value: float) -> None:
            """Divergence check and progress bar: the only host syncs of a run."""
            nonlocal done
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged at epoch {epochs_done}: loss is {value}; "
                    f"use a smaller learning rate than {lr:g} (for example {lr / 10:g})")
            if bar is not None:
                bar.update(epochs_done - done)
                bar.set_postfix_str(f"loss {value:.6g}" + (f" val {val_losses[-1]:.6g}" if val_losses else ""),
                                    refresh=False)
            done = epochs_done
            if epochs_done < self.epochs:
                save(epochs_done)

        fast = isinstance(core, nn.Linear) and opt_name == "sgd" and not self.momentum and \
            self.batch_size is None and not len(val_idx) and scheduler is None
        try:
            if fast and start < self.epochs:  # the tutorial's loop as a closed-form step: train/fast.py
                rest = fit_full_batch_sgd(core, X_tr, y_tr, lr, self.epochs - start, check_every=check_every,
                                          on_check=lambda d, v: check(start + d, v), theta0=theta0,
                                          on_state=lambda d, theta, seen: keep_fast_state(start + d, theta, seen))
                losses = torch.cat([losses[:start], rest])
                epochs_run = self.epochs
            for epoch in range(self.epochs if fast else start, self.epochs):
                core.train()
                losses[epoch] = self._epoch(core, optimizer, loss_fn, X_tr, y_tr, shuffle)
                if scheduler is not None:
                    scheduler.step()
                epochs_run = epoch + 1
                stop = False
                if len(val_idx):
                    core.eval()
                    with torch.no_grad():
                        v = float(loss_fn(core(X_va), y_va))
                    val_losses.append(v)
                    if v < best[0]:
                        best = (v, epoch, copy.deepcopy(core.state_dict()))
                    elif self.patience is not None and epoch - best[1] >= self.patience:
                        stop = True
                if epochs_run % check_every == 0 or epochs_run == self.epochs or stop:
                    check(epochs_run, float(losses[epoch]))
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.patience is not None and best[2] is not None:
            core.load_state_dict(best[2])
        self.best_epoch_ = best[1] + 1 if best[2] is not None else None
        self.device_ = str(dev)
        self.module_ = module.to("cpu").eval()
        self.loss_history_ = losses[:epochs_run].cpu().numpy().astype(np.float64)
        self.val_loss_history_ = np.asarray(val_losses, dtype=np.float64)
        self.final_loss_ = float(self.loss_history_[-1])
        self.n_epochs_ = epochs_run
        return self

    def _state_key(self, X: np.ndarray, y: np.ndarray) -> str:
        """Identifies the settings and data a training state belongs to (resuming needs the same)."""
        settings = {k: v for k, v in self.hyperparameters_.items() if k not in ("device",)}
        h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        h.update(X.tobytes())
        h.update(y.tobytes())
        return h.hexdigest()

    def _load_state(self, key: str) -> dict:
        if self.checkpoint is None:
            raise ValueError("resume needs the checkpoint path the interrupted run was given")
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"no training checkpoint at {self.checkpoint} to resume from; "
                                    "run without resume to start from the beginning") from None
        except Exception as e:  # a truncated or foreign file: torch raises several types
            raise ValueError(f"{self.checkpoint} is not a torchport training checkpoint ({e})") from None
        if not isinstance(state, dict) or state.get("key") != key:
            raise ValueError(f"{self.checkpoint} was written by a run with other settings or data; resume with "
                             "the same command and data, or start over without resume")
        return state

    def _epoch(self, core: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
               X: torch.Tensor, y: torch.Tensor, shuffle: torch.Generator) -> torch.Tensor:
        """One pass over the training rows; returns the epoch's mean loss as a device tensor (no sync)."""
        if isinstance(optimizer, torch.optim.LBFGS):
            def closure() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(core(X), y)
                loss.backward()
                return loss
            return optimizer.step(closure).detach()
        if self.batch_size is None or self.batch_size >= len(X):
            loss = loss_fn(core(X), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()
        order = torch.randperm(len(X), generator=shuffle).to(X.device)
        total = torch.zeros((), device=X.device)
        for start in range(0, len(X), self.batch_size):
            idx = order[start:start + self.batch_size]
            loss = loss_fn(core(X[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        return total / len(X)

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm import tqdm
        return tqdm(total=self.epochs, desc="training", unit="epoch", file=sys.stderr, mininterval=0.25,
                    leave=True, dynamic_ncols=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of the fitted module, float32, shape (rows, targets)."""
        if not hasattr(self, "module_"):
            raise RuntimeError("this Regressor is not fitted yet; call fit(X, y) first")
        with torch.no_grad():
            return self.module_(torch.as_tensor(np.asarray(X, dtype=np.float32))).numpy()

    @property
    def coef_(self) -> np.ndarray:
        """Weights of a linear model in raw units, shape (targets, features)."""
        return linear_coefficients(self.module_)[0].numpy()

    @property
    def intercept_(self) -> np.ndarray:
        """Bias of a linear model in raw units, shape (targets,)."""
        return linear_coefficients(self.module_)[1].numpy()
