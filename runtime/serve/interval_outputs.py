"""The outputs a request may name beside ``targets``: each row's prediction interval (``lower``, ``upper``,
FP64) and domain flag (``out_of_domain``, BOOL), for models whose bundle keeps what intervals need, at the
request's ``parameters`` ``interval_level`` (default 0.95) and ``interval_kind`` ("prediction", or "mean"
for a linear model), centred as ``Predictor.predict_interval``'s (a linear model solved exactly: on its float64
fit; else on the model's answer), from the rows as the request sent them (FP32 or FP64, read in float64): the
same numbers as ``predict_interval`` for the same values."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchport.runtime.errors import TorchportError
from torchport.runtime.intervals import centres, domain_flags, half_widths, no_intervals
from torchport.runtime.serve.inference import INTERVAL_OUTPUTS, LOWER, OUT_OF_DOMAIN, UPPER, InferRequest, \
    ModelInfo, ProtocolError

DEFAULT_LEVEL = 0.95
LEVEL_PARAMETER, KIND_PARAMETER = "interval_level", "interval_kind"


@dataclass(frozen=True)
class OutputTensor:
    """One output of an answer: its name, V2 datatype and values."""
    name: str
    datatype: str
    values: np.ndarray


def wants_intervals(request: InferRequest) -> bool:
    """Whether the request names an interval output (then ``answer`` makes its outputs)."""
    return any(out.name in INTERVAL_OUTPUTS for out in request.outputs)


def _parameters(request: InferRequest) -> tuple[float, str]:
    params = request.parameters or {}
    level = params.get(LEVEL_PARAMETER, DEFAULT_LEVEL)
    kind = params.get(KIND_PARAMETER, "prediction")
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise ProtocolError(400, f"parameter {LEVEL_PARAMETER!r} must be a number between 0 and 1 (0.95 for 95% "
                                 f"intervals), got {level!r}")
    return float(level), kind


def answer(request: InferRequest, info: ModelInfo, rows, targets: np.ndarray) -> list[OutputTensor]:
    """The outputs ``request`` names, in its order, for its ``rows`` (as the model saw them) and the model's
    answer ``targets``; ProtocolError 400 for an unknown output, a bundle without intervals, or a level or
    kind the intervals cannot give."""
    names = [out.name for out in request.outputs]
    intervals = info.intervals
    if intervals is None:
        raise ProtocolError(400, f"model {info.name!r} gives no intervals: {no_intervals('its bundle').message}")
    level, kind = _parameters(request)
    x = np.asarray(rows, np.float64).reshape(-1, len(info.feature_names))
    centre = centres(intervals, x, targets)
    try:
        half = half_widths(intervals, x, level, kind)
    except TorchportError as e:
        raise ProtocolError(400, f"{e.message} (parameters {LEVEL_PARAMETER!r}, {KIND_PARAMETER!r})") from None
    made = {info.output_name: OutputTensor(info.output_name, info.datatype, np.asarray(targets, info.dtype)),
            LOWER: OutputTensor(LOWER, "FP64", centre - half), UPPER: OutputTensor(UPPER, "FP64", centre + half)}
    if OUT_OF_DOMAIN in names:
        made[OUT_OF_DOMAIN] = OutputTensor(OUT_OF_DOMAIN, "BOOL", domain_flags(intervals, x, info.feature_names)[0])
    return [made[name] for name in names]
