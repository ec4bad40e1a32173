"""What `torchport train` prints when it is done: the fit (beside the exact least-squares optimum, and the
tutorial's published figures on its data), the figures on the held-out rows, the inference table, any
warning about the fit, the parity report and the bundle's files. Every figure says which rows it used."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from torchport.export.cli_options import formats_lines, graph_lines, notes_lines
from torchport.export.parity import format_report
from torchport.runtime.bundle import Manifest, ParityReport
from torchport.runtime.intervals import T_METHOD
from torchport.runtime.predictor import Predictor
from torchport.train.datasets import Dataset, published_fit
from torchport.train.estimator import Regressor
from torchport.train.inference import format_inference
from torchport.train.metrics import FitMetrics
from torchport.train.record import TrainingRecord

def _f(value: float | None, spec: str) -> str:
    """``value`` in ``spec``, or n/a in the same width where it is undefined."""
    return format("n/a", spec.split(".")[0]) if value is None else format(value, spec)


def _method(reg: Regressor) -> str:
    """How the model was fitted, in a few words."""
    if reg.optimizer_ == "exact":
        return "exact least squares (float64 solve)"
    batch = "full batch" if reg.batch_size_ is None else f"mini-batches of {reg.batch_size_}"
    stopped = f" (early stop; best epoch {reg.best_epoch_})" if reg.n_epochs_ < reg.epochs_ else ""
    return f"{reg.optimizer_.upper()} lr {reg.lr_:g}, {batch}, {reg.n_epochs_} epochs{stopped}"


def _fit_table(reg: Regressor, data: Dataset, record: TrainingRecord) -> list[str]:
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


def _scores(label: str, m: FitMetrics, rows: str) -> str:
    return f"{label:<28}R^2 {_f(m.r2, '.5f')}   MSE {_f(m.mse, '.6g')}   ({rows})"


def _rows(n: int, what: str) -> str:
    return f"{n:,} {what} row{'s' if n != 1 else ''}"


def fit_lines(reg: Regressor, data: Dataset, record: TrainingRecord,
              flag_of: Callable[[str], str | None] | None) -> list[str]:
    """The training summary up to (not including) the parity report."""
    spec = reg.spec_
    model = spec.kind if spec.kind == "linear" else f"mlp {','.join(map(str, spec.hidden))} {spec.activation}"
    trained, held = record.rows_trained, record.validation_rows
    split = f"{_rows(trained, 'training')}, {_rows(held, 'held-out')}" if held else f"{_rows(trained, 'training')}"
    if not getattr(reg, "fit_intercept", True):
        model += " without intercept"
    lines = [f"trained {model}{' (standardised inside the model)' if spec.scale_features else ''} on {data.source}: "
             f"{split}, {', '.join(data.target_names)} ~ {', '.join(data.feature_names)}; {_method(reg)}, seed "
             f"{reg.seed}, device {reg.device_}, final loss {reg.final_loss_:.6g}", ""]
    m, exact = record.metrics, record.exact_least_squares
    if len(data.feature_names) == 1 and len(data.target_names) == 1 and m.weight is not None and not held:
        lines += _fit_table(reg, data, record)
    else:
        on_training = _rows(trained, "training")
        lines.append(_scores(f"torchport {model}:", m, on_training))
        if record.validation_metrics is not None:
            lines.append(_scores("  on the held-out rows:", record.validation_metrics, _rows(held, "held-out")))
        lines.append(_scores("exact least squares (f64):", exact, on_training))
        if record.exact_validation is not None:
            lines.append(_scores("  on the held-out rows:", record.exact_validation, _rows(held, "held-out")))
        if m.weight is not None:
            for j, name in enumerate(data.target_names):
                w = ", ".join(f"{f} {a:+.6g} (exact {b:+.6g})" for f, a, b in
                              zip(data.feature_names, m.weight[j], exact.weight[j]))
                lines.append(f"  {name}: bias {m.bias[j]:+.6g} (exact {exact.bias[j]:+.6g}); {w}")
    lines += [f"  {name}: {why}" for name, why in {**m.undefined, **exact.undefined}.items()]
    if not getattr(reg, "fit_intercept", True) and m.r2 is not None:
        lines.append("  R^2 above is about the mean (scikit-learn's score); without an intercept the inference "
                     "table gives the uncentred R^2, about zero (statsmodels', NIST's)")
    lines += [f"warning: {w.render(flag_of)}" for w in getattr(reg, "fit_warnings_", ())]
    if record.inference is not None:
        lines += ["", format_inference(record.inference) + (f"\n(on the {_rows(trained, 'training')} only)"
                                                            if held else "")]
    elif record.inference_unavailable:
        lines += ["", f"no least-squares inference: {record.inference_unavailable}"]
    return lines


def bundle_lines(data: Dataset, manifest: Manifest, out: Path, asked_large_batch: bool) -> list[str]:
    """The parity report, the bundle's files and, for one feature, a prediction through ONNX Runtime."""
    lines = ["", format_report(manifest.parity), *notes_lines(manifest.parity), ""]
    report = sorted(name.split("/", 1)[1] for name in manifest.files if "/" in name)
    files = [n for n in manifest.files if "/" not in n] + ["manifest.json"]
    lines.append(f"bundle: {out}/ ({', '.join(files)}" + (f"; report/: {', '.join(report)})" if report else ")"))
    lines += graph_lines(manifest, asked_large_batch)
    lines += formats_lines(manifest)
    if manifest.dtype != "float32":  # a float32 bundle says nothing: the tutorial's summary stays as it was
        lines.append(f"precision: {manifest.dtype} inputs, weights and arithmetic in every format, as "
                     f"{manifest.precision.reason}")
    if manifest.encoding is not None:
        lines.append(f"encoding: {manifest.encoding.describe()} (inside every format; the runtimes take the "
                     "levels as text)")
    lines.append(intervals_line(manifest))
    if len(data.feature_names) == 1 and len(data.target_names) == 1 and data.encoding is None:
        predictor = Predictor(out, providers="auto", allow_failed_parity=True)
        onnx3 = float(predictor.predict(np.array([[3.0]], dtype=np.float32))[0, 0])
        lines.append(f"prediction at {data.feature_names[0]} = 3 through ONNX Runtime "
                     f"({', '.join(predictor.providers)}): {onnx3:.5f}")
    return lines


def intervals_line(manifest: Manifest) -> str:
    """How the bundle's prediction intervals are made and their coverage on held-out rows (docs/intervals.md)."""
    iv = manifest.intervals
    if iv is None:
        return ("intervals: none (an MLP's are calibrated on held-out rows: train with --val-fraction 0.2 or "
                "--calibration-fraction 0.1)")
    how = "exact t intervals of the least-squares fit" if iv.method == T_METHOD else \
        f"split-conformal, calibrated on the {iv.conformal.source}"
    cov = iv.coverage
    measured = "coverage not measured (no held-out rows, or too few for 90%)" if cov is None else \
        f"{cov.level:.0%} intervals covered {', '.join(f'{c:.3f}' for c in cov.covered)} of {cov.rows} {cov.how}"
    return f"intervals: {how} (predict_interval, predict --interval); {measured}"


def failed_lines(report: ParityReport) -> list[str]:
    return ["", format_report(report), *notes_lines(report)]
