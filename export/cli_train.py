"""Train a regression model, export it as a bundle (ONNX, TorchScript and the torch.export ExportedProgram
by default, an AOTInductor package with --formats ...,aoti; checkpoint, golden cases, manifest) and verify
parity between torch and every format. With no options it reproduces the tutorial: nn.Linear, MSE loss,
full-batch SGD with lr 0.002 for 6000 epochs on log10 native richness against log10 island area.

On any other data a linear model is solved exactly (float64 least squares) and, when its raw features are
ill-conditioned, standardised inside the model (weight and bias are still reported in the data's units);
--optimizer sgd is the tutorial's recipe on any data, and any of --lr, --epochs, --momentum, --batch-size,
--patience or --lr-schedule asks for it too. An MLP (--model mlp) trains with Adam (lr 1e-3) on standardised
features and targets: on the full batch for 6000 epochs up to 4096 training rows, and above that in
mini-batches of 1024 rows for about 20,000 steps; with --val-fraction it stops early and keeps the best
weights. The scaling is learned from the training rows and baked into the exported graph, so every copy
takes raw features and returns targets in their own units.

Precision is chosen by the data: the bundle is float32 where the float32 model answers the training rows
within max(1e-3 x the residual standard error, 1e-7 x the largest |y|) of the float64 fit, else float64
(inputs, weights and arithmetic, in every format; the summary's precision: line says why); a fit float64
cannot hold either is refused (exit 2) and nothing is written.

Files are read by the rules `torchport predict` uses: a byte order mark is dropped, the delimiter (comma,
semicolon or tab) is read from the header unless --delimiter says, '.' is the decimal mark, and a header
that repeats a name is refused. A file of 64 MiB or more is not held for a linear model's exact fit: it is
read twice in chunks and reduced by a tall-skinny QR, and the bundle is verified on a seeded sample of
100,000 of its rows. One `torchport train` writes to an output directory at a time.

examples:
  torchport train                                   # the tutorial on the bundled data -> bundles/plant_richness_lr
  torchport train --out bundles/seed
  torchport train --data plant_richness_mlr --out bundles/mlr               # exact least squares
  torchport train --data data.csv --target y --features x --no-intercept    # y = b x, no intercept
  torchport train --data plant_richness_mlr --model mlp --hidden 32,32 --out bundles/mlr-mlp
  torchport train --data big.csv --target y --model mlp --val-fraction 0.1
  torchport train --data islands.csv --target ntv_rich --features area,latitude --optimizer sgd --lr 0.01
  torchport train --formats onnx,torchscript,exported,aoti --out bundles/seed-aoti
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

from torchport.export.format_choices import DEFAULT_FORMATS
from torchport.runtime.bundle import MANIFEST, SIGNATURE_FILE
from torchport.runtime.encoding import IMPUTE, ONE_HOT, TREATMENT
from torchport.runtime.errors import Fix, InputError
from torchport.runtime.files import MACHINE_ERRNOS, remove_leftovers
from torchport.runtime.options import delimiter, names, number, whole_number, widths
from torchport.runtime.status import Status
from torchport.train.choices import (
    ACTIVATION_NAMES, DATASET_NAMES, MODEL_KINDS, OPTIMIZERS, SCHEDULES, STREAM_BYTES,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="plant_richness_lr", metavar="NAME|FILE",
                   help=f"bundled dataset ({', '.join(DATASET_NAMES)}) or a .csv/.tsv/.parquet file "
                        "(default: plant_richness_lr)")
    p.add_argument("--target", type=names, metavar="COLS", help="target column(s), comma-separated "
                   "(required for files; the bundled datasets default to ntv_rich)")
    p.add_argument("--features", type=names, metavar="COLS",
                   help="feature columns, comma-separated (default: the dataset's, or every other column)")
    p.add_argument("--categorical", type=names, metavar="COLS",
                   help="feature columns to take as categorical even when they hold numbers (a column of text is "
                        "categorical anyway): coded inside the bundle, treatment (dummy) coding against the first "
                        "level for linear models, one-hot for mlp; the levels are recorded in the manifest")
    p.add_argument("--impute", choices=IMPUTE,
                   help="fill missing feature cells inside the bundle with the training statistic (a categorical "
                        "column: its most frequent level); without it a missing cell is refused")
    p.add_argument("--missing-indicator", action="store_true",
                   help="with --impute: also give the model a 0/1 column for each feature that had missing cells")
    p.add_argument("--delimiter", type=delimiter, metavar="comma|semicolon|tab",
                   help="a CSV file's delimiter (default: read from its header, as `torchport predict` does)")
    p.add_argument("--model", default="linear", choices=MODEL_KINDS, help="linear (default) or mlp")
    p.add_argument("--hidden", type=widths, default=(32, 32), metavar="W,W,...",
                   help="mlp hidden layer widths (default: 32,32)")
    p.add_argument("--activation", default="relu", choices=ACTIVATION_NAMES, help="mlp activation (default: relu)")
    p.add_argument("--dropout", type=number, default=0.0, help="mlp dropout while training, in [0, 1) "
                   "(off at inference; default: 0)")
    p.add_argument("--no-intercept", action="store_true",
                   help="fit a linear model without an intercept (its bias is held at zero; the inference table "
                        "then gives the uncentred R^2 and the F test against the zero model, as statsmodels does "
                        "for a model without a constant)")
    p.add_argument("--scale", default="auto", choices=["auto", "on", "off"],
                   help="standardise features and targets inside the model (auto: on for mlp, and for a linear "
                        "model whose raw features are ill-conditioned: cond([X, 1]) above 100)")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="exact (least squares, linear only), sgd, adam or lbfgs (default: sgd, the tutorial's, on "
                        "the tutorial's data or when an SGD option is given, else exact for linear; adam for mlp)")
    p.add_argument("--lr", type=number, help="learning rate (default: 0.002 sgd, 0.001 adam, 1 lbfgs)")
    p.add_argument("--momentum", type=number, default=0.0, help="sgd momentum in [0, 1) (default: 0)")
    p.add_argument("--epochs", type=whole_number,
                   help="epochs (default: 6000 for sgd and full-batch adam, 200 for lbfgs; for mini-batches, "
                        "enough for about 20,000 steps, 5 to 6000)")
    p.add_argument("--batch-size", type=whole_number,
                   help="mini-batch rows (default: the full batch; 1024 for an mlp on more than 4096 rows)")
    p.add_argument("--val-fraction", type=number, default=0.0,
                   help="rows held out for validation, in [0, 1): their figures are printed and stored beside "
                        "the training rows' (default: 0)")
    p.add_argument("--calibration-fraction", type=number, default=0.0,
                   help="rows held out of training and validation alike, in [0, 1), on which an mlp's "
                        "prediction intervals are calibrated (default: 0, the validation rows are)")
    p.add_argument("--patience", type=whole_number,
                   help="early stopping: stop after this many epochs without a better validation loss and "
                        "keep the best weights (default with --val-fraction: a tenth of the epochs, at least 5)")
    p.add_argument("--lr-schedule", default="none", choices=SCHEDULES,
                   help="learning-rate schedule (default: none)")
    p.add_argument("--seed", type=whole_number, default=0, help="random seed for the initial weights (default: 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train: auto = CUDA when torch sees a GPU (default: auto)")
    p.add_argument("--out", type=Path, metavar="DIR", help="bundle directory (default: bundles/<data name>)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    from torchport.export.cli_options import add_export_options, add_formats_options
    add_export_options(p)
    add_formats_options(p, ",".join(DEFAULT_FORMATS))
    p.add_argument("--no-progress", action="store_true",
                   help="no status line (by default one on stderr says what is happening at least every 2 s)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from <out>.train-state.pt (same command and data); it ends "
                        "with the same weights as an uninterrupted run")
    p.add_argument("--no-plots", action="store_true", help="no PNG plots in the bundle's report/ folder")


def _flag(name: str) -> str:
    """The flag of a Regressor setting (every one is --name-with-dashes here)."""
    return "--" + name.replace("_", "-")


def check_report_modules(plots: bool) -> None:
    """scipy (the inference table's t and F distributions) and matplotlib are imported late (they are slow to
    import): say before training if missing."""
    needed = ["scipy", "matplotlib"] if plots else ["scipy"]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"needs {' and '.join(missing)} from the 'train' extra: pip install 'torchport[train]'")


def run(args: argparse.Namespace) -> int:
    status = Status("torchport train", enabled=not args.no_progress)
    try:
        return _run(args, status)
    finally:
        status.stop()


def _run(args: argparse.Namespace, status: Status) -> int:
    """Mistakes first, in the order that finds them soonest: the output, the data (read without torch), then
    the settings and the opset once torch is loaded; then the lock, training and the export."""
    check_report_modules(not args.no_plots)
    from torchport.export.cli_options import tolerance
    tolerance(args)  # --atol without --rtol is a mistake to name before anything is read or written
    out = args.out or Path("bundles") / (Path(args.data).stem if args.data not in DATASET_NAMES else args.data)
    _refuse_existing(out, args.force)
    data = None if _may_stream(args) else _load(args, status)
    status.set("loading torch")
    from torchport.export.formats import check_opset
    from torchport.train.estimator import Regressor
    check_opset(args.opset)
    if args.no_intercept and args.model != "linear":
        raise InputError("--no-intercept is for --model linear: an mlp's layers keep their biases; drop "
                         "--no-intercept", parameter="no_intercept")
    settings = dict(model=args.model, hidden=args.hidden, activation=args.activation, dropout=args.dropout,
                    fit_intercept=not args.no_intercept, scale=args.scale, optimizer=args.optimizer, lr=args.lr,
                    momentum=args.momentum, epochs=args.epochs, batch_size=args.batch_size,
                    val_fraction=args.val_fraction, patience=args.patience, lr_schedule=args.lr_schedule,
                    seed=args.seed, device=args.device, calibration_fraction=args.calibration_fraction)
    if args.model == "linear" and data is not None:  # the data's own recipe (the tutorial's: its SGD)
        settings.update({k: v for k, v in data.recipe.items() if settings.get(k) is None})
    if Regressor(**settings).check_params() != "exact" and data is None:
        data = _load(args, status)  # a large file, but an iterative fit: it needs the rows
    from torchport.runtime.locks import OutputLock
    with OutputLock(out, "torchport train") as lock:
        if lock.stale:
            status.say(f"torchport train: note: took over the lock {lock.path} left by a run that was killed "
                       f"({lock.stale})")
        for done in remove_leftovers(out):
            status.say(f"torchport train: note: {done}")
        _refuse_existing(out, args.force)  # another run may have finished it while this one waited to start
        signed = (out / SIGNATURE_FILE).is_file()
        code = _train_and_export(args, status, settings, data, out)
        if signed and (out / MANIFEST).is_file() and not (out / SIGNATURE_FILE).exists():
            print(f"torchport train: note: the bundle this run replaced was signed; the new one at {out} is not "
                  f"(its manifest is new): sign it with `torchport sign {out} --key KEY`", file=sys.stderr)
        return code


def _may_stream(args: argparse.Namespace) -> bool:
    """Whether the data is a file large enough to read in chunks for a linear model's exact fit (checked by its
    header now, as a read would check it; the settings decide once torch is loaded)."""
    if args.data in DATASET_NAMES or args.model != "linear" or args.val_fraction or args.calibration_fraction \
            or args.resume or args.categorical or args.impute:
        return False
    path = Path(args.data)
    if not path.is_file() or path.stat().st_size < STREAM_BYTES:
        return False
    from torchport.runtime.tables import table_chunks
    from torchport.train.datasets import select_columns
    with table_chunks(args.data, lambda columns: sum(select_columns(columns, args.target, args.features, args.data),
                                                     []), delimiter=args.delimiter, parameter="data"):
        return True


def _load(args: argparse.Namespace, status: Status):
    from torchport.train.datasets import load_dataset
    status.set(f"reading {args.data}")
    if args.missing_indicator and not args.impute:
        raise InputError("--missing-indicator adds a column to imputed features; give --impute too",
                         parameter="missing_indicator")
    return load_dataset(args.data, args.target, args.features, delimiter=args.delimiter,
                        on_rows=lambda n: status.set(f"reading {args.data}: {n:,} rows"),
                        categorical=args.categorical or (), impute=args.impute,
                        missing_indicator=args.missing_indicator,
                        coding=TREATMENT if args.model == "linear" else ONE_HOT)


def _refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        from torchport.export.bundle_writer import BundleExistsError
        raise BundleExistsError(out)


def _stream_and_export(args: argparse.Namespace, status: Status, settings: dict, out: Path) -> int:
    """A linear model's exact fit on a file read twice in chunks (train/streaming.py); the bundle is verified
    on a sample of its rows."""
    from torchport.train.estimator import Regressor
    from torchport.train.streaming import fit_streamed

    reg = Regressor(**settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    streamed = fit_streamed(reg, args.data, args.target, args.features, delimiter=args.delimiter, seed=args.seed,
                            on_rows=lambda stage, n: status.set(f"{stage} {args.data} in chunks: {n:,} rows"))
    rows, kept = streamed.record.dataset.rows, len(streamed.sample.X)
    note = (f"read in chunks ({rows:,} rows, never held at once): the bundle is verified on a seeded sample of "
            f"{kept:,} of them, which the golden cases and plots also use")
    return _export(args, status, reg, streamed.sample, streamed.record, out, note=note, intervals=streamed.intervals)


def _train_and_export(args: argparse.Namespace, status: Status, settings: dict, data, out: Path) -> int:
    if data is None:
        return _stream_and_export(args, status, settings, out)
    from torchport.train.errors import FitWarning, TrainingDiverged
    from torchport.train.estimator import Regressor
    from torchport.train.calibration import interval_record
    from torchport.train.record import TrainingRecord, training_fit

    state = out.parent / f"{out.name}.train-state.pt"
    if state.exists() and not (args.resume or args.force):
        raise InputError(f"an interrupted run left {state}", fixes=(Fix({"resume": True}, "to continue it"),
                                                                     Fix({"force": True}, "to start over")))

    def show(p) -> None:
        val = "" if p.val_loss is None else f", validation loss {p.val_loss:.6g}"
        loss = "" if p.loss is None else f", loss {p.loss:.6g}"
        status.set(f"training on {len(data.X):,} rows: epoch {p.epoch:.1f} of {p.epochs}{loss}{val}")

    status.set(f"training on {len(data.X):,} rows")
    reg = Regressor(**settings, progress=show, checkpoint=state)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # the summary gives them, in the command's terms
            warnings.simplefilter("ignore", FitWarning)
            reg.fit(data.X, data.y, resume=args.resume)
    except OSError as e:
        if e.errno in MACHINE_ERRNOS:  # a full disk: nothing is left behind, the training state included
            state.unlink(missing_ok=True)
        raise
    except TrainingDiverged as e:
        state.unlink(missing_ok=True)
        raise TrainingDiverged(f"{e.message}; no bundle was written", parameter=e.parameter, fixes=e.fixes) from None
    except KeyboardInterrupt:
        status.stop()
        kept = f"; {state} holds the last checkpoint: run the same command with --resume to continue" \
            if state.exists() else ""
        print(f"torchport train: interrupted, no bundle was written{kept}", file=sys.stderr)
        return 130
    fit = training_fit(reg, data)
    record = TrainingRecord.from_fit(reg, data, fit)
    return _export(args, status, reg, data, record, out, state=state, intervals=interval_record(reg, data, fit))


def _export(args: argparse.Namespace, status: Status, reg, data, record, out: Path, note: str | None = None,
            state: Path | None = None, intervals=None) -> int:
    """Write, verify and publish the bundle; print the summary (``note`` after the fit's lines); the training
    state is removed once the bundle is written or refused."""
    from torchport.export.bundle_writer import ParityFailed, write_from_regressor
    from torchport.export.precision import PrecisionError
    from torchport.export.cli_options import tolerance
    from torchport.export.train_summary import bundle_lines, failed_lines, fit_lines

    status.set(f"exporting {', '.join(args.formats or DEFAULT_FORMATS)}, verifying parity against float64")
    summary = fit_lines(reg, data, record, _flag) + ([f"({note})"] if note else [])
    try:
        manifest = write_from_regressor(reg, data, out, plots=not args.no_plots, force=args.force,
                                        opset=args.opset, tolerance=tolerance(args),
                                        large_batch_graph=not args.no_large_batch_graph, record=record,
                                        intervals=intervals,
                                        formats=args.formats or DEFAULT_FORMATS,
                                        aoti_cpu=args.aoti_cpu, publish_failed=args.publish_failed)
    except ParityFailed as e:
        if state is not None:
            state.unlink(missing_ok=True)
        status.stop()
        print("\n".join(summary + failed_lines(e.report)))
        raise
    except PrecisionError:  # refused before anything was written: the fit's summary, then the one-line error
        if state is not None:
            state.unlink(missing_ok=True)
        status.stop()
        print("\n".join(summary))
        raise
    except OSError as e:
        if e.errno in MACHINE_ERRNOS and state is not None:
            state.unlink(missing_ok=True)
        raise
    if state is not None:
        state.unlink(missing_ok=True)
    status.stop()
    print("\n".join(summary + bundle_lines(data, manifest, out, not args.no_large_batch_graph)))
    if not manifest.parity.passed:
        print(f"torchport train: parity FAILED: the exported copies disagree with the torch model beyond "
              f"float32 rounding (see above); published at {out} marked failed, as --publish-failed asked",
              file=sys.stderr)
        return 1
    return 0
