"""Datasets: the bundled 22-island table and the tutorial's derived sets, files read by the runtime's table
reader, and the column rules every table (a bundled one, a DataFrame, a file) is picked by."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from torchport.runtime.encoding import Encoding, design
from torchport.runtime.errors import DataError
from torchport.runtime.tables import read_cells, read_table
from torchport.train.categorical import fit_encoding, is_text_column, needs_encoding

CITATION = (
    "McMaster RT (2005). Factors influencing vascular plant diversity on 22 islands off the coast of "
    "eastern North America. Journal of Biogeography 32(3):475-492."
)
# The tutorial's published fit of ntv_rich ~ area on plant_richness_lr (its printed weight, bias, R^2 and
# prediction at area 3).
TUTORIAL_FIT = {"weight": 0.35739, "bias": 1.33122, "r2": 0.82764, "pred3": 2.40344}


def published_fit(name: str, features: Sequence[str], targets: Sequence[str]) -> dict[str, float] | None:
    """The tutorial's published figures when a model was fitted on its data and columns, else None."""
    if name == "plant_richness_lr" and list(features) == ["area"] and list(targets) == ["ntv_rich"]:
        return dict(TUTORIAL_FIT)
    return None


@dataclass(frozen=True)
class Dataset:
    """Float64 features and targets with their names and where they came from. ``recipe`` holds Regressor
    settings the data comes with (the tutorial's data: the tutorial's SGD), applied by `torchport train`
    where the command line leaves them open. A table with categorical or imputed columns also has its
    ``encoding`` and ``codes`` (the exported graph's input: one column per raw feature, level codes, NaN
    where a cell was missing); ``X`` and ``feature_names`` are then the model's design (dummy columns,
    missing cells filled), which the model's core is fitted on."""

    name: str
    source: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    recipe: dict = field(default_factory=dict)
    encoding: Encoding | None = None
    codes: np.ndarray | None = None

    @property
    def inputs(self) -> np.ndarray:
        """The rows as the exported graph takes them: the codes with an encoding, else ``X``."""
        return self.X if self.codes is None else self.codes

    @property
    def input_names(self) -> list[str]:
        """The exported graph's feature names: the raw columns with an encoding, else ``feature_names``."""
        return self.feature_names if self.encoding is None else self.encoding.features

    @property
    def fingerprint(self) -> str:
        """sha256 of the column names and the float64 values: identifies the exact training data."""
        h = hashlib.sha256()
        h.update(repr((self.feature_names, self.target_names)).encode())
        h.update(np.ascontiguousarray(self.X, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.y, dtype="<f8").tobytes())
        return h.hexdigest()


def load_islands() -> pd.DataFrame:
    """The 22-island table of McMaster (2005), as shipped in the package, one row per island."""
    with resources.files("torchport.train").joinpath("data/islands_mcmaster2005.tsv").open("r") as f:
        return pd.read_csv(f, sep="\t")


def _plant_richness_lr() -> pd.DataFrame:
    t = load_islands()
    return pd.DataFrame({"ntv_rich": np.log10(t["ntv_rich"]), "area": np.log10(t["area_ha"])})


def _plant_richness_mlr() -> pd.DataFrame:
    t = load_islands()
    return pd.DataFrame({
        "ntv_rich": np.log10(t["ntv_rich"]),
        "area": np.log10(t["area_ha"]),
        "latitude": t["latitude"].astype(float),
        "dist_mainland": t["dist_mainland_km"].astype(float),
    })


# name -> (table builder, default target, default features, description)
DATASETS: dict[str, tuple] = {
    "plant_richness_lr": (_plant_richness_lr, ["ntv_rich"], ["area"],
                          "log10 native species count against log10 island area (the tutorial's data)"),
    "plant_richness_mlr": (_plant_richness_mlr, ["ntv_rich"], ["area", "latitude", "dist_mainland"],
                           "log10 native richness against log10 area, latitude and distance to mainland"),
    "islands": (load_islands, ["ntv_rich"], ["area_ha"], "the raw 22-island table"),
}
# The tutorial's recipe (full-batch SGD; its lr 0.002 and 6000 epochs are SGD's defaults), which `torchport
# train` uses on the tutorial's own data and columns unless told otherwise.
TUTORIAL_RECIPE = {"optimizer": "sgd"}
RECIPES = {"plant_richness_lr": TUTORIAL_RECIPE}


