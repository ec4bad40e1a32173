"""Score a CSV, TSV or Parquet file with a bundle through ONNX Runtime, in bounded-memory chunks.
Columns are matched to the model's features by name (extra columns are kept, order does not matter); the
output (CSV, TSV or Parquet, by its suffix) is the input with one `<target>_pred` column per target,
written to a temp file and renamed into place. Streaming and Parquet use pyarrow (the `io` extra); without
it, CSV/TSV still work through Python's csv module.

examples:
  torchport predict bundles/seed --input islands.csv --output scored.csv
  torchport predict bundles/seed -i big.parquet -o scored.parquet --chunk-rows 1000000
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from torchport.runtime.bundle import umask_mode
from torchport.runtime.cli import positive_int
from torchport.runtime.predictor import Predictor


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (or an .onnx file written by torchport)")
    p.add_argument("--input", "-i", type=Path, required=True, help="CSV (.csv) or TSV (.tsv) file with a header")
    p.add_argument("--output", "-o", type=Path, required=True, help="where to write the scored CSV/TSV")
    p.add_argument("--providers", default="auto",
                   help="auto (CUDA then CPU), cpu, cuda, or ONNX Runtime provider names, comma-separated")
    p.add_argument("--chunk-rows", type=positive_int, default=65536, help="rows per chunk (default: 65536)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _parse_chunk(rows: list[list[str]], columns: list[int], names: list[str], first_row: int,
                 source: Path) -> np.ndarray:
    out = np.empty((len(rows), len(columns)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(columns):
            try:
                value = float(row[c])
            except (ValueError, IndexError):
                got = repr(row[c]) if c < len(row) else "nothing (the row is too short)"
                raise ValueError(f"{source}: row {first_row + i} (data row, 1-based), column {names[j]!r}: "
                                 f"expected a finite number, got {got}") from None
            if not math.isfinite(value):
                raise ValueError(f"{source}: row {first_row + i}, column {names[j]!r}: {row[c]!r} is not "
                                 "a finite number")
            out[i, j] = value
    return out


def score_file(predictor: Predictor, src: Path, dst: Path, chunk_rows: int = 65536) -> int:
    """Score ``src`` into ``dst`` chunk by chunk; returns the number of rows scored."""
    if src.suffix.lower() not in (".csv", ".tsv", ".tab", ".txt"):
        raise ValueError(f"{src}: unsupported file type {src.suffix!r}; give a .csv or .tsv file")
    if dst.parent and not dst.parent.exists():
        raise FileNotFoundError(f"the output directory {dst.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    total = 0
    try:
        with open(src, newline="", encoding="utf-8") as fin, os.fdopen(fd, "w", newline="", encoding="utf-8") as fout:
            reader = csv.reader(fin, delimiter=_delimiter(src))
            header = next(reader, None)
            if not header:
                raise ValueError(f"{src} is empty; expected a header row naming the columns")
            missing = [f for f in predictor.feature_names if f not in header]
            if missing:
                raise ValueError(f"{src}: missing feature column(s) {', '.join(map(repr, missing))}; "
                                 f"the model expects {predictor.feature_names}, the file has {header}")
            columns = [header.index(f) for f in predictor.feature_names]
            writer = csv.writer(fout, delimiter=_delimiter(dst), lineterminator="\n")
            writer.writerow(header + [f"{t}_pred" for t in predictor.target_names])
            while True:
                rows = [r for _, r in zip(range(chunk_rows), reader)]
                if not rows:
                    break
                pred = predictor.predict(_parse_chunk(rows, columns, predictor.feature_names, total + 1, src))
                writer.writerows(r + [format(float(v), ".9g") for v in p] for r, p in zip(rows, pred))
                total += len(rows)
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return total


def run(args: argparse.Namespace) -> int:
    if not args.input.is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to replace it")
    if args.output.resolve() == args.input.resolve():
        raise ValueError("--output must differ from --input")
    predictor = Predictor(args.bundle, providers=args.providers)
    try:
        from torchport.runtime.streaming import score_stream
        import pyarrow  # noqa: F401
    except ImportError:
        if ".parquet" in (args.input.suffix.lower(), args.output.suffix.lower()):
            raise ValueError("Parquet needs pyarrow: pip install 'torchport[io]'") from None
        n = score_file(predictor, args.input, args.output, args.chunk_rows)
    else:
        n = score_stream(predictor, args.input, args.output, args.chunk_rows, progress=not args.no_progress and sys.stderr.isatty())
    print(f"scored {n} rows with {', '.join(predictor.providers)} -> {args.output}", file=sys.stderr)
    return 0
