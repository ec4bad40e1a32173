"""Measure how a bundle runs fastest on this machine: every regime that can run each batch size (each graph
file of the bundle; one thread or all of them; pooled bound buffers or zero-copy; whole or in cache-sized
chunks shared by the threads; OpenVINO with each performance hint where the openvino extra is installed),
interleaved, from 1 row to --max-rows. Prints what it measured and the plan
it chose (the regime for each range of batch sizes); --out saves the plan as JSON, which
`Predictor(bundle, plan=PATH)` and `torchport predict --plan PATH` take on this machine (a plan measured
elsewhere, or for other graph files, is refused). Without a plan the Predictor follows rules from the
model's shape; `Predictor(bundle, plan="measure")` measures one when it is made. Run it when the machine is
as loaded as it will be in use.

examples:
  torchport tune bundles/mlr-mlp
  torchport tune bundles/mlr-mlp --out bundles/mlr-mlp.plan.json --max-rows 1048576
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torchport.runtime.errors import InputError
from torchport.runtime.options import positive_float, positive_int
from torchport.runtime.predictor import Predictor


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (or an .onnx file written by torchport)")
    p.add_argument("--out", "-o", type=Path, help="write the plan here (JSON; replaced atomically)")
    p.add_argument("--max-rows", type=positive_int, default=65536,
                   help="largest batch measured; larger ones run in its regime (default: 65536)")
    p.add_argument("--seconds", type=positive_float, default=2.0,
                   help="about how long to measure (default: 2; more when one call takes longer)")
    p.add_argument("--threads", type=positive_int, help="intra-op threads of the Predictor (default: every usable CPU)")
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                   help="bf16: let the plan run an MLP's larger batches in bf16 through OpenVINO (the openvino extra), "
                        "its error on the golden cases measured against float64 and recorded in the plan, which "
                        "Predictor(bundle, plan=PATH, precision='bf16') and `torchport predict --plan PATH` take (default: f32)")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.is_dir():
        raise InputError(f"{args.out} is a directory; give the plan's file name", parameter="out")
    if args.out is not None and not args.out.parent.is_dir():  # found now, not after measuring
        raise InputError(f"{args.out.parent} does not exist; make it or write the plan elsewhere", parameter="out")
    predictor = Predictor(args.bundle, providers="cpu", intra_op_threads=args.threads, precision=args.precision)
    plan = predictor.tune(max_rows=args.max_rows, seconds=args.seconds)
    print(f"measured on {plan.machine} in {plan.measured_s:.1f} s: median time per call (NaN/inf check included)")
    rows = sorted({t.rows for t in plan.timings})
    for n in rows:
        cells = sorted((t for t in plan.timings if t.rows == n), key=lambda t: (t.again, t.median_s))
        chosen = plan.regime(n)
        print(f"  {n:>9,} rows:")
        for t in cells:
            mark = "*" if t.regime == chosen and not t.again else " "
            again = "  (again: the fastest against the regime it would replace)" if t.again else ""
            print(f"    {mark} {t.median_s * 1e6:>12,.1f} us  {t.regime.describe()}{again}")
    print("plan (* above: the regime chosen at that size):")
    for line in plan.describe():
        print(f"  {line}")
    if args.out is not None:
        plan.save(args.out)
        print(f"wrote {args.out}")
    return 0
