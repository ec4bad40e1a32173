"""Re-export a bundle from its checkpoint (or, for a module torchport did not define, from its
ExportedProgram, model.pt2): every model format again (for example at another opset, or with
--formats ...,aoti to add an AOTInductor package), re-verified, written atomically to --out (or in place
with --force). Without --formats the new bundle holds the formats the old one held. With --triton REPO, instead add the
bundle to a Triton Inference Server model repository: REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx
(onnxruntime backend, dynamic batching; the version directory also holds the bundle's manifest, so that
`torchport serve REPO` can check it), and with --libtorch also REPO/<name>_libtorch (TorchScript). With
--model-version N it adds version N to a model already there (keeping its config.pbtxt unless --force).
A bundle that failed its parity check (published with --publish-failed) is refused there unless
--allow-failed-parity is given. A re-export that fails parity is not published (exit 1): its files stay
beside --out as <out>.parity-failed, unless --publish-failed.

examples:
  torchport export bundles/seed --out bundles/seed-opset20 --opset 20
  torchport export bundles/seed --out bundles/seed-aoti --formats onnx,exported,aoti --aoti-cpu x86-64-v3
  torchport export bundles/seed --force
  torchport export bundles/seed --triton model_repository --max-batch-size 4096 --libtorch
  torchport export bundles/seed-v2 --triton model_repository --name seed --model-version 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.export.bundle_writer import ParityFailed, report_copier, write_bundle
from torchport.export.cli_options import add_export_options, add_formats_options, formats_lines, graph_lines, \
    notes_lines, tolerance
from torchport.export.exported import load_program
from torchport.export.formats import load_module, model_spec
from torchport.export.module_spec import ModuleSpec
from torchport.export.parity import format_report
from torchport.export.triton import write_triton_repository
from torchport.export.verify import training_record, training_rows
from torchport.runtime.bundle import EXPORTED_FILE, FORMAT_FILES, SIGNATURE_FILE, Bundle
from torchport.runtime.files import remove_leftovers
from torchport.runtime.options import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory written by `torchport train`")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write the new bundle (default: in place)")
    p.add_argument("--force", action="store_true", help="replace the bundle at --out (or in place)")
    add_export_options(p)
    add_formats_options(p, "the formats the bundle holds")
    p.add_argument("--triton", type=Path, metavar="REPO", help="write a Triton model repository entry instead")
    p.add_argument("--name", help="Triton model name (default: the bundle directory's name)")
    p.add_argument("--max-batch-size", type=positive_int, default=4096, help="Triton max_batch_size (default: 4096)")
    p.add_argument("--max-queue-delay-us", type=positive_int, default=100,
                   help="Triton dynamic batching max queue delay in microseconds (default: 100)")
    p.add_argument("--libtorch", action="store_true", help="with --triton: also the TorchScript model (libtorch backend)")
    p.add_argument("--allow-failed-parity", action="store_true",
                   help="with --triton: take a bundle whose parity check failed (published with --publish-failed)")
    p.add_argument("--model-version", type=positive_int, default=1, metavar="N",
                   help="with --triton: the version directory to write, REPO/<name>/N/ (default: 1)")


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    if args.triton is not None:
        for path in write_triton_repository(bundle, args.triton, name=args.name,
                                            max_batch_size=args.max_batch_size,
                                            max_queue_delay_us=args.max_queue_delay_us,
                                            libtorch=args.libtorch, force=args.force,
                                            allow_failed_parity=args.allow_failed_parity,
                                            version=args.model_version):
            print(f"wrote {path}/config.pbtxt and {path}/{args.model_version}/")
        return 0
    m = bundle.manifest
    out = args.out or args.bundle
    for done in remove_leftovers(out):
        print(f"torchport export: note: {done}", file=sys.stderr)
    signed = [p for p in dict.fromkeys((args.bundle, out)) if (p / SIGNATURE_FILE).is_file()]
    record = training_record(m)
    X, _ = training_rows(record, m.encoding)
    formats = args.formats or held_formats(bundle)
    spec = model_spec(bundle)
    source = load_program(bundle.read(EXPORTED_FILE), str(bundle.path / EXPORTED_FILE)) \
        if isinstance(spec, ModuleSpec) else load_module(bundle)
    try:
        new = write_bundle(source, spec, list(m.features), list(m.targets), out,
                           training=record, opset=args.opset, force=args.force, verify_inputs=X,
                           tolerance=tolerance(args), large_batch_graph=not args.no_large_batch_graph,
                           report=report_copier(bundle), formats=formats, aoti_cpu=args.aoti_cpu,
                           publish_failed=args.publish_failed, precision=m.precision, intervals=m.intervals,
                           encoding=m.encoding)
    except ParityFailed as e:
        print("\n".join([format_report(e.report), *notes_lines(e.report)]))
        raise
    print("\n".join([format_report(new.parity), *notes_lines(new.parity)]))
    print(f"bundle: {out}/ (opset {new.export.opset})")
    print("\n".join(graph_lines(new, not args.no_large_batch_graph)))
    print("\n".join(formats_lines(new)))
    if signed:  # a signature covers one manifest's bytes: the new bundle has a new manifest
        print(f"torchport export: note: {signed[0]} was signed; the bundle written at {out} is not (its manifest "
              f"is new): sign it with `torchport sign {out} --key KEY`", file=sys.stderr)
    if not new.parity.passed:
        print(f"torchport export: parity FAILED (see above); published at {out} marked failed, as "
              "--publish-failed asked", file=sys.stderr)
        return 1
    return 0


def held_formats(bundle: Bundle) -> tuple[str, ...]:
    """The model formats a bundle holds (from its files: bundles from before formats were recorded too)."""
    return tuple(f for f, name in FORMAT_FILES.items() if bundle.has(name)) or ("onnx",)
