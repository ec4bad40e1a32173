"""Training data by name or by file: the bundled datasets (torchport.train) and CSV/TSV/Parquet files read
with the runtime's table reader, so that `torchport train` and `torchport predict` read a file by the same
rules (byte order mark, delimiter from the header, one-column files, repeated names refused, '.' decimals)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from torchport.runtime.tables import read_table
from torchport.train.datasets import DATASETS, Dataset, from_columns, select_columns
from torchport.train.datasets import load_dataset as load_bundled
from torchport.train.errors import DataError


def load_dataset(name_or_path: str, target: Sequence[str] | None = None, features: Sequence[str] | None = None,
                 *, delimiter: str | None = None, on_rows: Callable[[int], None] | None = None) -> Dataset:
    """A bundled dataset by name, or a CSV/TSV/Parquet file by path, with target/features by column name
    (features default to every other column of a file). ``delimiter`` (comma, semicolon or tab) is read from
    a CSV's header unless given; ``on_rows(rows_read)`` follows a long read."""
    if name_or_path in DATASETS:
        return load_bundled(name_or_path, target, features)
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

    _, columns = read_table(path, pick, delimiter=delimiter, parameter="name_or_path", on_rows=on_rows)
    return from_columns(columns, chosen["target"], chosen["features"], path.stem, str(path))
