"""How a bundle takes tables as they come: categorical columns (strings, or numbers named categorical) and
missing values. The graph takes one number per feature column, in the manifest's order: a numeric column's
value, a categorical column's level code (its index in ``levels``), NaN for a missing cell where the bundle
imputes that column; inside the graph the codes become dummy (treatment) or one-hot columns and NaN becomes
the training statistic. This module is what every runtime does before the graph: strings to codes, unseen
levels refused (or mapped to the reference level and flagged, when asked), missing cells refused unless
imputation is recorded. Torch-free and ONNX-Runtime-free: train, export and the runtime share it."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from torchport.runtime.errors import DataError, Fix, InputError
from torchport.runtime.jsonfields import FLAG, NULL, NUMBER, TEXT, items, scalar, values

NUMERIC, CATEGORICAL = "numeric", "categorical"
KINDS = (NUMERIC, CATEGORICAL)
TREATMENT, ONE_HOT = "treatment", "one-hot"
CODINGS = (TREATMENT, ONE_HOT)
IMPUTE = ("mean", "median", "most_frequent")
UNSEEN = ("refuse", "reference")  # what an unseen level gets: an InputError, or the reference level (flagged)
MISSING_TEXTS = frozenset({"", "NA", "NaN", "nan", "null", "None"})  # cells read as missing from a file or JSON


def level_text(value: Any) -> str | None:
    """A cell as a level's text (None: missing): strings as they are (stripped of spaces at the ends), numbers
    as the shortest text that reads back (1.0 -> "1"), so that 1, 1.0 and "1" are one level."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        text = value.strip()
        if text in MISSING_TEXTS:
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return level_text(number) if math.isfinite(number) else text
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() and abs(number) < 2 ** 53 else repr(number)
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing markers
        return None
    return str(value)


def sorted_levels(texts: Sequence[str]) -> tuple[str, ...]:
    """Levels in the order statsmodels' ``C(col)`` gives them: numerically when every level is a number,
    else by their text."""
    unique = set(texts)
    try:
        return tuple(sorted(unique, key=float))
    except ValueError:
        return tuple(sorted(unique))


@dataclass(frozen=True)
class ColumnEncoding:
    """One feature column: numeric, or categorical with its ``levels`` (code = index) and the ``reference``
    level that treatment coding drops (None: one-hot, every level a column); ``impute`` (None: a missing
    cell is refused) with ``fill``, the training statistic (a number; for a categorical column, the code of
    its most frequent level), and ``indicator``: a 0/1 column saying the cell was missing."""
    name: str
    kind: str = NUMERIC
    levels: tuple[str, ...] = ()
    reference: str | None = None
    impute: str | None = None
    fill: float | None = None
    indicator: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"column {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == CATEGORICAL and not self.levels:
            raise DataError(f"column {self.name!r}: a categorical column needs at least one level")
        if self.reference is not None and self.reference not in self.levels:
            raise DataError(f"column {self.name!r}: reference level {self.reference!r} is not among its levels")
        if self.impute is not None and (self.impute not in IMPUTE or self.fill is None):
            raise DataError(f"column {self.name!r}: impute must be one of {', '.join(IMPUTE)} with a fill value, "
                            f"got {self.impute!r} and {self.fill!r}")

    @property
    def dummies(self) -> tuple[str, ...]:
        """The levels that get a design column (every level but the reference)."""
        return tuple(level for level in self.levels if level != self.reference)

    def design_names(self) -> list[str]:
        """The names of this column's design columns, as statsmodels' formulas name them."""
        if self.kind == NUMERIC:
            names = [self.name]
        elif self.reference is not None:
            names = [f"C({self.name})[T.{level}]" for level in self.dummies]
        else:
            names = [f"C({self.name})[{level}]" for level in self.levels]
        return names + ([f"{self.name}[missing]"] if self.indicator else [])

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "levels": list(self.levels), "reference": self.reference,
                "impute": self.impute, "fill": self.fill, "indicator": self.indicator}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ColumnEncoding":
        v = values(obj, where, {"name": TEXT, "kind": TEXT, "levels": (list,), "reference": (str, NULL),
                                "impute": (str, NULL), "fill": (*NUMBER, NULL), "indicator": FLAG})
        return cls(**{**v, "levels": items(v["levels"], f"{where}.levels", scalar(TEXT))})


