"""Write a bundle atomically: everything goes into a temp directory that is renamed into place."""
from __future__ import annotations

import io
import pickle
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn

from torchport.export.report import report_writer
from torchport.export.formats import INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript
from torchport.runtime.bundle import (
    CHECKPOINT_FILE, FORMAT, FORMAT_VERSION, LARGE_BATCH_FILE, BundleError, MANIFEST, ONNX_FILE, TORCHSCRIPT_FILE,
    load_manifest,
    read_checked, sha256_file, umask_mode, write_json_atomic,
)
from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.inference import InferenceUnavailable, ols_inference
from torchport.train.metrics import exact_least_squares, r2_score
from torchport.train.models import build_model

DEFAULT_OPSET = 18


class BundleExistsError(FileExistsError):
    """The output directory exists and replacing it was not asked for."""


def _versions() -> dict:
    import onnxscript
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def training_record(reg: Regressor, data: Dataset) -> dict:
    """What the manifest says about how the model was trained, including its metrics."""
    pred = reg.predict(data.X)
    record = {
        "dataset": {"name": data.name, "source": data.source, "rows": int(len(data.X)),
                    "features": data.feature_names, "targets": data.target_names,
                    "fingerprint_sha256": data.fingerprint},
        "model": reg.spec_,
        "hyperparameters": reg.hyperparameters_,
        "seed": reg.seed,
        "device": reg.device_,
        "epochs": reg.n_epochs_,
        "best_epoch": reg.best_epoch_,
        "val_loss": float(reg.val_loss_history_[-1]) if len(reg.val_loss_history_) else None,
        "final_loss": reg.final_loss_,
        "metrics": {"mse": float(np.mean((pred - data.y) ** 2)), "r2": r2_score(data.y, pred)},
        "exact_least_squares": exact_least_squares(data.X, data.y),
        "feature_stats": {"mean": data.X.mean(axis=0).tolist(), "std": data.X.std(axis=0).tolist(),
                          "min": data.X.min(axis=0).tolist(), "max": data.X.max(axis=0).tolist()},
    }
    if reg.spec_["kind"] == "linear":  # coefficients in raw units, scaling folded in
        record["metrics"].update(weight=reg.coef_.tolist(), bias=reg.intercept_.tolist())
        try:
            record["inference"] = ols_inference(data.X, data.y, data.feature_names, data.target_names)
        except InferenceUnavailable as e:
            record["inference"] = {"unavailable": str(e)}
    return record


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished temp directory onto ``out``; an old bundle is removed only after that."""
    if out.exists():
        if not force:
            raise BundleExistsError(f"{out} exists; pass --force to replace it")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_bundle(module: nn.Module, spec: dict, feature_names: list[str], target_names: list[str],
                 out: str | os.PathLike, *, training: dict | None = None, opset: int = DEFAULT_OPSET,
                 force: bool = False, verify_inputs: np.ndarray | None = None, large_batch_graph: bool = True,
                 atol: float = 1e-5, rtol: float = 1e-4, report: Callable[[Path], list[str]] | None = None) -> dict:
    """Export ``module`` into the bundle directory ``out`` and verify parity there; returns the manifest.

    Nothing appears at ``out`` unless every file was written; with ``force`` an existing bundle is replaced.
    ``large_batch_graph``: also write model.large_batch.onnx when the model has a Gemm over one feature.
    ``report(dir)`` may add files (report/...) to the bundle; it returns their names for the manifest."""
    from torchport.export.verify import verify_bundle

    out = Path(out)
    if out.exists() and not force:
        raise BundleExistsError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, umask_mode(0o777))
        module = module.to("cpu").eval()
        buf = io.BytesIO()
        torch.save({"spec": dict(spec), "state_dict": module.state_dict()}, buf)
        (tmp / CHECKPOINT_FILE).write_bytes(buf.getvalue())
        onnx_info = export_onnx(module, len(feature_names), tmp / ONNX_FILE, opset, feature_names, target_names,
                                large_batch_path=tmp / LARGE_BATCH_FILE if large_batch_graph else None)
        graphs = (ONNX_FILE, LARGE_BATCH_FILE) if onnx_info["large_batch_graph"] else (ONNX_FILE,)
        export_torchscript(module, tmp / TORCHSCRIPT_FILE)
        extra = report(tmp) if report is not None else []
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "features": list(feature_names),
            "targets": list(target_names),
            "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", len(feature_names)]}],
            "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(target_names)]}],
            "files": {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                      for name in (*graphs, TORCHSCRIPT_FILE, CHECKPOINT_FILE, *extra)},
            "model": dict(spec),
            "training": training,
            "export": {**onnx_info, "versions": _versions()},
            "parity": None,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        manifest["parity"] = verify_bundle(tmp, verify_inputs, atol=atol, rtol=rtol)
        write_json_atomic(tmp / MANIFEST, manifest)
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def load_module(bundle: str | os.PathLike) -> nn.Module:
    """The bundle's torch module, rebuilt from the manifest's spec and the checkpoint's weights.

    The checkpoint's sha256 is checked and it is loaded with ``weights_only=True``: no pickled code runs."""
    manifest = load_manifest(bundle)
    data = read_checked(bundle, CHECKPOINT_FILE, manifest)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BundleError(f"{Path(bundle) / CHECKPOINT_FILE} holds more than weights and was refused without "
                          f"running it ({str(e).splitlines()[0]})") from None
    module = build_model(state["spec"])
    module.load_state_dict(state["state_dict"])
    return module.eval()


def write_from_regressor(reg: Regressor, data: Dataset, out: str | os.PathLike, plots: bool = True,
                         **kwargs) -> dict:
    """Bundle a fitted Regressor with its training record and report (inference table, plots unless
    ``plots`` is False), verifying on the training rows too."""
    training = training_record(reg, data)
    return write_bundle(reg.module_, reg.spec_, data.feature_names, data.target_names, out, training=training,
                        verify_inputs=data.X, report=report_writer(reg, data, training, plots), **kwargs)