def select_columns(columns: Sequence[str], target: Sequence[str] | None, features: Sequence[str] | None,
                   source: str) -> tuple[list[str], list[str]]:
    """The target and feature columns of a table with ``columns``, by name (features default to every other
    column); DataError naming the parameter for a missing, repeated or overlapping name."""
    columns = list(columns)
    target = list(target or [])
    if not target:
        raise DataError(f"{source}: no target column given; give target=[...] with one or more of: "
                        f"{', '.join(map(str, columns))}", parameter="target")
    features = [c for c in columns if c not in target] if features is None else list(features)
    if not features:
        raise DataError(f"{source}: no feature columns left; give features=[...] with column names",
                        parameter="features")
    missing = [c for c in target + features if c not in columns]
    if missing:
        raise DataError(f"{source}: column(s) {', '.join(map(repr, missing))} not found; "
                        f"available columns: {', '.join(map(str, columns))}",
                        parameter="target" if set(missing) & set(target) else "features")
    repeated = sorted({c for c in target + features if (target + features).count(c) > 1})
    if repeated:
        where = "both as target and feature" if set(repeated) & set(target) and set(repeated) & set(features) \
            else "more than once"
        raise DataError(f"{source}: column(s) {', '.join(repeated)} given {where}",
                        parameter="features")
    return target, features


def _numeric_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raw = frame[column].iloc[row]
        what = "a missing value (NaN)" if pd.isna(raw) else f"{raw!r}, which is not a finite number"
        raise DataError(f"{source}: column {column!r}, row {row + 1} (data row, 1-based) holds {what}; "
                        "clean or drop that row")
    return values


def from_columns(columns: Mapping[str, np.ndarray], target: Sequence[str], features: Sequence[str], name: str,
                 source: str, recipe: Mapping[str, Any] | None = None) -> Dataset:
    """A Dataset of float64 columns already read and checked (``load_dataset`` reads files into them with
    the rules `torchport predict` uses)."""
    target, features = list(target), list(features)
    rows = len(next(iter(columns.values()))) if columns else 0
    if rows == 0:
        raise DataError(f"{source}: no data rows")
    X = np.column_stack([np.asarray(columns[c], np.float64) for c in features])
    y = np.column_stack([np.asarray(columns[c], np.float64) for c in target])
    return Dataset(name, source, X, y, features, target, dict(recipe or {}))


def encoded(cells: Mapping[str, Sequence[Any]], targets: Mapping[str, np.ndarray], target: Sequence[str],
            features: Sequence[str], name: str, source: str, **options: Any) -> Dataset:
    """A Dataset of a table with categorical or imputed columns (``options``: ``fit_encoding``'s): its
    encoding, the codes and the design; a plain Dataset when the encoding does nothing."""
    encoding, codes = fit_encoding(cells, features, source, **options)
    if not needs_encoding(encoding):
        return from_columns({**targets, **{c: codes[:, j] for j, c in enumerate(features)}}, target, features,
                            name, source)
    data = from_columns({**targets, **dict(zip(encoding.design_names(), design(encoding, codes).T))}, target,
                        encoding.design_names(), name, source)
    return replace(data, encoding=encoding, codes=codes)


