"""Score CSV/TSV/Parquet files in bounded memory with pyarrow: read a chunk, predict, append, repeat.

Columns that are not features pass through untouched (CSV cells are kept as their text); one
`<target>_pred` column per target is added. The output is written to a temp file and renamed into place."""
from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from torchport.runtime.bundle import umask_mode
from torchport.runtime.predictor import Predictor

CSV_SUFFIXES = {".csv": ",", ".txt": ",", ".tsv": "\t", ".tab": "\t"}
SUFFIXES = (*CSV_SUFFIXES, ".parquet")


def _kind(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{role} {path}: unsupported file type {suffix!r}; use .csv, .tsv or .parquet")
    return "parquet" if suffix == ".parquet" else "csv"


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f, delimiter=CSV_SUFFIXES[path.suffix.lower()]), None)
    if not header:
        raise ValueError(f"{path} is empty; expected a header row naming the columns")
    return header


def _batches(src: Path, chunk_rows: int) -> tuple[list[str], Iterator, int | None]:
    """(column names, iterator of pyarrow RecordBatches, total rows if known)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if _kind(src, "input") == "parquet":
        try:
            pf = pq.ParquetFile(src)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"cannot read {src} as Parquet: {e}") from None
        return pf.schema_arrow.names, pf.iter_batches(batch_size=chunk_rows), pf.metadata.num_rows
    header = _csv_header(src)
    if len(set(header)) != len(header):
        raise ValueError(f"{src}: the header repeats a column name: {header}")
    # 1 MiB blocks, parsed on this thread, from a plain (not memory-mapped) file: pyarrow reads ahead a
    # fixed number of blocks, so block size bounds the reader's memory.
    reader = pacsv.open_csv(
        pa.OSFile(str(src)),
        read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=CSV_SUFFIXES[src.suffix.lower()]),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False))
    return header, iter(reader), None


def _rechunk(batches: Iterator, rows: int) -> Iterator:
    """Batches of at most ``rows`` rows (CSV blocks are sized in bytes, not rows)."""
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _features(batch, names: list[str], first_row: int, src: Path) -> np.ndarray:
    """The feature columns of a batch as one float32 (rows, features) array; bad cells named by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.empty((batch.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = batch.column(name)
        try:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = None
        if values is None or not np.isfinite(values).all():
            for i, cell in enumerate(column.to_pylist()):
                try:
                    ok = cell is not None and math.isfinite(float(cell))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise ValueError(f"{src}: row {first_row + i} (data row, 1-based), column {name!r}: expected "
                                     f"a finite number, got {cell!r}")
        out[:, j] = values
    return out


def _writer(dst: Path, tmp: str, schema):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if _kind(dst, "output") == "parquet":
        return pq.ParquetWriter(tmp, schema)
    return pacsv.CSVWriter(tmp, schema, write_options=pacsv.WriteOptions(
        delimiter=CSV_SUFFIXES[dst.suffix.lower()], quoting_style="needed"))


def score_stream(predictor: Predictor, src: Path, dst: Path, chunk_rows: int = 65536,
                 progress: bool = False) -> int:
    """Score ``src`` into ``dst`` chunk by chunk (peak memory ~ one chunk); returns the rows scored."""
    import pyarrow as pa

    _kind(dst, "output")
    if not dst.parent.exists():
        raise FileNotFoundError(f"the output directory {dst.parent} does not exist")
    columns, batches, total_rows = _batches(src, chunk_rows)
    missing = [f for f in predictor.feature_names if f not in columns]
    if missing:
        raise ValueError(f"{src}: missing feature column(s) {', '.join(map(repr, missing))}; "
                         f"the model expects {predictor.feature_names}, the file has {columns}")
    pred_names = [f"{t}_pred" for t in predictor.target_names]
    clash = [p for p in pred_names if p in columns]
    if clash:
        raise ValueError(f"{src} already has the column(s) {clash} that the predictions would be written to")
    bar = _progress(total_rows) if progress else None
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    writer, done = None, 0
    try:
        for batch in _rechunk(batches, chunk_rows):
            pred = predictor.predict(_features(batch, predictor.feature_names, done + 1, src))
            table = pa.Table.from_batches([batch]).select(columns)
            for k, name in enumerate(pred_names):
                table = table.append_column(name, pa.array(pred[:, k], type=pa.float32()))
            if writer is None:
                writer = _writer(dst, tmp, table.schema)
            writer.write_table(table)
            done += batch.num_rows
            if bar is not None:
                bar.update(batch.num_rows)
        if writer is None:  # no data rows: still write the header / schema
            schema = pa.schema([(c, pa.string()) for c in columns] + [(p, pa.float32()) for p in pred_names])
            writer = _writer(dst, tmp, schema)
        writer.close()
        writer = None
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, dst)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return done


def _progress(total: int | None):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="row", unit_scale=True, desc="scoring", file=sys.stderr, mininterval=0.5)
