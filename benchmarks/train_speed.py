"""Training speed, two problems.

--problem tutorial (the default): the seed's problem (22 rows, nn.Linear, MSE, full-batch SGD lr 0.002, 6000
epochs): the seed's eager loop (forward, loss, zero_grad, backward, step, loss.item() every epoch) against
torchport's fit_full_batch_sgd, from the same initial weights, interleaved after warm-up, in one run. On CUDA
a third variant captures each interval's epochs in a CUDA graph. Prints the median times, their ratios and
the largest weight difference from the eager loop (the fast path must reach the same weights).

--problem large-mlp: a generated table of --rows rows (1M by default) and 8 features, y = sum of sin(x_i) +
0.5 x_1 x_2 + noise, trained by `torchport train --model mlp --val-fraction 0.1` with its other defaults,
as a subprocess: time to the result, training rows per second (rows x epochs over the fit's seconds),
seconds per epoch, the held-out R^2, when the first progress line came and the longest gap between lines,
and the machine's load averages before and after (the machine may be shared).

Both save their figures, with the machine and thread settings, as JSON.

examples:
  python -m torchport.benchmarks.train_speed
  python -m torchport.benchmarks.train_speed --rounds 3 --device cuda
  python -m torchport.benchmarks.train_speed --problem large-mlp
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchport.benchmarks.large_table import load_average, run_train, write_table
from torchport.benchmarks.machine import environment
from torchport.benchmarks.timing import RESULTS_DIR
from torchport.runtime.files import write_json
from torchport.runtime.options import positive_float, positive_int
from torchport.train import load_dataset
from torchport.train.fast import fit_full_batch_sgd


def seed_loop(module: nn.Linear, X: torch.Tensor, y: torch.Tensor, lr: float, epochs: int) -> list[float]:
    """The tutorial's training loop, as written there (minus its print)."""
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    mse_loss = nn.MSELoss()
    losses = []
    for _ in range(epochs):
        y_pred = module(X)
        step_loss = mse_loss(y_pred, y)
        optimizer.zero_grad()
        step_loss.backward()
        optimizer.step()
        losses.append(step_loss.item())
    return losses


