"""Verify a bundle: run the training rows (when the data is still available unchanged) and random batches
of 1, 2, 7, 1001, 4096 and 40000 rows through the torch module (from the checkpoint; for a module
torchport did not define, its ExportedProgram), and every format the bundle holds: TorchScript, the
ExportedProgram (model.pt2), the AOTInductor packages (model.aoti.pt2, and model.aoti.cuda.pt2 where a
GPU is usable) and ONNX Runtime (the Predictor, and in a two-graph bundle model.onnx and
model.large_batch.onnx each on its own); compare each with the same module run in float64 and record the
results in the manifest (and in report/index.html, which is rewritten with them). A file this machine
cannot run (TorchScript the installed torch cannot load, a package compiled for a CPU, GPU or torch it does
not have) is left out with a note. Exit status 1 when a copy is further from the float64 answers than
float32 rounding accounts for (or than --atol/--rtol).

example:
  torchport verify bundles/seed
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.export.cli_options import add_tolerance_options, notes_lines, tolerance
from torchport.export.html_report import REPORT_HTML, add_html_report
from torchport.export.parity import format_report
from torchport.export.verify import verify_bundle
from torchport.runtime.bundle import MANIFEST, Bundle
from torchport.runtime.files import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory")
    add_tolerance_options(p)
    p.add_argument("--no-record", action="store_true",
                   help="do not write the results into manifest.json and report/index.html")


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    report = verify_bundle(bundle, tolerance=tolerance(args))
    print("\n".join([format_report(report), *notes_lines(report)]))
    print(f"training rows: {report.training_rows}")
    if not args.no_record:
        manifest = bundle.manifest.with_parity(report)
        if bundle.has(REPORT_HTML):
            manifest = add_html_report(Bundle(bundle.path, manifest))
        write_json(args.bundle / MANIFEST, manifest.to_json())
    if not report.passed:
        print(f"torchport verify: {args.bundle}: parity FAILED", file=sys.stderr)
        return 1
    return 0
