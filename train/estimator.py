"""Regressor: the tutorial's training recipe (nn.Linear, MSE, full-batch SGD) as a fit/predict estimator."""
from __future__ import annotations

import math
import sys

import numpy as np
import torch
from torch import nn

from torchport.train.fast import fit_full_batch_sgd
from torchport.train.models import MODEL_KINDS, build_model


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
    """Fits a torch regression model with MSE loss; ``module_`` is the fitted module on the CPU."""

    def __init__(self, model: str = "linear", optimizer: str = "sgd", lr: float = 0.002,
                 epochs: int = 6000, seed: int = 0, device: str = "auto", progress: bool = False):
        self.model = model
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.seed = seed
        self.device = device
        self.progress = progress

    def _check_params(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {', '.join(MODEL_KINDS)}; got {self.model!r}")
        if self.optimizer != "sgd":
            raise ValueError(f"optimizer must be 'sgd'; got {self.optimizer!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be a whole number >= 1; got {self.epochs!r}")

    def get_params(self) -> dict:
        """The constructor settings, as recorded in a bundle's manifest."""
        return {"model": self.model, "optimizer": self.optimizer, "lr": self.lr, "epochs": self.epochs,
                "seed": self.seed, "device": self.device, "batch": "full", "loss": "mse"}

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Regressor":
        """Train on X (rows x features) and y (rows x targets) with full-batch gradient descent."""
        self._check_params()
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if X.ndim != 2 or y.ndim != 2 or len(X) != len(y) or len(X) == 0:
            raise ValueError(f"expected X of shape (rows, features) and y of shape (rows, targets) with the "
                             f"same number of rows; got X {X.shape} and y {y.shape}")
        dev = resolve_device(self.device)
        self.spec_ = {"kind": self.model, "n_features": X.shape[1], "n_targets": y.shape[1]}
        torch.manual_seed(self.seed)
        module = build_model(self.spec_).to(dev)
        Xt, yt = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
        opt = torch.optim.SGD(module.parameters(), lr=self.lr)
        loss_fn = nn.MSELoss()
        losses = torch.empty(self.epochs, device=dev)
        # Reading the loss forces a host sync: do it ~100 times per run, not every epoch.
        check_every = max(1, self.epochs // 100)
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.epochs, desc="training", unit="epoch", file=sys.stderr,
                       mininterval=0.25, leave=True, dynamic_ncols=True)
        done = 0

        def check(epochs_done: int, value: float) -> None:
            nonlocal done
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged at epoch {epochs_done}: loss is {value}; "
                    f"use a smaller learning rate than {self.lr} (for example {self.lr / 10:g})")
            if bar is not None:
                bar.update(epochs_done - done)
                bar.set_postfix_str(f"loss {value:.6f}", refresh=False)
            done = epochs_done

        try:
            if isinstance(module, nn.Linear) and self.optimizer == "sgd":  # closed-form step, train/fast.py
                losses = fit_full_batch_sgd(module, Xt, yt, self.lr, self.epochs,
                                            check_every=check_every, on_check=check)
            else:
                for epoch in range(self.epochs):
                    loss = loss_fn(module(Xt), yt)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses[epoch] = loss.detach()
                    if (epoch + 1) % check_every == 0 or epoch + 1 == self.epochs:
                        check(epoch + 1, float(losses[epoch]))
        finally:
            if bar is not None:
                bar.close()
        self.device_ = str(dev)
        self.module_ = module.to("cpu").eval()
        self.loss_history_ = losses.cpu().numpy().astype(np.float64)
        self.final_loss_ = float(self.loss_history_[-1])
        self.n_epochs_ = self.epochs
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of the fitted module, float32, shape (rows, targets)."""
        if not hasattr(self, "module_"):
            raise RuntimeError("this Regressor is not fitted yet; call fit(X, y) first")
        with torch.no_grad():
            return self.module_(torch.as_tensor(np.asarray(X, dtype=np.float32))).numpy()

    @property
    def coef_(self) -> np.ndarray:
        """Weights of a linear model, shape (targets, features)."""
        return self.module_.weight.detach().numpy().astype(np.float64)

    @property
    def intercept_(self) -> np.ndarray:
        """Bias of a linear model, shape (targets,)."""
        return self.module_.bias.detach().numpy().astype(np.float64)
