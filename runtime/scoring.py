"""Scoring a file with a Predictor: read a chunk, predict, append, repeat, so that memory holds about one
chunk. The output is the input's columns plus one ``<target>_pred`` column per target (with an interval
level, then ``<target>_lower`` and ``<target>_upper`` per target and ``out_of_domain``, 1 or 0), and appears
only once it is complete: a failure leaves neither it nor a temp file behind."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from torchport.runtime import tables
from torchport.runtime.errors import InputError
from torchport.runtime.files import atomic_write
from torchport.runtime.predictor import Predictor


UNSEEN_COLUMN = "unseen_level"  # 1 where an unseen level was scored as the reference level (unseen="reference")


def score_file(predictor: Predictor, src: str | os.PathLike, dst: str | os.PathLike, chunk_rows: int = 65536,
               progress: bool = False, delimiter: str | None = None, interval: float | None = None) -> int:
    """Score ``src`` (CSV, TSV or Parquet, by suffix) into ``dst`` in chunks of ``chunk_rows`` rows; returns
    the number of rows scored. Uses pyarrow when it is installed, else Python's csv module (CSV/TSV only);
    ``progress`` shows a tqdm bar on stderr when tqdm is installed. ``delimiter`` (comma, semicolon or tab)
    is read from the input's header unless given; the output uses its own suffix's. ``interval``: a level
    (0.9) adds each row's prediction interval and domain flag (``Predictor.predict_interval``). A bundle with
    categorical or imputed columns reads their cells as text (Parquet: as stored); with the Predictor's
    ``unseen="reference"`` an ``unseen_level`` column (1 or 0) follows the predictions."""
    return _score(predictor, src, dst, chunk_rows, progress, tables.backend(), delimiter, interval)


def _score(predictor: Predictor, src: str | os.PathLike, dst: str | os.PathLike, chunk_rows: int = 65536,
           progress: bool = False, backend: tables.Backend | str | None = None,
           delimiter: str | None = None, interval: float | None = None) -> int:
    """score_file with the table backend chosen by the caller (an instance, its name, or None for the default)."""
    if not isinstance(backend, tables.Backend):
        backend = tables.backend(backend)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InputError(f"chunk_rows must be a whole number >= 1; got {chunk_rows!r}", parameter="chunk_rows")
    src, dst = Path(src), Path(dst)
    src_format, dst_format = tables.table_format(src, "src", delimiter), tables.table_format(dst, "dst")
    backend.require(src_format, "src")
    backend.require(dst_format, "dst")
    if not src.is_file():
        raise InputError(f"{src} " + ("is not a file" if src.exists() else "does not exist"), parameter="src")
    if not dst.parent.is_dir():
        raise InputError(f"the output directory {dst.parent} does not exist", parameter="dst")
    if dst.exists() and dst.samefile(src):
        raise InputError(f"dst must differ from src (both are {src})", parameter="dst")
    predictions = [f"{t}_pred" for t in predictor.target_names]
    answer = predictor.predict
    if interval is not None:
        predictor.predict_interval(np.empty((0, predictor.n_features)), interval)  # refuses before any reading
        targets = predictor.target_names
        predictions += [f"{t}_lower" for t in targets] + [f"{t}_upper" for t in targets] + ["out_of_domain"]

        def answer(x):
            r = predictor.predict_interval(x, interval)
            return np.column_stack([r.prediction, r.lower, r.upper, r.out_of_domain]).astype(np.float32)
    flag = predictor.encoding is not None and predictor.unseen == "reference"
    if flag:
        predictions.append(UNSEEN_COLUMN)
    done = 0
    with backend.reader(src_format, chunk_rows) as reader:
        tables.check_columns(src, reader.columns, predictor.feature_names, predictions)
        bar = _progress(reader.total_rows) if progress else None

        def write(tmp: Path) -> None:
            nonlocal done
            with backend.writer(tmp, dst_format, reader, predictions, predictor.dtype) as writer:
                for chunk in reader.chunks():
                    if predictor.encoding is None:
                        x = reader.features(chunk, predictor.feature_names, done + 1, predictor.dtype)
                        writer.write(chunk, answer(x))
                    else:
                        x, unseen = predictor.encoding.codes(
                            [reader.cells(chunk, name) for name in predictor.feature_names], unseen=predictor.unseen,
                            first_row=done + 1, rows_are="data row, 1-based", dtype=predictor.dtype)
                        y = answer(x)
                        writer.write(chunk, np.column_stack([y, unseen.astype(y.dtype)]) if flag else y)
                    done += len(x)
                    if bar is not None:
                        bar.update(len(x))
        try:
            atomic_write(dst, write)
        finally:
            if bar is not None:
                bar.close()
    return done


def _progress(total: int | None):
    """A tqdm bar on stderr, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="row", unit_scale=True, desc="scoring", file=sys.stderr, mininterval=0.5)
