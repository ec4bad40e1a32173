"""Score a CSV, TSV or Parquet file with a bundle through ONNX Runtime, in bounded-memory chunks.
Columns are matched to the model's features by name (extra columns are kept, order does not matter); the
output (CSV, TSV or Parquet, by its suffix) is the input's columns unchanged plus one `<target>_pred` column
per target (with --interval L, also `<target>_lower` and `<target>_upper`, the bounds of each row's
prediction interval at level L, and `out_of_domain`, 1 for a row outside the training domain; see
docs/intervals.md), and appears only once it is complete (temp files that killed runs left beside it are removed).
The input's delimiter (comma, semicolon or tab) is read from its header, as `torchport train` reads it,
unless --delimiter gives it; the output is comma-separated for .csv/.txt and tab-separated for .tsv/.tab.
Numbers use '.' as the decimal mark. An input that already has a `<target>_pred` column is refused. Parquet
needs pyarrow (the `io` extra), which also makes CSV faster; without it, CSV/TSV go through Python's csv
module with the same rules and the same output. A bundle trained on categorical columns takes their levels
as text (an unseen level is refused naming it, unless --unseen reference), and one trained with --impute
takes empty cells (and NA, NaN, null) in its features.

examples:
  torchport predict bundles/seed --input islands.csv --output scored.csv
  torchport predict bundles/seed -i islands.csv -o scored.csv --interval 0.9
  torchport predict bundles/seed -i big.parquet -o scored.parquet --chunk-rows 1000000
  torchport tune bundles/seed --out seed.plan.json
  torchport predict bundles/seed -i big.csv -o scored.csv --plan seed.plan.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.runtime.encoding import UNSEEN
from torchport.runtime.errors import Fix, InputError
from torchport.runtime.files import remove_leftovers
from torchport.runtime.options import delimiter, positive_int
from torchport.runtime.plan import Plan
from torchport.runtime.predictor import Predictor
from torchport.runtime.scoring import score_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (or an .onnx file written by torchport)")
    p.add_argument("--input", "-i", type=Path, required=True,
                   help="file with a header row: .csv/.txt (comma), .tsv/.tab (tab) or .parquet")
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="where to write the scored rows: .csv/.txt, .tsv/.tab or .parquet")
    p.add_argument("--providers", default="auto",
                   help="auto (CUDA then CPU), cpu, cuda, or ONNX Runtime provider names, comma-separated")
    p.add_argument("--delimiter", type=delimiter, metavar="comma|semicolon|tab",
                   help="the input's delimiter (default: read from its header)")
    p.add_argument("--chunk-rows", type=positive_int, default=65536, help="rows per chunk (default: 65536)")
    p.add_argument("--plan", type=Path, help="a plan written by `torchport tune --out` on this machine, run in "
                                            "its precision (default: the Predictor's rules)")
    p.add_argument("--interval", dest="level", type=float, metavar="L",
                   help="add each row's prediction interval at level L, in (0, 1), and its out_of_domain flag")
    p.add_argument("--unseen", choices=UNSEEN, default="refuse",
                   help="a categorical cell holding a level the model was not trained on: refuse (default: exit 2 "
                        "naming the row, column and value) or reference (score it as the reference level and "
                        "write 1 in an unseen_level column after the predictions)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if not args.input.is_file():
        raise InputError(f"input file {args.input} " + ("is not a file" if args.input.exists() else
                                                        "does not exist"), parameter="input")
    if args.output.exists() and not args.force:
        raise InputError(f"{args.output} exists", parameter="output", fixes=(Fix({"force": True}, "to replace it"),))
    if args.output.resolve() == args.input.resolve():
        raise InputError("--output must differ from --input", parameter="output")
    plan = Plan.load(args.plan) if args.plan else None  # run in its precision: a bf16 plan as it was measured
    predictor = Predictor(args.bundle, providers=args.providers, plan=plan, unseen=args.unseen,
                          precision=plan.precision if plan else "f32")
    for done in remove_leftovers(args.output):
        print(f"torchport predict: note: {done}", file=sys.stderr)
    n = score_file(predictor, args.input, args.output, args.chunk_rows,
                   progress=not args.no_progress and sys.stderr.isatty(), delimiter=args.delimiter,
                   interval=args.level)
    print(f"scored {n} rows with {', '.join(predictor.providers)} -> {args.output}", file=sys.stderr)
    return 0
