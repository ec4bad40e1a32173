"""Model builders: a model is rebuilt from a JSON-able spec plus a state dict, never from a pickle.

A model maps raw features to targets in their own units. Standardisation learned from the training
data lives inside the module (as buffers), so every exported copy takes raw features too."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

MODEL_KINDS = ("linear", "mlp")
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


def normalize_spec(spec: dict) -> dict:
    """Fill defaults and check a spec: kind, n_features, n_targets, hidden, activation, dropout, scaling."""
    kind = spec.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    hidden = [int(h) for h in spec.get("hidden", [])] if kind == "mlp" else []
    if kind == "mlp" and (not hidden or min(hidden) < 1):
        raise ValueError(f"an mlp needs hidden layer widths >= 1 (for example 32,32); got {spec.get('hidden')!r}")
    activation = spec.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    dropout = float(spec.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    default_scale = kind == "mlp"
    out = {"kind": kind, "n_features": int(spec["n_features"]), "n_targets": int(spec["n_targets"]),
           "scale_features": bool(spec.get("scale_features", default_scale)),
           "scale_targets": bool(spec.get("scale_targets", default_scale))}
    if kind == "mlp":
        out.update(hidden=hidden, activation=activation, dropout=dropout)
    return out


def build_model(spec: dict) -> nn.Module:
    """The torch module described by ``spec``, freshly initialised (scaling buffers at identity).

    An unscaled linear model is a bare ``nn.Linear`` (the tutorial's model; its graph is one Gemm)."""
    spec = normalize_spec(spec)
    f, t = spec["n_features"], spec["n_targets"]
    if spec["kind"] == "linear":
        core: nn.Module = nn.Linear(f, t)
    else:
        layers: list[nn.Module] = []
        width = f
        for h in spec["hidden"]:
            layers.append(nn.Linear(width, h))
            layers.append(ACTIVATIONS[spec["activation"]]())
            if spec["dropout"] > 0:
                layers.append(nn.Dropout(spec["dropout"]))
            width = h
        layers.append(nn.Linear(width, t))
        core = nn.Sequential(*layers)
    if not spec["scale_features"] and not spec["scale_targets"] and spec["kind"] == "linear":
        return core
    parts: list[tuple[str, nn.Module]] = []
    if spec["scale_features"]:
        parts.append(("scale_in", Standardize(f)))
    parts.append(("core", core))
    if spec["scale_targets"]:
        parts.append(("scale_out", Unstandardize(t)))
    return nn.Sequential(OrderedDict(parts))


def set_scaling(module: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
    """Learn the standardisation from training data (std of a constant column is taken as 1)."""
    def stats(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        std = a.std(dim=0, unbiased=False)
        return a.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std))
    if hasattr(module, "scale_in"):
        module.scale_in.mean, module.scale_in.std = stats(X)
    if hasattr(module, "scale_out"):
        module.scale_out.mean, module.scale_out.std = stats(y)


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
