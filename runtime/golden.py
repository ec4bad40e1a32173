"""A bundle's golden cases (golden.json): rows kept at export with the float64 answers of the torch module
and, per target, how far a correct float32 run may be from them. Checking them needs only the model and
ONNX Runtime, so parity can be checked where the model runs (another CPU, another provider, another
language: examples/node/score.mjs reads the same file)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from torchport.runtime.errors import BundleError, ParityError
from torchport.runtime.jsonfields import NUMBER, TEXT, items, scalar, values
from torchport.runtime.hot_path import SLOT_ROWS

FORMAT = "torchport.golden"


@dataclass(frozen=True)
class Golden:
    """The rows (in the model's dtype), their float64 answers and the bound per target."""
    inputs: np.ndarray
    answers: np.ndarray
    bound: np.ndarray


@dataclass(frozen=True)
class SelfCheck:
    """What ``Predictor.self_check`` found: whether golden cases were checked, how many rows, on which
    providers, and the largest error as a share of the bound (at most 1 when it passed)."""
    checked: bool
    rows: int
    providers: list[str]
    note: str = ""
    of_bound: float | None = None
    max_abs: float | None = None

    def __str__(self) -> str:
        if not self.checked:
            return f"self-check: {self.note}"
        return (f"self-check: {self.rows} golden rows on {', '.join(self.providers)} within the parity bound "
                f"(largest error {self.max_abs:.3g}, {self.of_bound:.2g} of the bound)")


def load_golden(data: bytes, features: list[str], targets: list[str], dtype: Any = np.float32) -> Golden:
    """golden.json's content, checked against the model's names, its rows in the model's ``dtype``; BundleError
    for anything else."""
    try:
        obj = json.loads(data)
        v = values(obj, "golden.json", {"format": TEXT, "features": (list,), "targets": (list,), "bound": (list,),
                                        "inputs": (list,), "answers": (list,)})
        if v["format"] != FORMAT:
            raise ValueError(f"its format is {v['format']!r}, not {FORMAT!r}")
        names = (list(items(v["features"], "golden.json.features", scalar(TEXT))),
                 list(items(v["targets"], "golden.json.targets", scalar(TEXT))))
        if names != (list(features), list(targets)):
            raise ValueError(f"it is for features {names[0]} and targets {names[1]}, not {features} and {targets}")
        bound = np.array(items(v["bound"], "golden.json.bound", scalar(NUMBER)), np.float64)
        inputs = np.array(v["inputs"], np.float64).reshape(-1, len(features))
        answers = np.array(v["answers"], np.float64).reshape(-1, len(targets))
    except (ValueError, TypeError) as e:  # json, DataError (a ValueError) and reshape errors
        raise BundleError(f"golden.json is malformed ({e}); re-export the bundle") from None
    if len(inputs) != len(answers) or len(bound) != len(targets):
        raise BundleError(f"golden.json holds {len(inputs)} rows, {len(answers)} answers and {len(bound)} bounds; "
                          "re-export the bundle")
    return Golden(inputs.astype(dtype), answers, bound)


Run = Callable[[np.ndarray], np.ndarray]


def self_check(predict: Run, golden: Golden, targets: list[str], providers: list[str],
               regimes: list[tuple[str, Run]] = ()) -> SelfCheck:
    """Run the golden rows through ``predict`` whole and in batches of up to SLOT_ROWS rows, and whole through
    each of ``regimes`` (a description and a run); ParityError naming the worst element if any answer is
    further from its float64 value than the bound."""
    whole = np.asarray(predict(golden.inputs), np.float64)
    pieces = np.concatenate([np.asarray(predict(golden.inputs[i:i + SLOT_ROWS]), np.float64)
                             for i in range(0, len(golden.inputs), SLOT_ROWS)]) if len(golden.inputs) else whole
    runs = [("as one batch", whole), (f"in batches of up to {SLOT_ROWS} rows", pieces)]
    runs += [(f"as one batch in the regime {how}", np.asarray(run(golden.inputs), np.float64))
             for how, run in regimes]
    worst_share, worst = -1.0, None
    for how, got in runs:
        diff = np.abs(got - golden.answers)
        diff = np.where(np.isnan(diff), np.inf, diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(golden.bound > 0, diff / golden.bound, np.where(diff > 0, np.inf, 0.0))
        if share.size and share.max() > worst_share:
            i, j = np.unravel_index(int(np.argmax(share)), share.shape)
            worst_share, worst = float(share.max()), (how, int(i), int(j), float(got[i, j]), float(diff[i, j]))
    if worst is None:
        return SelfCheck(True, 0, providers, "no golden rows", 0.0, 0.0)
    how, i, j, value, error = worst
    if worst_share > 1.0:
        raise ParityError(f"self-check failed on {', '.join(providers)}: golden row {i}, target {targets[j]!r} "
                          f"(run {how}): the float64 answer is {golden.answers[i, j]:.9g}, this model gives "
                          f"{value:.9g}, off by {error:.3g}, beyond the {golden.bound[j]:.3g} that "
                          f"{golden.inputs.dtype} rounding may account for: the model does not compute here what it computed at export")
    return SelfCheck(True, len(golden.inputs), providers, "", worst_share, error)
