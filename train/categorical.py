"""Learning a bundle's encoding from the training table: which feature columns are categorical (named so, or
holding text in every cell that is not missing), their levels in the order statsmodels' ``C(col)`` gives
them, the reference level of treatment coding, and with ``impute`` the training statistic each missing cell
is filled with. The cells become the graph's input (codes, NaN for missing) and the model's design."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from torchport.runtime.encoding import CATEGORICAL, CODINGS, IMPUTE, NUMERIC, TREATMENT, ColumnEncoding, Encoding, \
    level_text, sorted_levels
from torchport.runtime.errors import DataError, Fix


def is_text_column(cells: Sequence[Any]) -> bool:
    """Whether every cell that is not missing is text that is not a number (and at least one is)."""
    seen = False
    for cell in cells:
        text = level_text(cell)
        if text is None:
            continue
        if not isinstance(cell, (str, bytes)):
            return False
        try:
            float(text)
            return False
        except ValueError:
            seen = True
    return seen


def _as_number(cell: Any) -> float:
    """A numeric column's cell as a float, NaN when missing or not a number (refused by the caller)."""
    if level_text(cell) is None:
        return math.nan
    try:
        return float(cell)
    except (TypeError, ValueError):
        return math.inf  # not a number: refused naming the cell


def fit_encoding(cells: Mapping[str, Sequence[Any]], features: Sequence[str], source: str, *,
                 categorical: Sequence[str] = (), impute: str | None = None, missing_indicator: bool = False,
                 coding: str = TREATMENT) -> tuple[Encoding, np.ndarray]:
    """The encoding of the feature columns' ``cells`` and their codes (float64, NaN where a missing cell is
    imputed). A column is categorical when named in ``categorical`` or when it holds only text; ``coding``:
    treatment (linear models: the first level is the reference, as statsmodels' formulas have it) or one-hot.
    A missing cell is refused naming its row and column unless ``impute`` (mean, median or most_frequent;
    a categorical column takes its most frequent level) fills it; ``missing_indicator`` adds a 0/1 column
    for each column that had missing cells."""
    unknown = [c for c in categorical if c not in features]
    if unknown:
        raise DataError(f"{source}: categorical column(s) {', '.join(map(repr, unknown))} are not among the "
                        f"features {list(features)}", parameter="categorical")
    if impute is not None and impute not in IMPUTE:
        raise DataError(f"impute must be one of {', '.join(IMPUTE)}; got {impute!r}", parameter="impute")
    if coding not in CODINGS:
        raise DataError(f"coding must be one of {', '.join(CODINGS)}; got {coding!r}", parameter="coding")
    columns, codes = [], []
    for name in features:
        raw = cells[name]
        kind = CATEGORICAL if name in categorical or is_text_column(raw) else NUMERIC
        if kind == NUMERIC:
            values = np.array([_as_number(c) for c in raw], dtype=np.float64) \
                if np.asarray(raw).dtype.kind not in "fiub" else np.asarray(raw, np.float64)
            bad = np.isinf(values)
            if bad.any():
                row = int(np.argmax(bad))
                raise DataError(f"{source}: column {name!r}, row {row + 1} (data row, 1-based) holds "
                                f"{raw[row]!r}, which is not a finite number; clean or drop that row, or name the "
                                "column categorical", parameter="categorical",
                                fixes=(Fix({"categorical": name}, "to take its values as levels"),))
        else:
            texts = [level_text(c) for c in raw]
            present = [t for t in texts if t is not None]
            if not present:
                raise DataError(f"{source}: categorical column {name!r} has no value in any row", parameter="features")
            levels = sorted_levels(present)
            index = {level: k for k, level in enumerate(levels)}
            values = np.array([math.nan if t is None else index[t] for t in texts], dtype=np.float64)
        missing = np.isnan(values)
        if missing.any() and impute is None:
            row = int(np.argmax(missing))
            raise DataError(f"{source}: column {name!r}, row {row + 1} (data row, 1-based) is missing (got "
                            f"{_shown(raw[row])})", parameter="impute",
                            fixes=(Fix({"impute": "mean"}, "to fill missing cells with the training statistic "
                                       "(or median, most_frequent)"),))
        if kind == NUMERIC:
            kept = values[~missing]
            column = ColumnEncoding(name, NUMERIC, impute=impute, fill=_statistic(kept, impute, name, source),
                                    indicator=missing_indicator and bool(missing.any()))
        else:
            counts = Counter(values[~missing].astype(int).tolist())
            most = min(counts, key=lambda k: (-counts[k], k))
            column = ColumnEncoding(name, CATEGORICAL, levels, levels[0] if coding == TREATMENT else None,
                                    impute="most_frequent" if impute else None, fill=float(most) if impute else None,
                                    indicator=missing_indicator and bool(missing.any()))
        columns.append(column)
        codes.append(values)
    return Encoding(tuple(columns), coding), np.column_stack(codes)


def _statistic(values: np.ndarray, impute: str | None, name: str, source: str) -> float | None:
    if impute is None:
        return None
    if not len(values):
        raise DataError(f"{source}: column {name!r} has no value to impute from", parameter="impute")
    if impute == "mean":
        return float(np.mean(values))
    if impute == "median":
        return float(np.median(values))
    counts = Counter(values.tolist())
    return float(min(counts, key=lambda v: (-counts[v], v)))


def _shown(cell: Any) -> str:
    return "an empty cell" if cell is None or (isinstance(cell, str) and not cell.strip()) else repr(cell)


def needs_encoding(encoding: Encoding) -> bool:
    """Whether the encoding does anything (a categorical or imputed column): else the plain numeric path."""
    return any(c.kind == CATEGORICAL or c.impute is not None for c in encoding.columns)
