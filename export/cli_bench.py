"""Benchmark every way to run a bundle: the numpy floors (a copy of the input; X @ W.T + b for linear
models), torch eager, TorchScript, ONNX Runtime through a plain InferenceSession.run, and the torchport
Predictor, on the CPU and, where torch or ONNX Runtime can use one, on CUDA. Each (bundle, batch size)
cell warms every backend up, then runs interleaved rounds (the order rotates each round) of individually
timed calls; it reports the median and p99 per call, rows/s, and ratios to the fastest backend and to
plain ONNX Runtime. Prints a table and writes bench.json (with the environment), bench.md and bench.png.

examples:
  torchport bench bundles/seed --quick
  torchport bench bundles/seed bundles/mlr --out benchmarks/results/mine
  torchport bench bundles/mlr --batch-sizes 1,64,4096 --threads 1 --devices cpu
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from torchport.export.bench import DEFAULT_BATCH_SIZES, QUICK, Plan, physical_cores, run_benchmark
from torchport.export.bench_backends import cuda_status
from torchport.export.bench_report import disagreements, fmt_rate, fmt_seconds, format_table, write_outputs
from torchport.runtime.bundle import load_manifest
from torchport.runtime.cli import positive_float, positive_int

SUFFIXES = {"k": 1 << 10, "m": 1 << 20}


def batch_sizes(text: str) -> list[int]:
    """Comma-separated batch sizes; k and M mean 1024 and 1048576 (so 1M = 2**20 rows)."""
    out = []
    for item in (t.strip().lower() for t in text.split(",") if t.strip()):
        scale = SUFFIXES.get(item[-1], 1)
        digits = item[:-1] if item[-1] in SUFFIXES else item
        if not digits.isdigit() or int(digits) < 1:
            raise argparse.ArgumentTypeError(f"expected batch sizes >= 1 separated by commas (e.g. 1,64,4k,1M), "
                                             f"got {text!r}")
        out.append(int(digits) * scale)
    if not out:
        raise argparse.ArgumentTypeError("expected one or more batch sizes, e.g. 1,64,4096")
    return sorted(set(out))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE", help="bundle directories to benchmark")
    p.add_argument("--quick", action="store_true",
                   help="a short run (about 0.15 s per cell; under a minute): checks the setup, not for figures")
    p.add_argument("--batch-sizes", type=batch_sizes, metavar="N,N,...",
                   help="rows per call (default: 1,8,64,512,4096,65536,1M; k = 1024, M = 1048576)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help="where to write bench.json, bench.md and bench.png (default: bench-results)")
    p.add_argument("--threads", type=positive_int,
                   help="threads for torch, numpy's BLAS, ONNX Runtime and the Predictor (default: the "
                        "physical cores, ONNX Runtime's default; the Predictor then keeps its own options)")
    p.add_argument("--devices", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the CPU, plus CUDA where torch or ONNX Runtime can use a GPU; cuda: both, and "
                        "an error without a GPU (default: auto)")
    p.add_argument("--seconds-per-cell", type=positive_float, metavar="S",
                   help=f"measuring time per (bundle, batch size) after warm-up (default: {Plan().seconds_per_cell:g}, "
                        f"{QUICK.seconds_per_cell:g} with --quick)")


def _devices(choice: str) -> list[str]:
    status = cuda_status()
    usable = status["torch"] or status["onnxruntime"]
    if choice == "cuda" and not usable:
        raise ValueError(f"--devices cuda, but no GPU is usable here ({status['torch_reason']}; "
                         f"{status['onnxruntime_reason']}); use --devices auto or cpu")
    return ["cpu", "cuda"] if choice == "cuda" or (choice == "auto" and usable) else ["cpu"]


def _progress(cell: list[dict]) -> None:
    best = min((r for r in cell if r["agrees_with_torch"] is not None), key=lambda r: r["median_s"])
    print(f"  {cell[0]['model']}, batch {cell[0]['batch_size']}: fastest {best['label']} ({best['device']}) "
          f"{fmt_seconds(best['median_s'])}/call, {fmt_rate(best['rows_per_s'])} rows/s", file=sys.stderr)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    words = ["torchport", "bench", *map(str, args.bundles), "--out", str(args.out)]
    words += ["--quick"] * args.quick + ["--devices", args.devices]
    if args.batch_sizes:
        words += ["--batch-sizes", ",".join(map(str, args.batch_sizes))]
    for flag, value in (("--threads", args.threads), ("--seconds-per-cell", args.seconds_per_cell)):
        words += [flag, str(value)] if value is not None else []
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    for bundle in args.bundles:
        load_manifest(bundle)
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"--out {args.out} exists and is not a directory")
    base = QUICK if args.quick else Plan()
    plan = Plan(args.seconds_per_cell or base.seconds_per_cell, base.warmup_s, base.min_rounds, base.target_rounds)
    sizes = args.batch_sizes or list(DEFAULT_BATCH_SIZES)
    threads = args.threads or physical_cores()
    devices = _devices(args.devices)
    print(f"torchport bench: {len(args.bundles)} bundle(s) x {len(sizes)} batch sizes, "
          f"{plan.seconds_per_cell:g} s per cell, {threads} threads", file=sys.stderr)
    report = run_benchmark(args.bundles, sizes, devices, threads,
                           pin_predictor=args.threads is not None, plan=plan, progress=_progress)
    report["command"] = _command(args)
    report["settings"]["quick"] = args.quick
    print(format_table(report))
    paths = write_outputs(report, args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if disagreements(report):
        print("torchport bench: some backends answered differently from torch eager (see above)", file=sys.stderr)
        return 1
    return 0
