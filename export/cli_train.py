"""Train a regression model, export it as a bundle (ONNX, TorchScript and the torch.export ExportedProgram
by default, an AOTInductor package with --formats ...,aoti; checkpoint, manifest) and verify parity between
torch and every format. With no options it reproduces the tutorial: nn.Linear,
MSE loss, full-batch SGD with lr 0.002 for 6000 epochs on log10 native richness against log10 island area.

An MLP (--model mlp) defaults to Adam (lr 1e-3) with features and targets standardised; the scaling is
learned from the training rows and baked into the exported graph, so every copy takes raw features and
returns targets in their own units. The linear model is unscaled by default so its weight and bias keep
the tutorial's meaning (--scale on changes that).

examples:
  torchport train                                   # the tutorial on the bundled data -> bundles/plant_richness_lr
  torchport train --out bundles/seed
  torchport train --data plant_richness_mlr --model mlp --hidden 32,32 --out bundles/mlr
  torchport train --formats onnx,torchscript,exported,aoti --out bundles/seed-aoti
  torchport train --data plant_richness_mlr --scale on --optimizer lbfgs --epochs 50
  torchport train --data islands.csv --target ntv_rich --features area,latitude --val-fraction 0.2 --patience 100
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from torchport.export.bundle_writer import DEFAULT_FORMATS, BundleExistsError, write_from_regressor
from torchport.export.cli_options import add_export_options, add_formats_options, formats_lines, large_batch_line, \
    notes_lines, tolerance
from torchport.export.formats import check_opset
from torchport.export.parity import format_report
from torchport.runtime.bundle import Manifest
from torchport.runtime.errors import InputError
from torchport.runtime.options import names, number, whole_number, widths
from torchport.runtime.predictor import Predictor
from torchport.train.datasets import DATASETS, Dataset, load_dataset, published_fit
from torchport.train.errors import TrainError, TrainingDiverged
from torchport.train.estimator import OPTIMIZERS, SCHEDULES, Regressor
from torchport.train.inference import format_inference
from torchport.train.models import ACTIVATIONS, MODEL_KINDS
from torchport.train.record import TrainingRecord

USER_ERRORS = (TrainError,)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="plant_richness_lr", metavar="NAME|FILE",
                   help=f"bundled dataset ({', '.join(DATASETS)}) or a .csv/.tsv/.parquet file "
                        "(default: plant_richness_lr)")
    p.add_argument("--target", type=names, metavar="COLS", help="target column(s), comma-separated "
                   "(required for files; the bundled datasets default to ntv_rich)")
    p.add_argument("--features", type=names, metavar="COLS",
                   help="feature columns, comma-separated (default: the dataset's, or every other column)")
    p.add_argument("--model", default="linear", choices=MODEL_KINDS, help="linear (default) or mlp")
    p.add_argument("--hidden", type=widths, default=(32, 32), metavar="W,W,...",
                   help="mlp hidden layer widths (default: 32,32)")
    p.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS), help="mlp activation (default: relu)")
    p.add_argument("--dropout", type=number, default=0.0, help="mlp dropout while training, in [0, 1) "
                   "(off at inference; default: 0)")
    p.add_argument("--scale", default="auto", choices=["auto", "on", "off"],
                   help="standardise features and targets inside the model (auto: on for mlp, off for linear)")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="sgd, adam or lbfgs (default: sgd for linear, adam for mlp)")
    p.add_argument("--lr", type=number, help="learning rate (default: 0.002 sgd, 0.001 adam, 1 lbfgs)")
    p.add_argument("--momentum", type=number, default=0.0, help="sgd momentum in [0, 1) (default: 0)")
    p.add_argument("--epochs", type=whole_number, default=6000, help="epochs (default: 6000)")
    p.add_argument("--batch-size", type=whole_number, help="mini-batch rows (default: the full batch)")
    p.add_argument("--val-fraction", type=number, default=0.0,
                   help="rows held out for validation, in [0, 1) (default: 0)")
    p.add_argument("--patience", type=whole_number,
                   help="early stopping: stop after this many epochs without a better validation loss and "
                        "keep the best weights (needs --val-fraction)")
    p.add_argument("--lr-schedule", default="none", choices=SCHEDULES,
                   help="learning-rate schedule (default: none)")
    p.add_argument("--seed", type=whole_number, default=0, help="random seed for the initial weights (default: 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train: auto = CUDA when torch sees a GPU (default: auto)")
    p.add_argument("--out", type=Path, metavar="DIR", help="bundle directory (default: bundles/<data name>)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    add_export_options(p)
    add_formats_options(p, ",".join(DEFAULT_FORMATS))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from <out>.train-state.pt (same command and data); it ends "
                        "with the same weights as an uninterrupted run")
    p.add_argument("--no-plots", action="store_true", help="no PNG plots in the bundle's report/ folder")


def _fit_table(reg: Regressor, data: Dataset, record: TrainingRecord, predictor: Predictor) -> list[str]:
    """The one-feature, one-target linear fit beside the exact optimum (and the tutorial, on its data)."""
    m, exact, x_name = record.metrics, record.exact_least_squares, data.feature_names[0]
    lines = [f"{'':<28}{'weight w':>10}{'bias b':>10}{'R^2':>10}{'MSE':>10}{'pred(' + x_name + '=3)':>14}"]
    r = published_fit(data.name, data.feature_names, data.target_names)
    if r is not None:
        lines.append(f"{'tutorial (published)':<28}{r['weight']:>10.5f}{r['bias']:>10.5f}{r['r2']:>10.5f}"
                     f"{'':>10}{r['pred3']:>14.5f}")
    ours = float(np.asarray(reg.predict(np.array([[3.0]]))).reshape(-1)[0])
    lines.append(f"{'torchport ' + reg.optimizer_.upper():<28}{m.weight[0][0]:>10.5f}{m.bias[0]:>10.5f}"
                 f"{_f(m.r2, '>10.5f')}{m.mse:>10.6f}{ours:>14.5f}")
    ex3 = exact.weight[0][0] * 3 + exact.bias[0]
    lines.append(f"{'exact least squares (f64)':<28}{exact.weight[0][0]:>10.5f}{exact.bias[0]:>10.5f}"
                 f"{_f(exact.r2, '>10.5f')}{exact.mse:>10.6f}{ex3:>14.5f}")
    return lines


def _f(value: float | None, spec: str) -> str:
    """``value`` in ``spec``, or n/a in the same width where it is undefined."""
    return format("n/a", spec.split(".")[0]) if value is None else format(value, spec)


def _summary(reg: Regressor, data: Dataset, manifest: Manifest, out: Path, asked_large_batch: bool) -> str:
    record = TrainingRecord.from_json(manifest.training)
    spec, m, exact = reg.spec_, record.metrics, record.exact_least_squares
    model = spec.kind if spec.kind == "linear" else f"mlp {','.join(map(str, spec.hidden))} {spec.activation}"
    stopped = f" (early stop; best epoch {reg.best_epoch_})" if reg.n_epochs_ < reg.epochs else ""
    lines = [f"trained {model}{' (standardised)' if spec.scale_features else ''} on {data.source}: "
             f"{len(data.X)} rows, {', '.join(data.target_names)} ~ {', '.join(data.feature_names)}; "
             f"{reg.optimizer_.upper()} lr {reg.lr_:g}, {reg.n_epochs_} epochs{stopped}, seed {reg.seed}, "
             f"device {reg.device_}, final loss {reg.final_loss_:.6g}", ""]
    predictor = Predictor(out, providers="auto")
    one_feature = len(data.feature_names) == 1 and len(data.target_names) == 1 and m.weight is not None
    if one_feature:
        lines += _fit_table(reg, data, record, predictor)
    else:
        lines.append(f"torchport {model + ':':<16} R^2 {_f(m.r2, '.5f')}   MSE {m.mse:.6f}")
        lines.append(f"exact least squares (f64): R^2 {_f(exact.r2, '.5f')}   MSE {exact.mse:.6f}")
        if m.weight is not None:
            for j, name in enumerate(data.target_names):
                w = ", ".join(f"{f} {a:+.5f} (exact {b:+.5f})" for f, a, b in
                              zip(data.feature_names, m.weight[j], exact.weight[j]))
                lines.append(f"  {name}: bias {m.bias[j]:+.5f} (exact {exact.bias[j]:+.5f}); {w}")
    lines += [f"  {name}: {why}" for name, why in {**m.undefined, **exact.undefined}.items()]
    if record.inference is not None:
        lines += ["", format_inference(record.inference)]
    elif record.inference_unavailable:
        lines += ["", f"no least-squares inference: {record.inference_unavailable}"]
    lines += ["", format_report(manifest.parity), *notes_lines(manifest.parity), ""]
    report = sorted(name.split("/", 1)[1] for name in manifest.files if "/" in name)
    files = [n for n in manifest.files if "/" not in n] + ["manifest.json"]
    lines.append(f"bundle: {out}/ ({', '.join(files)}" + (f"; report/: {', '.join(report)})" if report else ")"))
    lines.append(large_batch_line(manifest, asked_large_batch))
    lines += formats_lines(manifest)
    if one_feature:
        onnx3 = float(predictor.predict(np.array([[3.0]], dtype=np.float32))[0, 0])
        lines.append(f"prediction at {data.feature_names[0]} = 3 through ONNX Runtime "
                     f"({', '.join(predictor.providers)}): {onnx3:.5f}")
    return "\n".join(lines)


def check_report_modules(plots: bool) -> None:
    """statsmodels and matplotlib are imported late (they are slow to import): say before training if missing."""
    needed = ["statsmodels", "matplotlib"] if plots else ["statsmodels"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"needs {' and '.join(missing)} from the 'train' extra: pip install 'torchport[train]'")


def run(args: argparse.Namespace) -> int:
    check_opset(args.opset)
    check_report_modules(not args.no_plots)
    reg = Regressor(model=args.model, hidden=args.hidden, activation=args.activation, dropout=args.dropout,
                    scale=args.scale, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                    epochs=args.epochs, batch_size=args.batch_size, val_fraction=args.val_fraction,
                    patience=args.patience, lr_schedule=args.lr_schedule, seed=args.seed, device=args.device,
                    progress=not args.no_progress)
    reg.check_params()
    data = load_dataset(args.data, args.target, args.features)
    out = args.out or Path("bundles") / data.name
    if out.exists() and not args.force:
        raise BundleExistsError(out)
    state = out.parent / f"{out.name}.train-state.pt"
    if state.exists() and not (args.resume or args.force):
        raise InputError(f"an interrupted run left {state}; pass --resume to continue it, or --force to "
                         "start over")
    reg.set_params(checkpoint=state)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        reg.fit(data.X, data.y, resume=args.resume)
    except TrainingDiverged as e:
        state.unlink(missing_ok=True)
        print(f"torchport train: {e}; no bundle was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        kept = f"; {state} holds the last checkpoint: run the same command with --resume to continue" \
            if state.exists() else ""
        print(f"torchport train: interrupted, no bundle was written{kept}", file=sys.stderr)
        return 130
    manifest = write_from_regressor(reg, data, out, plots=not args.no_plots, force=args.force, opset=args.opset,
                                    tolerance=tolerance(args), large_batch_graph=not args.no_large_batch_graph,
                                    formats=args.formats or DEFAULT_FORMATS, aoti_cpu=args.aoti_cpu)
    state.unlink(missing_ok=True)
    print(_summary(reg, data, manifest, out, not args.no_large_batch_graph))
    if not manifest.parity.passed:
        print("torchport train: parity FAILED: the exported copies disagree with the torch model "
              "beyond the tolerance (see above)", file=sys.stderr)
        return 1
    return 0
