"""Training speed on the seed's problem (22 rows, nn.Linear, MSE, full-batch SGD lr 0.002, 6000 epochs): the
seed's eager loop (forward, loss, zero_grad, backward, step, loss.item() every epoch) against torchport's
fit_full_batch_sgd, from the same initial weights, interleaved after warm-up, in one run. On CUDA a third
variant captures each interval's epochs in a CUDA graph. Prints the median times, their ratios and the
largest weight difference from the eager loop (the fast path must reach the same weights); saves the
figures, with the machine and thread settings, as JSON.

examples:
  python -m torchport.benchmarks.train_speed
  python -m torchport.benchmarks.train_speed --rounds 3 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

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
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, metavar="DIR",
                    help=f"folder for train_speed_<device>.json (default: {RESULTS_DIR}, relative to the current "
                         "directory)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_speed: error: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
