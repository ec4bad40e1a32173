"""Write a bundle's report somewhere else: DIR/index.html, the same self-contained page as the bundle's own
report/index.html (it loads nothing: open it from disk, send it, print it), with the benchmark tables of a
`torchport bench` run when --bench names its bench.json. The bundle is only read, each file it shows
checked against its sha256; it is never changed.

examples:
  torchport report bundles/seed --out reports/seed
  torchport bench bundles/seed --out bench-results
  torchport report bundles/seed --out reports/seed --bench bench-results/bench.json --force
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from torchport.benchmarks.records import BenchReport, ModelEntry
from torchport.benchmarks.report import COLUMNS, RATIO_NOTE, SUMMARY_NOTE, TEXT_COLUMNS, cells, header, skipped_lines, \
    summary_cells
from torchport.export.html_report import render_report
from torchport.export.report_view import Table
from torchport.runtime.bundle import Bundle
from torchport.runtime.errors import DataError, Fix, InputError
from torchport.runtime.files import write_text
PAGE = "index.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help=f"directory to write {PAGE} into (created if missing; not inside the bundle)")
    p.add_argument("--bench", type=Path, metavar="FILE",
                   help="bench.json of a `torchport bench` run that measured this bundle: its tables are added")
    p.add_argument("--force", action="store_true", help=f"replace an existing DIR/{PAGE}")


def read_bench(path: Path) -> BenchReport:
    """bench.json, validated; a file that is not strict JSON or not a bench report is a DataError."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a JSON file ({e}); give the bench.json `torchport bench` wrote") from None
    return BenchReport.from_json(obj, str(path))


def bench_model(report: BenchReport, bundle: Bundle, where: Path) -> ModelEntry:
    """The model of ``report`` that is ``bundle``: the same directory, or else the one model of the same name,
    features and targets."""
    for m in report.models:
        if Path(m.bundle).resolve() == bundle.path.resolve():
            return m
    same = [m for m in report.models if m.name == bundle.path.name and m.features == bundle.manifest.features
            and m.targets == bundle.manifest.targets]
    if len(same) == 1:
        return same[0]
    measured = "; ".join(m.describe() for m in report.models) or "no models"
    raise InputError(f"{where} has no results for {bundle.path} (it measured {measured})", parameter="bench")


def bench_tables(report: BenchReport, m: ModelEntry) -> tuple[list[Table], list[str]]:
    """The summary (rows/s per backend and batch size) and every figure of one model, and the notes above
    them (the machine, the command, what was not run)."""
    sizes = tuple(f"{n:,}" for n in report.settings.batch_sizes)
    summary = Table(f"rows/s of {m.describe()}", ("backend", "device", *sizes),
                    tuple(tuple(row) for row in summary_cells(report, m)), (f"in brackets: {SUMMARY_NOTE}",),
                    ("text", "text", *("num",) * len(sizes)))
    every = Table("every figure", COLUMNS, tuple(tuple(cells(r)) for r in report.rows(m.name)), (RATIO_NOTE,),
                  tuple("text" if i in TEXT_COLUMNS else "num" for i in range(len(COLUMNS))))
    alone = replace(report, models=(m,), results=tuple(report.rows(m.name)))
    notes = [f"run {report.created}: {report.command}", *header(report), *skipped_lines(alone)]
    if report.settings.quick:
        notes.append("a --quick run: it checks the setup, its figures are not measurements to rely on")
    return [summary, every], notes


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    out = args.out
    if out.resolve() == bundle.path.resolve() or bundle.path.resolve() in out.resolve().parents:
        raise InputError(f"{out} is inside the bundle {bundle.path}, and a report never changes a bundle: "
                         "give a directory outside it", parameter="out")
    target = out / PAGE
    if target.exists() and not args.force:
        raise InputError(f"{target} exists", parameter="out", fixes=(Fix({"force": True}, "to replace it"),))
    tables, notes = [], []
    if args.bench:
        report = read_bench(args.bench)
        tables, notes = bench_tables(report, bench_model(report, bundle, args.bench))
    page = render_report(bundle, tables, "benchmark", notes)
    out.mkdir(parents=True, exist_ok=True)
    write_text(target, page)
    print(f"wrote {target}" + (f" (with the benchmark of {args.bench})" if args.bench else ""))
    return 0
