"""Model builders: a model is rebuilt from a JSON-able spec plus a state dict, never from a pickle."""
from __future__ import annotations

from torch import nn

MODEL_KINDS = ("linear",)


def build_model(spec: dict) -> nn.Module:
    """The torch module described by ``spec`` ({"kind", "n_features", "n_targets"}), freshly initialised."""
    kind = spec.get("kind")
    if kind == "linear":
        return nn.Linear(int(spec["n_features"]), int(spec["n_targets"]), bias=True)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