@dataclass(frozen=True)
class Encoding:
    """How the bundle's feature columns (in the manifest's order) become the model's design: the manifest's
    ``encoding`` (absent: every feature numeric, nothing imputed)."""
    columns: tuple[ColumnEncoding, ...]
    coding: str = TREATMENT

    def __post_init__(self) -> None:
        if self.coding not in CODINGS:
            raise DataError(f"coding must be one of {', '.join(CODINGS)}, got {self.coding!r}")

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == CATEGORICAL]

    @property
    def imputed(self) -> list[str]:
        return [c.name for c in self.columns if c.impute is not None]

    def design_names(self) -> list[str]:
        """The names of the design columns the model's core takes, in order."""
        return [name for c in self.columns for name in c.design_names()]

    def to_json(self) -> dict:
        return {"coding": self.coding, "columns": [c.to_json() for c in self.columns]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Encoding":
        v = values(obj, where, {"coding": TEXT, "columns": (list,)})
        return cls(items(v["columns"], f"{where}.columns", ColumnEncoding.from_json), v["coding"])

    def describe(self) -> str:
        """One line: which columns are categorical (with their levels) and which are imputed."""
        parts = [f"{c.name} ({len(c.levels)} levels" + (f", reference {c.reference!r})" if c.reference else ")")
                 for c in self.columns if c.kind == CATEGORICAL]
        said = [f"categorical {', '.join(parts)}, {self.coding} coding"] if parts else []
        imputed = [f"{c.name} ({c.impute.replace('_', ' ')}" + (" level)" if c.kind == CATEGORICAL else ")")
                   for c in self.columns if c.impute]
        if imputed:
            said.append(f"missing cells filled with the training statistic: {', '.join(imputed)}")
        return "; ".join(said)

    # ---- cells to codes ------------------------------------------------------------------------------------

    def codes(self, columns: Sequence[Any], *, unseen: str = "refuse", first_row: int = 0,
              dtype: Any = np.float32, rows_are: str = "0-based") -> tuple[np.ndarray, np.ndarray]:
        """The graph's input for cells given column by column (one sequence per feature, in order): numbers,
        level codes, NaN where a missing cell is imputed; and per row whether an unseen level was mapped to
        the reference level (``unseen="reference"``). InputError naming the row (0-based, counted from
        ``first_row``), the column and the value for a missing cell without imputation, an unseen level, or
        a cell of a numeric column that is not a number (``rows_are`` says how rows are counted: a file's
        reader counts data rows from 1)."""
        if unseen not in UNSEEN:
            raise InputError(f"unseen must be one of {', '.join(UNSEEN)}; got {unseen!r}", parameter="unseen")
        rows = len(columns[0]) if len(columns) else 0
        out = np.empty((rows, len(self.columns)), dtype=dtype)
        flagged = np.zeros(rows, dtype=bool)
        for j, (column, cells) in enumerate(zip(self.columns, columns)):
            if column.kind == NUMERIC:
                out[:, j] = self._numbers(column, cells, first_row, rows_are)
            else:
                out[:, j] = self._levels(column, cells, unseen, flagged, first_row, rows_are)
            missing = np.isnan(out[:, j])
            if missing.any() and column.impute is None:
                row = int(np.argmax(missing))
                raise InputError(f"row {row + first_row} ({rows_are}), column {column.name!r} is missing (got "
                                 f"{_shown(cells[row])}); this model imputes no value for {column.name!r}: fill "
                                 "the cell, or train the model with --impute")
        return out, flagged

    def _numbers(self, column: ColumnEncoding, cells: Any, first_row: int, rows_are: str) -> np.ndarray:
        a = np.asarray(cells)
        if a.dtype.kind in "fiu":
            values_ = a.astype(np.float64)
        else:
            values_ = np.empty(len(a), dtype=np.float64)
            for i, cell in enumerate(a):
                values_[i] = _number(cell, column.name, f"{i + first_row} ({rows_are})")
        bad = np.isinf(values_)
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"row {row + first_row} ({rows_are}), column {column.name!r} holds {values_[row]}: "
                             "infinite inputs are refused; clean the data")
        return values_

    def _levels(self, column: ColumnEncoding, cells: Any, unseen: str, flagged: np.ndarray,
                first_row: int, rows_are: str) -> np.ndarray:
        index = {level: float(k) for k, level in enumerate(column.levels)}
        out = np.empty(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells):
            text = level_text(cell)
            if text is None:
                out[i] = np.nan
                continue
            code = index.get(text)
            if code is None:
                if unseen == "refuse":
                    shown = ", ".join(map(repr, column.levels[:12])) + (", ..." if len(column.levels) > 12 else "")
                    raise InputError(f"row {i + first_row} ({rows_are}), column {column.name!r}: {text!r} is not a "
                                     f"level the model was trained on ({shown})", parameter="unseen",
                                     fixes=(Fix({"unseen": "reference"}, "to score it as the reference level "
                                                f"{(column.reference or column.levels[0])!r} and flag the row"),))
                code, flagged[i] = index[column.reference or column.levels[0]], True
            out[i] = code
        return out

    def check_codes(self, x: np.ndarray, first_row: int = 0) -> None:
        """Refuse a numeric input holding anything but the graph's input: a categorical column's code that is
        not a whole number in range, NaN where nothing is imputed, an infinity."""
        for j, column in enumerate(self.columns):
            cells = x[:, j]
            missing = np.isnan(cells)
            bad = np.isinf(cells) | (missing if column.impute is None else False)
            if column.kind == CATEGORICAL:
                with np.errstate(invalid="ignore"):
                    bad |= ~missing & ((cells != np.round(cells)) | (cells < 0) | (cells >= len(column.levels)))
            if bad.any():
                row = int(np.argmax(bad))
                what = f"a level code from 0 to {len(column.levels) - 1} (or its level as text)" \
                    if column.kind == CATEGORICAL else "a finite number"
                raise InputError(f"row {row + first_row} (0-based), column {column.name!r} holds {cells[row]}; "
                                 f"expected {what}" + ("" if column.impute else ", and this model imputes no "
                                                      "missing value for it"))

    def columns_of(self, x: Any) -> list[Any] | None:
        """The input's cells column by column, in the features' order, for a DataFrame (by name), a list of
        rows or an object (or string) numpy array; None for a numeric array (it holds codes already)."""
        features = self.features
        if type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "columns"):
            missing = [c for c in features if c not in x.columns]
            if missing:
                raise InputError(f"the DataFrame lacks the feature column(s) {', '.join(map(repr, missing))}; "
                                 f"the model expects {features}")
            categorical = self.categorical
            return [x[c].to_numpy(dtype=np.float64, na_value=np.nan)
                    if c not in categorical and x[c].dtype.kind in "fiub" else x[c].astype(object).to_numpy()
                    for c in features]
        if isinstance(x, np.ndarray) and x.dtype.kind in "fiu":
            return None
        rows = x if isinstance(x, np.ndarray) else list(x)
        if isinstance(rows, np.ndarray):
            if rows.ndim != 2 or rows.shape[1] != len(features):
                raise InputError(f"expected a 2-D input of shape (rows, {len(features)}) with columns {features}; "
                                 f"got shape {rows.shape}")
            return [rows[:, j] for j in range(len(features))]
        for i, row in enumerate(rows):
            if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) != len(features):
                raise InputError(f"row {i} is not a row of {len(features)} cells ({features}); give a list of "
                                 "equal-length rows, a DataFrame or a 2-D array")
        return [[row[j] for row in rows] for j in range(len(features))]


