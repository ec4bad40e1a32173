"""Train a regression model, export it as a bundle (ONNX, TorchScript, checkpoint, manifest) and verify
parity between torch, TorchScript and ONNX Runtime. With no options it reproduces the tutorial: nn.Linear,
MSE loss, full-batch SGD with lr 0.002 for 6000 epochs on log10 native richness against log10 island area.

examples:
  torchport train                                   # the tutorial on the bundled data -> bundles/plant_richness_lr
  torchport train --out bundles/seed
  torchport train --data plant_richness_mlr --epochs 20000 --lr 0.0005
  torchport train --data islands.csv --target ntv_rich --features area,latitude
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from torchport.export.bundle_writer import DEFAULT_OPSET, BundleExistsError, write_from_regressor
from torchport.export.formats import check_opset
from torchport.export.verify import format_report
from torchport.runtime.cli import UserError
from torchport.runtime.predictor import Predictor
from torchport.train.inference import format_inference
from torchport.train.datasets import DATASETS, load_dataset
from torchport.train.estimator import Regressor, TrainingDiverged

# The tutorial's published figures (shared/data/README.md): SGD run and exact least squares.
SEED_REFERENCE = {"weight": 0.35739, "bias": 1.33122, "r2": 0.82764, "pred3": 2.40344}


def names(text: str) -> list[str]:
    """A comma-separated list of column names."""
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected one or more column names separated by commas")
    return out


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="plant_richness_lr", metavar="NAME|FILE",
                   help=f"bundled dataset ({', '.join(DATASETS)}) or a .csv/.tsv/.parquet file "
                        "(default: plant_richness_lr)")
    p.add_argument("--target", type=names, metavar="COLS", help="target column(s), comma-separated "
                   "(required for files; the bundled datasets default to ntv_rich)")
    p.add_argument("--features", type=names, metavar="COLS",
                   help="feature columns, comma-separated (default: the dataset's, or every other column)")
    p.add_argument("--lr", type=positive_float, default=0.002, help="SGD learning rate (default: 0.002)")
    p.add_argument("--epochs", type=positive_int, default=6000, help="full-batch epochs (default: 6000)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the initial weights (default: 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train: auto = CUDA when torch sees a GPU (default: auto)")
    p.add_argument("--out", type=Path, metavar="DIR", help="bundle directory (default: bundles/<data name>)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset to export (default: {DEFAULT_OPSET})")
    p.add_argument("--atol", type=positive_float, default=1e-5, help="parity tolerance, absolute (default: 1e-5)")
    p.add_argument("--rtol", type=positive_float, default=1e-4, help="parity tolerance, relative (default: 1e-4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="no PNG plots in the bundle's report/ folder")


def _summary(reg: Regressor, data, manifest: dict, out: Path) -> str:
    t = manifest["training"]
    exact = t["exact_least_squares"]
    lines = [f"trained {reg.spec_['kind']} on {data.source}: {len(data.X)} rows, "
             f"{', '.join(data.target_names)} ~ {', '.join(data.feature_names)}; SGD lr {reg.lr:g}, "
             f"{reg.n_epochs_} epochs, seed {reg.seed}, device {reg.device_}, final loss {reg.final_loss_:.6f}",
             ""]
    seed_like = data.feature_names == ["area"] and data.target_names == ["ntv_rich"] \
        and data.name == "plant_richness_lr"
    predictor = Predictor(out, providers="auto")
    if len(data.feature_names) == 1 and len(data.target_names) == 1:
        lines.append(f"{'':<28}{'weight w':>10}{'bias b':>10}{'R^2':>10}{'MSE':>10}{'pred(' + data.feature_names[0] + '=3)':>14}")
        if seed_like:
            r = SEED_REFERENCE
            lines.append(f"{'tutorial (published)':<28}{r['weight']:>10.5f}{r['bias']:>10.5f}{r['r2']:>10.5f}"
                         f"{'':>10}{r['pred3']:>14.5f}")
        m = t["metrics"]
        ours = float(reg.predict(np.array([[3.0]]))[0, 0])
        lines.append(f"{'torchport SGD':<28}{m['weight'][0][0]:>10.5f}{m['bias'][0]:>10.5f}{m['r2']:>10.5f}"
                     f"{m['mse']:>10.6f}{ours:>14.5f}")
        ex3 = exact["weight"][0][0] * 3 + exact["bias"][0]
        lines.append(f"{'exact least squares (f64)':<28}{exact['weight'][0][0]:>10.5f}{exact['bias'][0]:>10.5f}"
                     f"{exact['r2']:>10.5f}{exact['mse']:>10.6f}{ex3:>14.5f}")
        onnx3 = float(predictor.predict(np.array([[3.0]], dtype=np.float32))[0, 0])
        x_name = data.feature_names[0]
    else:
        m = t["metrics"]
        lines.append(f"torchport SGD:             R^2 {m['r2']:.5f}   MSE {m['mse']:.6f}")
        lines.append(f"exact least squares (f64): R^2 {exact['r2']:.5f}   MSE {exact['mse']:.6f}")
        if "weight" in m:
            for j, name in enumerate(data.target_names):
                w = ", ".join(f"{f} {a:+.5f} (exact {b:+.5f})" for f, a, b in
                              zip(data.feature_names, m["weight"][j], exact["weight"][j]))
                lines.append(f"  {name}: bias {m['bias'][j]:+.5f} (exact {exact['bias'][j]:+.5f}); {w}")
        onnx3 = None
    inference = t.get("inference")
    if inference is not None:
        lines += ["", format_inference(inference) if "targets" in inference
                  else f"no least-squares inference: {inference['unavailable']}"]
    lines += ["", format_report(manifest["parity"]), ""]
    report = sorted(name.split("/", 1)[1] for name in manifest["files"] if name.startswith("report/"))
    lines.append(f"bundle: {out}/ (model.onnx, model.torchscript.pt, checkpoint.pt, manifest.json"
                 + (f"; report/: {', '.join(report)})" if report else ")"))
    if onnx3 is not None:
        lines.append(f"prediction at {x_name} = 3 through ONNX Runtime ({', '.join(predictor.providers)}): "
                     f"{onnx3:.5f}")
    return "\n".join(lines)


def check_report_modules(plots: bool) -> None:
    """statsmodels and matplotlib are imported late (they are slow to import): say before training if missing."""
    needed = ["statsmodels", "matplotlib"] if plots else ["statsmodels"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"needs {' and '.join(missing)} from the 'train' extra: pip install 'torchport[train]'")


def run(args: argparse.Namespace) -> int:
    check_opset(args.opset)
    check_report_modules(not args.no_plots)
    data = load_dataset(args.data, args.target, args.features)
    out = args.out or Path("bundles") / data.name
    if out.exists() and not args.force:
        raise BundleExistsError(f"{out} exists; pass --force to replace it, or --out another directory")
    reg = Regressor(lr=args.lr, epochs=args.epochs, seed=args.seed, device=args.device,
                    progress=not args.no_progress)
    try:
        reg.fit(data.X, data.y)
    except TrainingDiverged as e:
        print(f"torchport train: {e}; no bundle was written", file=sys.stderr)
        return 1
    manifest = write_from_regressor(reg, data, out, plots=not args.no_plots, force=args.force, opset=args.opset,
                                    atol=args.atol, rtol=args.rtol)
    print(_summary(reg, data, manifest, out))
    if not manifest["parity"]["passed"]:
        print("torchport train: parity FAILED: the exported copies disagree with the torch model "
              "beyond the tolerance (see above)", file=sys.stderr)
        return 1
    return 0
