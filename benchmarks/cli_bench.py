"""Benchmark every way to run a bundle: the numpy floors (a copy of the input; X @ W.T + b for linear
models), torch eager, TorchScript, ONNX Runtime through a plain InferenceSession.run, and the torchport
Predictor, on the CPU and, where torch or ONNX Runtime can use one, on CUDA. Each (bundle, batch size)
cell checks every backend's answers against torch eager, warms them up, then runs interleaved rounds (the
order rotates each round) of individually timed calls; it reports the median and p99 per call, rows/s, and
ratios to the fastest backend and to plain ONNX Runtime, all from the same run. Prints a table and writes
bench.json (with the machine and thread settings), bench.md and bench.png. Exits 1 when a backend answers
differently from torch eager (its figures are void). docs/benchmarks.md describes the method.

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

from torchport.benchmarks.machine import cuda_status
from torchport.benchmarks.measure import DEFAULT_BATCH_SIZES, QUICK, run_benchmark
from torchport.benchmarks.records import BenchSettings, Plan, ResultRow
from torchport.benchmarks.report import fmt_rate, fmt_seconds, format_table, write_outputs
from torchport.runtime.bundle import Bundle
from torchport.runtime.cpus import physical_cores
from torchport.runtime.errors import InputError
from torchport.runtime.options import positive_float, positive_int, sizes

DEFAULT_OUT = Path("bench-results")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE", help="bundle directories to benchmark")
    p.add_argument("--quick", action="store_true",
                   help=f"a short run ({QUICK.seconds_per_cell:g} s per cell): checks the setup, not for figures")
    p.add_argument("--batch-sizes", type=sizes, metavar="N,N,...",
                   help="rows per call (default: 1,8,64,512,4096,65536,1M; k = 1024, M = 1048576)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"where to write bench.json, bench.md and bench.png (default: {DEFAULT_OUT})")
    p.add_argument("--threads", type=positive_int,
                   help="threads for torch, numpy's BLAS, ONNX Runtime and the Predictor (default: the "
                        "physical cores, ONNX Runtime's default; the Predictor then keeps its own options)")
    p.add_argument("--devices", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the CPU, plus CUDA where torch or ONNX Runtime can use a GPU; cuda: both, and "
                        "an error without a GPU (default: auto)")
    p.add_argument("--seconds-per-cell", type=positive_float, metavar="S",
                   help=f"measuring time per (bundle, batch size) after warm-up (default: {Plan().seconds_per_cell:g}, "
                        f"{QUICK.seconds_per_cell:g} with --quick)")


def _devices(choice: str) -> tuple[str, ...]:
    status = cuda_status()
    if choice == "cuda" and not status.usable:
        raise InputError(f"--devices cuda, but no GPU is usable here ({status.torch_reason}; "
                         f"{status.onnxruntime_reason}); use --devices auto or cpu", parameter="devices")
    return ("cpu", "cuda") if choice == "cuda" or (choice == "auto" and status.usable) else ("cpu",)


def _progress(cell: list[ResultRow]) -> None:
    best = min((r for r in cell if r.agrees_with_torch is not None), key=lambda r: r.median_s)
    print(f"  {best.model}, batch {best.batch_size}: fastest {best.label} ({best.device}) "
          f"{fmt_seconds(best.median_s)}/call, {fmt_rate(best.rows_per_s)} rows/s", file=sys.stderr)


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
    bundles = [Bundle.open(b) for b in args.bundles]
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out} exists and is not a directory", parameter="out")
    base = QUICK if args.quick else Plan()
    plan = Plan(args.seconds_per_cell or base.seconds_per_cell, base.warmup_s, base.min_rounds, base.target_rounds)
    settings = BenchSettings(tuple(args.batch_sizes or DEFAULT_BATCH_SIZES), _devices(args.devices), plan, args.quick)
    threads = args.threads or physical_cores()
    print(f"torchport bench: {len(bundles)} bundle(s) x {len(settings.batch_sizes)} batch sizes, "
          f"{plan.seconds_per_cell:g} s per cell, {threads} threads", file=sys.stderr)
    report = run_benchmark(bundles, settings, threads, pin_predictor=args.threads is not None,
                           command=_command(args), progress=_progress)
    print(format_table(report))
    paths = write_outputs(report, args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if report.disagreements():
        print("torchport bench: some backends answered differently from torch eager (see above)", file=sys.stderr)
        return 1
    return 0
