"""Model builders: a model is rebuilt from its ModelSpec plus a state dict, never from a pickle.

A model maps raw features to targets in their own units. Standardisation learned from the training
data lives inside the module (as buffers), so every exported copy takes raw features too."""
from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from torchport.train.choices import MODEL_KINDS
from torchport.train.errors import SettingsError
from torchport.runtime.jsonfields import Fields

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class Standardize(nn.Module):
    """(x - mean) / std with the statistics held as buffers (saved in the state dict, exported as constants)."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Unstandardize(nn.Module):
    """y * std + mean: back from the scaled target to the target's own units."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


def check_activation(activation: object) -> str:
    """``activation`` if it names one of ACTIVATIONS; SettingsError otherwise."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise SettingsError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}",
                            parameter="activation")
    return activation


def whole_number(value: object, name: str, low: int) -> int:
    """``value`` as an int if it is a whole number >= low (numpy integers too, never a bool or a float);
    SettingsError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise SettingsError(f"{name} must be a whole number >= {low}; got {value!r}", parameter=name)
    return int(value)


def number_in(value: object, name: str, low: float, high: float) -> float:
    """``value`` as a float if it is a real number in [low, high) (never a bool); SettingsError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value < high:
        raise SettingsError(f"{name} must be a number in [{low:g}, {high:g}); got {value!r}", parameter=name)
    return float(value)


@dataclass(frozen=True)
class ModelSpec:
    """What a model is, stored once in a bundle: with a state dict it rebuilds the module (no pickle).
    Checked when it is made, so every ModelSpec builds; ``hidden`` is kept as a tuple of ints, and a linear
    spec ignores the mlp-only fields (they keep their defaults)."""

    kind: str                       # "linear" or "mlp"
    n_features: int
    n_targets: int
    hidden: tuple[int, ...] = ()    # mlp only: hidden layer widths; () for linear
    activation: str = "relu"        # mlp only
    dropout: float = 0.0            # mlp only: while training, off at inference
    scale_features: bool = False
    scale_targets: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise SettingsError(f"kind must be one of {', '.join(MODEL_KINDS)}; got {self.kind!r}", parameter="kind")
        object.__setattr__(self, "n_features", whole_number(self.n_features, "n_features", 1))
        object.__setattr__(self, "n_targets", whole_number(self.n_targets, "n_targets", 1))
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, Iterable):
            raise SettingsError(f"hidden must be a sequence of layer widths; got {self.hidden!r}", parameter="hidden")
        hidden = tuple(self.hidden)
        if self.kind == "mlp" and (not hidden or any(isinstance(h, bool) or not isinstance(h, numbers.Integral)
                                                     or h < 1 for h in hidden)):
            raise SettingsError(f"an mlp needs hidden layer widths >= 1 (for example hidden=(32, 32)); got "
                                f"{self.hidden!r}", parameter="hidden")
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        check_activation(self.activation)
        object.__setattr__(self, "dropout", number_in(self.dropout, "dropout", 0.0, 1.0))
        if self.kind == "linear":  # the mlp-only fields do not apply: a linear spec keeps their defaults
            for name, default in (("hidden", ()), ("activation", "relu"), ("dropout", 0.0)):
                object.__setattr__(self, name, default)
        for name in ("scale_features", "scale_targets"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise SettingsError(f"{name} must be True or False; got {getattr(self, name)!r}", parameter=name)
            object.__setattr__(self, name, bool(getattr(self, name)))

    def to_json(self) -> dict:
        """The spec as a JSON object; hidden, activation and dropout only for an mlp."""
        out = {"kind": self.kind, "n_features": self.n_features, "n_targets": self.n_targets,
               "scale_features": self.scale_features, "scale_targets": self.scale_targets}
        if self.kind == "mlp":
            out.update(hidden=list(self.hidden), activation=self.activation, dropout=self.dropout)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> "ModelSpec":
        """The spec from ``to_json``'s object; missing scale_* default to True for an mlp, False for linear.
        SettingsError (naming the key) for anything else."""
        f = Fields(obj, "model spec", lambda message, key: SettingsError(message, parameter=key))
        kind = f.get("kind", str)
        scaled = kind == "mlp"
        mlp: dict = {}
        if kind == "mlp":
            mlp = {"hidden": f.get("hidden", list), "activation": f.get("activation", str, optional=True) or "relu",
                   "dropout": f.get("dropout", float, optional=True) or 0.0}
        scaling = {name: f.get(name, bool) if name in obj else scaled for name in ("scale_features", "scale_targets")}
        return cls(kind, f.get("n_features", int), f.get("n_targets", int), **mlp, **scaling)


def build_model(spec: ModelSpec) -> nn.Module:
    """The torch module described by ``spec``, freshly initialised (scaling buffers at identity).

    An unscaled linear model is a bare ``nn.Linear`` (the tutorial's model; its graph is one Gemm)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model takes a ModelSpec (ModelSpec.from_json reads a JSON object); "
                        f"got {type(spec).__name__}")
    f, t = spec.n_features, spec.n_targets
    if spec.kind == "linear":
        core: nn.Module = nn.Linear(f, t)
    else:
        layers: list[nn.Module] = []
        width = f
        for h in spec.hidden:
            layers.append(nn.Linear(width, h))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = h
        layers.append(nn.Linear(width, t))
        core = nn.Sequential(*layers)
    if not spec.scale_features and not spec.scale_targets and spec.kind == "linear":
        return core
    parts: list[tuple[str, nn.Module]] = []
    if spec.scale_features:
        parts.append(("scale_in", Standardize(f)))
    parts.append(("core", core))
    if spec.scale_targets:
        parts.append(("scale_out", Unstandardize(t)))
    return nn.Sequential(OrderedDict(parts))