def from_frame(frame: pd.DataFrame, target: Sequence[str], features: Sequence[str] | None,
               name: str, source: str, **options: Any) -> Dataset:
    """Pick the target and feature columns of a DataFrame by name and check they are finite numbers; text
    columns (and those named in ``categorical``) are categorical, and ``impute`` fills missing cells
    (``options``: ``fit_encoding``'s)."""
    columns = [str(c) for c in frame.columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(f"{source}: the column name(s) {', '.join(map(repr, repeated))} appear more than once; "
                        "give each column its own name")
    target, features = select_columns(columns, target, features, source)
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    text = [c for c in features if frame[c].dtype.kind not in "fiub" and is_text_column(frame[c].tolist())]
    if options.get("categorical") or options.get("impute") or text:
        cells = {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) if frame[c].dtype.kind in "fiub"
                 else frame[c].astype(object).tolist() for c in features}
        return encoded(cells, {c: _numeric_column(frame, c, source) for c in target}, target, features, name,
                       source, **options)
    return from_columns({c: _numeric_column(frame, c, source) for c in target + features}, target, features, name,
                        source)


def load_dataset(name_or_path: str, target: Sequence[str] | None = None, features: Sequence[str] | None = None,
                 *, delimiter: str | None = None, on_rows: Callable[[int], None] | None = None,
                 **options: Any) -> Dataset:
    """A bundled dataset by name, or a CSV/TSV/Parquet file by path, with target/features by column name (a
    bundled dataset's own by default; a file's features default to every other column). A file is read by
    the runtime's table reader, the one `torchport predict` uses (byte order mark, delimiter from the header
    unless ``delimiter`` is given, one-column files, repeated names refused, '.' decimals); ``on_rows(rows_read)``
    follows a long read. A feature column of text (or one named in ``categorical``) is categorical, and
    ``impute`` fills missing feature cells (``options``: ``fit_encoding``'s: categorical, impute,
    missing_indicator, coding)."""
    if name_or_path in DATASETS:
        return _bundled(name_or_path, target, features, **options)
    path = Path(name_or_path)
    if path.suffix == "" and not path.exists():
        raise DataError(f"unknown dataset {name_or_path!r}; bundled datasets: {', '.join(DATASETS)}, "
                        "or give the path to a CSV, TSV or Parquet file", parameter="name_or_path")
    if not path.exists():
        raise DataError(f"data file {path} does not exist; give the path to a CSV, TSV or Parquet file "
                        f"or one of the bundled datasets: {', '.join(DATASETS)}", parameter="name_or_path")
    chosen: dict[str, list[str]] = {}

    def pick(columns: list[str]) -> list[str]:
        chosen["target"], chosen["features"] = select_columns(columns, target, features, str(path))
        return chosen["target"] + chosen["features"]

    try:
        _, columns = read_table(path, pick if not options.get("categorical") and options.get("impute") is None
                                else (lambda header: pick(header)[:len(chosen["target"])]),
                                delimiter=delimiter, parameter="name_or_path", on_rows=on_rows)
    except DataError:
        if not chosen:
            raise
        cells = read_cells(path, chosen["features"], delimiter=delimiter, parameter="name_or_path")
        if not any(is_text_column(cells[c]) for c in chosen["features"]):
            raise  # no column of text: the cell refused is a mistake in a numeric column
        _, columns = read_table(path, chosen["target"], delimiter=delimiter, parameter="name_or_path")
        return encoded(cells, columns, chosen["target"], chosen["features"], path.stem, str(path), **options)
    if len(columns) == len(chosen["target"]):  # categorical or impute asked for: the features as read
        cells = read_cells(path, chosen["features"], delimiter=delimiter, parameter="name_or_path")
        return encoded(cells, columns, chosen["target"], chosen["features"], path.stem, str(path), **options)
    return from_columns(columns, chosen["target"], chosen["features"], path.stem, str(path))


def _bundled(name: str, target: Sequence[str] | None, features: Sequence[str] | None, **options: Any) -> Dataset:
    """A bundled dataset with target/features by column name (the dataset's own by default)."""
    build, default_target, default_features, _ = DATASETS[name]
    frame = build()
    data = from_frame(frame, target or default_target, features or (None if target else default_features),
                      name, f"bundled dataset {name}", **options)
    if name in RECIPES and data.target_names == default_target and data.feature_names == default_features:
        data = replace(data, recipe=dict(RECIPES[name]))
    return data