def torchport_path(module: nn.Linear, X: torch.Tensor, y: torch.Tensor, lr: float, epochs: int) -> list[float]:
    """torchport's path with the host reads Regressor.fit does (about 100 per run), then the losses."""
    return fit_full_batch_sgd(module, X, y, lr, epochs, check_every=max(1, epochs // 100),
                              on_check=lambda done, loss: None).tolist()


def torchport_graphed(module: nn.Linear, X: torch.Tensor, y: torch.Tensor, lr: float, epochs: int) -> list[float]:
    """The same with each interval's epochs captured in a CUDA graph (GPU only)."""
    return fit_full_batch_sgd(module, X, y, lr, epochs, check_every=max(1, epochs // 100),
                              on_check=lambda done, loss: None, cuda_graph=True).tolist()


def timed(fn, init: nn.Linear, X, y, lr, epochs, sync) -> tuple[float, nn.Linear, list[float]]:
    module = copy.deepcopy(init)
    sync()
    t0 = time.perf_counter()
    losses = fn(module, X, y, lr, epochs)
    sync()
    return time.perf_counter() - t0, module, losses


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between corresponding parameters."""
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchport.benchmarks.train_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=positive_int, default=7, help="interleaved rounds (default: 7)")
    ap.add_argument("--epochs", type=positive_int, default=6000, help="epochs per run (default: 6000, the seed's)")
    ap.add_argument("--lr", type=positive_float, default=0.002, help="learning rate (default: 0.002, the seed's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train (default: cpu)")
    ap.add_argument("--problem", choices=["tutorial", "large-mlp"], default="tutorial",
                    help="the tutorial's 22 rows (default) or a generated large table for an MLP")
    ap.add_argument("--rows", type=positive_int, default=1_000_000, help="large-mlp: rows (default: 1000000)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, metavar="DIR",
                    help=f"folder for train_speed_<device>.json or train_speed_large_mlp_<device>.json (default: "
                         f"{RESULTS_DIR}, relative to the current directory)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_speed: error: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    if args.problem == "large-mlp":
        return large_mlp(args)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    data = load_dataset("plant_richness_lr")
    X = torch.tensor(data.X, dtype=torch.float32, device=dev)
    y = torch.tensor(data.y, dtype=torch.float32, device=dev)
    torch.manual_seed(0)
    init = nn.Linear(1, 1).to(dev)
    runs = {"seed eager loop": seed_loop, "torchport fit_full_batch_sgd": torchport_path}
    if dev.type == "cuda":
        runs["torchport + CUDA graph"] = torchport_graphed

    for fn in runs.values():  # warm-up
        timed(fn, init, X, y, args.lr, min(args.epochs, 500), sync)
    times: dict[str, list[float]] = {k: [] for k in runs}
    final: dict[str, tuple[nn.Linear, list[float]]] = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            seconds, module, losses = timed(fn, init, X, y, args.lr, args.epochs, sync)
            times[name].append(seconds)
            final[name] = (module, losses)

    eager, eager_losses = final["seed eager loop"]
    fast = final["torchport fit_full_batch_sgd"][0]
    weight_diff = max(max_param_diff(module, eager) for module, _ in final.values())
    loss_rel = max(float(np.max(np.abs(np.subtract(eager_losses, losses)) / np.abs(eager_losses)))
                   for _, losses in final.values())
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["seed eager loop"] / med["torchport fit_full_batch_sgd"]
    ratios = {k: med["seed eager loop"] / v for k, v in med.items()}

    print(f"seed problem: 22 rows x 1 feature, SGD lr {args.lr:g}, {args.epochs} full-batch epochs, device {dev}, "
          f"{args.rounds} interleaved rounds after warm-up, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'':<32}{'median s':>10}{'min s':>10}{'epochs/s':>12}{'speed-up':>10}")
    for name, v in times.items():
        print(f"{name:<32}{med[name]:>10.4f}{min(v):>10.4f}{args.epochs / med[name]:>12.0f}{ratios[name]:>9.1f}x")
    print(f"speed-up (median eager / median torchport): {ratio:.1f}x  (target >= 10)")
    print(f"max |weight difference| from the eager loop after {args.epochs} epochs: {weight_diff:.2e}  "
          f"(target <= 1e-5)")
    print(f"max relative loss difference over all epochs: {loss_rel:.2e}")
    print(f"final weights: eager w {eager.weight.item():.7f} b {eager.bias.item():.7f}; "
          f"torchport w {fast.weight.item():.7f} b {fast.bias.item():.7f}")

    threads = {"torch_num_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
    result = {
        "benchmark": "train_speed", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "problem": {"dataset": "plant_richness_lr", "rows": int(len(X)), "features": 1, "lr": args.lr,
                    "epochs": args.epochs, "init_seed": 0},
        "device": str(dev), "environment": environment(threads).to_json(),
        "rounds": args.rounds, "seconds": times, "median_seconds": med,
        "speedup": ratio, "speedups": ratios, "max_weight_diff": weight_diff, "max_rel_loss_diff": loss_rel,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / f"train_speed_{dev.type}.json", result)
    print(f"saved {path}")
    return 0


def large_mlp(args: argparse.Namespace) -> int:
    """The large-table MLP through `torchport train`, timed from the outside."""
    with tempfile.TemporaryDirectory(prefix="torchport-train-speed-") as tmp:
        data = Path(tmp) / f"table_{args.rows}x8.csv"
        started = time.monotonic()
        write_table(data, args.rows)
        written = time.monotonic() - started
        load_before = load_average()
        run = run_train(data, Path(tmp) / "bundle", ["--device", args.device])
        load_after = load_average()
        if run.returncode != 0:
            print(run.stdout)
            print(f"train_speed: torchport train exited {run.returncode}", file=sys.stderr)
            return 1
        manifest = json.loads((run.bundle / "manifest.json").read_text())
        size = data.stat().st_size
    training = manifest["training"]
    plan, epochs, rows = training["plan"], training["epochs_run"], training["training_rows"]
    fit = training["fit_seconds"]
    held_out = training["validation_metrics"]["r2"]
    figures = {
        "rows": args.rows, "csv_bytes": size, "csv_write_seconds": round(written, 2),
        "training_rows": rows, "validation_rows": training["validation_rows"], "epochs_run": epochs,
        "epochs_planned": plan["epochs"], "best_epoch": training["best_epoch"], "batch_size": plan["batch_size"],
        "torch_threads": plan["threads"], "fit_seconds": fit, "seconds_per_epoch": fit / epochs,
        "training_rows_per_second": rows * epochs / fit, "wall_seconds_to_result": round(run.wall_seconds, 2),
        "cpu_seconds": round(run.cpu_seconds, 2), "first_output_seconds": run.first_output_seconds,
        "longest_gap_seconds": run.longest_gap_seconds, "progress_lines": run.stderr_lines,
        "held_out_r2": held_out, "training_r2": training["metrics"]["r2"],
        "load_average_before": load_before, "load_average_after": load_after, "command": run.command[1:],
        "parity_passed": manifest["parity"]["passed"],
    }
    print(f"large table: {args.rows:,} rows x 8 features ({size / 1e6:.0f} MB CSV), torchport train --model mlp "
          f"--val-fraction 0.1, device {args.device}; load average before {load_before}, after {load_after}")
    print(f"  time to the result {run.wall_seconds:.1f} s wall ({run.cpu_seconds:.1f} s CPU); fit {fit:.1f} s: "
          f"{epochs} epochs of {plan['epochs']} (best {training['best_epoch']}), batch {plan['batch_size']}, "
          f"{plan['threads'] or 'default'} torch thread(s)")
    print(f"  {rows * epochs / fit:,.0f} training rows/s, {fit / epochs:.2f} s per epoch; held-out R^2 "
          f"{held_out:.4f} (training {training['metrics']['r2']:.4f}); parity "
          f"{'PASSED' if manifest['parity']['passed'] else 'FAILED'}")
    print(f"  progress: first line after {run.first_output_seconds:.1f} s, longest gap {run.longest_gap_seconds:.1f} s "
          f"({run.stderr_lines} lines)")
    result = {"benchmark": "train_speed", "problem": "large-mlp",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": args.device,
              "environment": environment({"torch_num_threads": torch.get_num_threads()}).to_json(), **figures}
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / f"train_speed_large_mlp_{args.device}.json", result)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
