"""Datasets: the bundled 22-island table, the tutorial's derived sets, and any CSV/TSV/Parquet file."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from torchport.train.errors import DataError

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
    """Float64 features and targets with their names and where they came from."""

    name: str
    source: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]

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


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data file {path} does not exist; give the path to a CSV, TSV or Parquet file "
                        f"or one of the bundled datasets: {', '.join(DATASETS)}", parameter="name_or_path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".tsv", ".tab"):
            return pd.read_csv(path, sep="\t")
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path, sep=None, engine="python")
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"cannot read {path}: {e}", parameter="name_or_path") from None
    raise DataError(f"cannot read {path}: unknown file type {suffix!r}; use .csv, .tsv or .parquet",
                    parameter="name_or_path")


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


def from_frame(frame: pd.DataFrame, target: Sequence[str], features: Sequence[str] | None,
               name: str, source: str) -> Dataset:
    """Pick the target and feature columns by name and check they are finite numbers."""
    target = list(target)
    if not target:
        raise DataError(f"{source}: no target column given; give target=[...] with a column name",
                        parameter="target")
    if features is None:
        features = [c for c in frame.columns if c not in target]
    features = list(features)
    if not features:
        raise DataError(f"{source}: no feature columns left; give features=[...] with column names",
                        parameter="features")
    missing = [c for c in target + features if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: column(s) {', '.join(map(repr, missing))} not found; "
                        f"available columns: {', '.join(map(str, frame.columns))}",
                        parameter="target" if set(missing) & set(target) else "features")
    overlap = set(target) & set(features)
    if overlap:
        raise DataError(f"{source}: column(s) {', '.join(sorted(overlap))} given both as target and feature",
                        parameter="features")
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    X = np.column_stack([_numeric_column(frame, c, source) for c in features])
    y = np.column_stack([_numeric_column(frame, c, source) for c in target])
    return Dataset(name, source, X, y, features, target)


def load_dataset(name_or_path: str, target: Sequence[str] | None = None,
                 features: Sequence[str] | None = None) -> Dataset:
    """A bundled dataset by name, or a CSV/TSV/Parquet file by path, with target/features by column name."""
    if name_or_path in DATASETS:
        build, default_target, default_features, _ = DATASETS[name_or_path]
        frame = build()
        return from_frame(frame, target or default_target, features or (None if target else default_features),
                          name_or_path, f"bundled dataset {name_or_path}")
    path = Path(name_or_path)
    if path.suffix == "" and not path.exists():
        raise DataError(f"unknown dataset {name_or_path!r}; bundled datasets: {', '.join(DATASETS)}, "
                        "or give the path to a CSV, TSV or Parquet file", parameter="name_or_path")
    frame = _read_file(path)
    if not target:
        raise DataError(f"{path}: no target column given; give target=[...] with one or more of: "
                        f"{', '.join(map(str, frame.columns))}", parameter="target")
    return from_frame(frame, target, features, path.stem, str(path))