def set_scaling(module: nn.Module, X: torch.Tensor, y: torch.Tensor, centre: bool = True) -> None:
    """Learn the standardisation from training data, summed in float64 (std of a constant column is taken
    as 1). ``centre`` False (a model without an intercept) scales by the root mean square about zero and keeps
    the means at zero, so the scaling adds no intercept."""
    def stats(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a64 = a.double()
        if centre:
            mean, std = a64.mean(dim=0), a64.std(dim=0, unbiased=False)
        else:
            mean, std = torch.zeros_like(a64[0]), (a64 * a64).mean(dim=0).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        return mean.to(a.dtype), std.to(a.dtype)
    if hasattr(module, "scale_in"):
        module.scale_in.mean, module.scale_in.std = stats(X)
    if hasattr(module, "scale_out"):
        module.scale_out.mean, module.scale_out.std = stats(y)


def set_scaling_stats(module: nn.Module, x_mean: np.ndarray, x_std: np.ndarray, y_mean: np.ndarray,
                      y_std: np.ndarray) -> None:
    """Set the standardisation from statistics already computed (float64; a zero std is taken as 1), as
    ``set_scaling`` would learn them from the rows."""
    def buffers(mean: np.ndarray, std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        std = np.where(np.asarray(std) > 0, std, 1.0)
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    if hasattr(module, "scale_in"):
        module.scale_in.mean, module.scale_in.std = buffers(x_mean, x_std)
    if hasattr(module, "scale_out"):
        module.scale_out.mean, module.scale_out.std = buffers(y_mean, y_std)


def core_and_scalers(module: nn.Module) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
    """(core, input scaler or None, output scaler or None) of a module built by build_model."""
    if isinstance(module, nn.Linear):
        return module, None, None
    return module.core, getattr(module, "scale_in", None), getattr(module, "scale_out", None)


def linear_coefficients(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (targets x features) and bias of a linear model in raw units, scaling folded in."""
    core, s_in, s_out = core_and_scalers(module)
    if not isinstance(core, nn.Linear):
        raise AttributeError("coefficients exist only for linear models")
    w, b = core.weight.detach().double(), core.bias.detach().double()
    if s_in is not None:
        b = b - w @ (s_in.mean.double() / s_in.std.double())
        w = w / s_in.std.double()
    if s_out is not None:
        w = w * s_out.std.double()[:, None]
        b = b * s_out.std.double() + s_out.mean.double()
    return w, b


def scaler_stats(scaler: nn.Module | None, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A scaler's mean and std in float64 (as the module computes with them), or the identity's."""
    if scaler is None:
        return np.zeros(width), np.ones(width)
    return scaler.mean.double().cpu().numpy(), scaler.std.double().cpu().numpy()


def set_linear_estimates(module: nn.Module, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Set a linear module's core to raw-unit estimates (coef: targets x features, intercept: targets), in
    the space the core sees (features and targets scaled by the module's own statistics), computed in
    float64 and stored in the module's dtype."""
    core, s_in, s_out = core_and_scalers(module)
    mean_in, std_in = scaler_stats(s_in, coef.shape[1])
    mean_out, std_out = scaler_stats(s_out, coef.shape[0])
    weight = coef * std_in[None, :] / std_out[:, None]
    bias = (intercept + coef @ mean_in - mean_out) / std_out
    with torch.no_grad():
        core.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        core.bias.copy_(torch.from_numpy(bias))
