"""The encoding as torch ops in front of a fitted model, so that every exported copy (ONNX, TorchScript, the
ExportedProgram, AOTInductor) takes one number per raw feature column: level codes become dummy or one-hot
columns and NaN becomes the training statistic inside the graph (IsNaN, Where, Gather, Equal: ops every
ONNX Runtime build has, onnxruntime-web's included)."""
from __future__ import annotations

import torch
from torch import nn

from torchport.runtime.encoding import CATEGORICAL, Encoding


class Encode(nn.Module):
    """Raw feature columns (codes, NaN where missing) to the model's design, as
    ``torchport.runtime.encoding.design`` computes it in numpy. Its tensors are constants of the encoding
    (not saved in the checkpoint: the manifest's encoding rebuilds them)."""

    def __init__(self, encoding: Encoding):
        super().__init__()
        n = len(encoding.columns)
        fill, src, match, is_cat = [], [], [], []
        for j, column in enumerate(encoding.columns):
            fill.append(column.fill if column.impute is not None else float("nan"))
            if column.kind == CATEGORICAL:
                for k, level in enumerate(column.levels):
                    if level != column.reference:
                        src.append(j), match.append(float(k)), is_cat.append(True)
            else:
                src.append(j), match.append(float("nan")), is_cat.append(False)
            if column.indicator:
                src.append(n + j), match.append(float("nan")), is_cat.append(False)
        # float64, cast to the input's dtype where used: a float64 bundle imputes the statistic's exact value
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float64), persistent=False)
        self.register_buffer("src", torch.tensor(src, dtype=torch.long), persistent=False)
        self.register_buffer("match", torch.tensor(match, dtype=torch.float64), persistent=False)
        self.register_buffer("is_cat", torch.tensor(is_cat, dtype=torch.bool), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        filled = torch.where(missing, self.fill.to(x.dtype), x)
        source = torch.cat([filled, missing.to(x.dtype)], dim=1)
        picked = source.index_select(1, self.src)
        return torch.where(self.is_cat, (picked == self.match.to(x.dtype)).to(x.dtype), picked)


class Encoded(nn.Module):
    """A fitted model (``model``, on the design) behind its ``Encode`` (``encode``, on the raw columns)."""
    __jit_unused_properties__ = ["scale_out"]

    def __init__(self, encoding: Encoding, model: nn.Module):
        super().__init__()
        self.encode = Encode(encoding)
        self.model = model

    @property
    def scale_out(self) -> nn.Module | None:
        """The model's target scaling, whose offset parity's bound counts (None: none)."""
        return getattr(self.model, "scale_out", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.encode(x))
