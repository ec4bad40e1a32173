"""Verify a bundle: run the training rows (when the data is still available unchanged) and random batches
of 1, 2, 7, 1001, 4096 and 40000 rows through the torch module (from the checkpoint; for a module
torchport did not define, its ExportedProgram), and every format the bundle holds: TorchScript, the
ExportedProgram (model.pt2), the AOTInductor packages (model.aoti.pt2, and model.aoti.cuda.pt2 where a
GPU is usable) and ONNX Runtime (the Predictor, and in a bundle with rewritten graphs model.onnx,
model.large_batch.onnx and model.threaded.onnx each on its own); compare each with the same module run in float64 and record the
results in the manifest (and in report/index.html, which is rewritten with them). A file this machine
cannot run (TorchScript the installed torch cannot load, a package compiled for a CPU, GPU or torch it does
not have) is left out with a note. Exit status 1 when a copy is further from the float64 answers than
float32 rounding accounts for (or than --atol/--rtol).

The results are recorded by publishing a copy of the bundle with the new manifest and report in one atomic
step (the files themselves are linked, not copied). A signed bundle (manifest.sig, from `torchport sign`) is
only read, so that its signature stays valid: give --key with the signing key to record the results and
sign the new manifest. Leftovers of killed runs beside the bundle are removed first.

examples:
  torchport verify bundles/seed
  torchport verify bundles/seed --key keys/release.pem      # a signed bundle: record and sign again
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.export.cli_options import add_tolerance_options, notes_lines, tolerance
from torchport.export.html_report import REPORT_HTML, add_html_report
from torchport.export.parity import format_report
from torchport.export.verify import verify_bundle
from torchport.runtime.bundle import MANIFEST, SIGNATURE_FILE, Bundle, ParityReport
from torchport.runtime.errors import InputError
from torchport.runtime.files import link_tree, remove_leftovers, staged_dir, write_json
from torchport.runtime.locks import OutputLock


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory")
    add_tolerance_options(p)
    p.add_argument("--no-record", action="store_true",
                   help="do not write the results into manifest.json and report/index.html")
    p.add_argument("--key", type=Path, help="the ed25519 private key (PEM) that signed the bundle: record the "
                                            "results and sign the new manifest (a signed bundle is otherwise "
                                            "only read, so that its signature stays valid)")


def run(args: argparse.Namespace) -> int:
    if args.key is not None and args.no_record:
        raise InputError("--key signs the recorded results and --no-record records nothing: give one of them",
                         parameter="key")
    for done in remove_leftovers(args.bundle):
        print(f"torchport verify: note: {done}", file=sys.stderr)
    bundle = Bundle.open(args.bundle)
    key = None
    if args.key is not None:  # a bad key is said before the work
        from torchport.runtime.signing import load_private_key
        key = load_private_key(args.key)
    report = verify_bundle(bundle, tolerance=tolerance(args))
    print("\n".join([format_report(report), *notes_lines(report)]))
    print(f"training rows: {report.training_rows}")
    signed = (args.bundle / SIGNATURE_FILE).is_file()
    if args.no_record:
        pass
    elif signed and key is None:
        print(f"torchport verify: note: {args.bundle} is signed, so nothing was written into it (its signature "
              f"stays valid); to record these results, run `torchport verify {args.bundle} --key KEY` with the "
              "signing key: it records them and signs the new manifest", file=sys.stderr)
    else:
        key_id = record(bundle, report, key)
        if key_id:
            print(f"torchport verify: recorded the results and signed the new manifest with key {key_id}",
                  file=sys.stderr)
    if not report.passed:
        print(f"torchport verify: {args.bundle}: parity FAILED", file=sys.stderr)
        return 1
    return 0


def record(bundle: Bundle, report: ParityReport, key=None) -> str | None:
    """Publish the bundle again with ``report`` in its manifest and report page, in one atomic step, signed
    with ``key`` if given (any older signature is dropped: it covered the old manifest); returns the key's id.
    The bundle must not have changed since it was opened."""
    with OutputLock(bundle.path, "torchport verify"):
        if bundle.manifest_bytes and (bundle.path / MANIFEST).read_bytes() != bundle.manifest_bytes:
            raise InputError(f"{bundle.path / MANIFEST} changed while it was being verified; nothing was "
                             "recorded: run `torchport verify` again")
        with staged_dir(bundle.path, replace=True) as stage:
            link_tree(bundle.path, stage)
            (stage / SIGNATURE_FILE).unlink(missing_ok=True)
            manifest = bundle.manifest.with_parity(report)
            if bundle.has(REPORT_HTML):
                manifest = add_html_report(Bundle(stage, manifest))
            write_json(stage / MANIFEST, manifest.to_json())
            if key is None:
                return None
            from torchport.runtime.signing import sign_bundle
            return sign_bundle(stage, key).key_id
