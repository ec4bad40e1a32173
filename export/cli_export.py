"""Re-export a bundle from its checkpoint: new ONNX and TorchScript files (for example at another opset),
re-verified, written atomically to --out (or in place with --force). With --triton REPO, instead add the
bundle to a Triton Inference Server model repository: REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx
(onnxruntime backend, dynamic batching), and with --libtorch also REPO/<name>_libtorch (TorchScript).

examples:
  torchport export bundles/seed --out bundles/seed-opset20 --opset 20
  torchport export bundles/seed --force
  torchport export bundles/seed --triton model_repository --max-batch-size 4096 --libtorch
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.export.bundle_writer import DEFAULT_OPSET, load_module, write_bundle
from torchport.export.formats import NO_LARGE_BATCH_GRAPH_HELP, large_batch_line
from torchport.runtime.cli import positive_float, positive_int
from torchport.export.report import report_copier
from torchport.export.triton import write_triton_repository
from torchport.export.verify import format_report, training_rows
from torchport.runtime.bundle import load_manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory written by `torchport train`")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write the new bundle (default: in place)")
    p.add_argument("--force", action="store_true", help="replace the bundle at --out (or in place)")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset to export (default: {DEFAULT_OPSET})")
    p.add_argument("--no-large-batch-graph", action="store_true", help=NO_LARGE_BATCH_GRAPH_HELP)
    p.add_argument("--atol", type=positive_float, default=1e-5, help="parity tolerance, absolute (default: 1e-5)")
    p.add_argument("--rtol", type=positive_float, default=1e-4, help="parity tolerance, relative (default: 1e-4)")
    p.add_argument("--triton", type=Path, metavar="REPO", help="write a Triton model repository entry instead")
    p.add_argument("--name", help="Triton model name (default: the bundle directory's name)")
    p.add_argument("--max-batch-size", type=positive_int, default=4096, help="Triton max_batch_size (default: 4096)")
    p.add_argument("--max-queue-delay-us", type=positive_int, default=100,
                   help="Triton dynamic batching max queue delay in microseconds (default: 100)")
    p.add_argument("--libtorch", action="store_true", help="with --triton: also the TorchScript model (libtorch backend)")


def run(args: argparse.Namespace) -> int:
    if args.triton is not None:
        for path in write_triton_repository(args.bundle, args.triton, name=args.name,
                                            max_batch_size=args.max_batch_size,
                                            max_queue_delay_us=args.max_queue_delay_us,
                                            libtorch=args.libtorch, force=args.force):
            print(f"wrote {path}/config.pbtxt and {path}/1/")
        return 0
    manifest = load_manifest(args.bundle)
    module = load_module(args.bundle)
    out = args.out or args.bundle
    X, _ = training_rows(manifest)
    new = write_bundle(module, manifest["model"], manifest["features"], manifest["targets"], out,
                       training=manifest.get("training"), opset=args.opset, force=args.force,
                       verify_inputs=X, atol=args.atol, rtol=args.rtol, large_batch_graph=not args.no_large_batch_graph,
                       report=report_copier(args.bundle, manifest))
    print(format_report(new["parity"]))
    print(f"bundle: {out}/ (opset {new['export']['opset']})")
    print(large_batch_line(new, not args.no_large_batch_graph))
    if not new["parity"]["passed"]:
        print("torchport export: parity FAILED (see above)", file=sys.stderr)
        return 1
    return 0