def _shown(cell: Any) -> str:
    return "an empty cell" if cell is None or cell == "" else repr(cell)


def _number(cell: Any, name: str, row: str) -> float:
    """A numeric column's cell as a float (NaN: missing); InputError for text that is not a number."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return math.nan
    if isinstance(cell, bytes):
        cell = cell.decode("utf-8")
    if isinstance(cell, str):
        if cell.strip() in MISSING_TEXTS:
            return math.nan
        try:
            return float(cell)
        except ValueError:
            raise InputError(f"row {row}, column {name!r} holds {cell!r}; expected a number") from None
    if isinstance(cell, (bool, np.bool_)) or not isinstance(cell, numbers.Real):
        if type(cell).__name__ in ("NAType", "NaTType"):
            return math.nan
        raise InputError(f"row {row}, column {name!r} holds {cell!r}; expected a number")
    return float(cell)


def design(encoding: Encoding, codes: np.ndarray) -> np.ndarray:
    """The model core's design (float64) from the graph's input: missing cells filled with the training
    statistic, categorical codes as dummy or one-hot columns, missing indicators; what the graph computes
    before its core, for the fit and for interval leverage."""
    codes = np.asarray(codes, np.float64)
    parts = []
    for j, column in enumerate(encoding.columns):
        cells = codes[:, j]
        missing = np.isnan(cells)
        filled = np.where(missing, column.fill, cells) if column.impute else cells
        if column.kind == NUMERIC:
            parts.append(filled[:, None])
        else:
            kept = [k for k, level in enumerate(column.levels) if level != column.reference]
            parts.append((filled[:, None] == np.asarray(kept, np.float64)[None, :]).astype(np.float64))
        if column.indicator:
            parts.append(missing[:, None].astype(np.float64))
    return np.concatenate(parts, axis=1) if parts else np.empty((len(codes), 0))
