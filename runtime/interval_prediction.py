"""``Predictor.predict_interval``: a prediction with its interval and a domain flag per row, from the ONNX
Runtime answer and what the bundle keeps for intervals (``torchport.runtime.intervals``: the half-widths, and
for a linear model solved exactly the float64 estimates its intervals are centred on)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from torchport.runtime.encoding import design
from torchport.runtime.inputs import answer_like, as_matrix, is_dataframe
from torchport.runtime.intervals import check_level, centres, domain_flags, half_widths, no_intervals, KINDS
from torchport.runtime.errors import InputError


@dataclass(frozen=True)
class PredictionInterval:
    """Predictions with their ``level`` intervals of ``kind`` ("prediction": where a new observation falls;
    "mean": where the expected value lies, linear models only). ``prediction`` is the bundle's answer (what
    ``predict`` gives); the interval is centred on a linear model's float64 exact fit where the bundle keeps
    its estimates (within the bundle's parity bound of ``prediction``), else on ``prediction``.
    ``prediction``, ``lower`` and ``upper`` are of the kind ``predict`` answers (an array, a list, or a
    DataFrame with columns ``<target>``, ``<target>_lower``, ``<target>_upper``); ``out_of_domain`` is one
    bool per row (an array, a list, or a Series), ``reasons`` one string per row ("" for a row inside the
    training domain); ``targets`` the target names."""
    prediction: Any
    lower: Any
    upper: Any
    out_of_domain: Any
    reasons: tuple[str, ...]
    level: float
    kind: str
    targets: tuple[str, ...]

    def to_frame(self) -> Any:
        """One DataFrame: ``<target>``, ``<target>_lower``, ``<target>_upper`` per target, ``out_of_domain``
        and ``out_of_domain_reason`` (needs pandas)."""
        import pandas as pd
        width = len(self.targets)
        parts = [np.asarray(self.prediction, np.float64).reshape(-1, width),
                 np.asarray(self.lower, np.float64).reshape(-1, width),
                 np.asarray(self.upper, np.float64).reshape(-1, width)]
        index = self.prediction.index if is_dataframe(self.prediction) else None  # a list's .index is a method
        columns = {}
        for j, name in enumerate(self.targets):
            columns[name] = parts[0][:, j]
            columns[f"{name}_lower"] = parts[1][:, j]
            columns[f"{name}_upper"] = parts[2][:, j]
        columns["out_of_domain"] = np.asarray(self.out_of_domain, bool)
        columns["out_of_domain_reason"] = list(self.reasons)
        return pd.DataFrame(columns, index=index)


def predict_interval(predictor, x: Any, level: float = 0.95, kind: str = "prediction") -> PredictionInterval:
    """What ``Predictor.predict_interval`` answers (see there)."""
    level = check_level(level)
    if kind not in KINDS:
        raise InputError(f"kind must be 'prediction' or 'mean'; got {kind!r}", parameter="kind")
    manifest = predictor.manifest
    record = manifest.intervals if manifest is not None else None
    if record is None:
        raise no_intervals(str(predictor.engine.source if manifest is None else predictor.engine.source.parent))
    features, targets = predictor.feature_names, predictor.target_names
    empty = isinstance(x, (list, tuple)) and len(x) == 0
    encoding, unseen = predictor.encoding, None
    if encoding is not None:  # categorical or imputed columns: intervals are of the model's design
        codes, unseen = predictor.encode(x, dtype=np.float64) if not empty else \
            (np.empty((0, len(features))), np.zeros(0, bool))
        X, names, feed = design(encoding, codes), tuple(encoding.design_names()), codes
    else:
        raw = as_matrix(x, features) if not empty else np.empty((0, len(features)))
        X = feed = np.asarray(raw, np.float64)
        names = tuple(features)
    half = half_widths(record, X, level, kind)
    pred = predictor.predict(feed)
    centre = centres(record, X, pred)
    flags, reasons = domain_flags(record, X, names)
    if unseen is not None and unseen.any():  # scored as the reference level (unseen="reference"): flagged
        flags = flags | unseen
        reasons = tuple("; ".join(filter(None, (r, "a level the model was not trained on, scored as the reference "
                                                   "level" if u else ""))) for r, u in zip(reasons, unseen))
    about = (reasons, level, kind, tuple(targets))
    if is_dataframe(x):
        import pandas as pd
        return PredictionInterval(answer_like(x, pred, targets),
                                  answer_like(x, centre - half, [f"{t}_lower" for t in targets]),
                                  answer_like(x, centre + half, [f"{t}_upper" for t in targets]),
                                  pd.Series(flags, index=x.index, name="out_of_domain"), *about)
    if isinstance(x, np.ndarray):
        return PredictionInterval(pred, centre - half, centre + half, flags, *about)
    return PredictionInterval(pred.tolist(), (centre - half).tolist(), (centre + half).tolist(),
                              [bool(f) for f in flags], *about)
