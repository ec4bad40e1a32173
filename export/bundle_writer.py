"""Write a bundle: stage every file in a temp directory beside the target, verify parity on the staged
files, then publish the directory by renaming it into place. Nothing appears at the target otherwise."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from torchport.export.formats import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript, \
    save_checkpoint
from torchport.export.html_report import REPORT_HTML, add_html_report
from torchport.export.parity import Tolerance
from torchport.export.verify import verify_bundle
from torchport.runtime.bundle import CHECKPOINT_FILE, LARGE_BATCH_FILE, MANIFEST, ONNX_FILE, TORCHSCRIPT_FILE, \
    Bundle, FileEntry, Manifest, TensorSpec
from torchport.runtime.errors import Fix, InputError
from torchport.runtime.files import staged_dir, write_json
from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.models import ModelSpec
from torchport.train.record import TrainingRecord
from torchport.train.report import REPORT_DIR, write_report

# report(dir) adds files to a staged bundle and returns their bundle-relative names
ReportWriter = Callable[[Path], list[str]]


class BundleExistsError(InputError):
    """The output directory exists and replacing it was not asked for."""

    def __init__(self, out: Path):
        super().__init__(f"{out} exists", parameter="out", fix=Fix("force", True, "to replace it"))


def write_bundle(module: nn.Module, spec: ModelSpec, feature_names: list[str], target_names: list[str],
                 out: str | os.PathLike, *, training: TrainingRecord | None = None, opset: int = DEFAULT_OPSET,
                 force: bool = False, verify_inputs: np.ndarray | None = None, large_batch_graph: bool = True,
                 tolerance: Tolerance = Tolerance(), report: ReportWriter | None = None) -> Manifest:
    """Export ``module`` into the bundle directory ``out``, verified; returns its manifest (whose ``parity``
    says whether the copies agree). With ``force`` an existing bundle is replaced once the new one is
    complete. ``large_batch_graph``: also write model.large_batch.onnx when the model has a Gemm over one
    feature. ``report(dir)`` may add report files to the staged bundle; report/index.html is written last,
    once parity is known."""
    out = Path(out)
    if out.exists() and not force:
        raise BundleExistsError(out)
    try:
        with staged_dir(out, replace=force) as stage:
            manifest = _write_staged(stage, module.to("cpu").eval(), spec, list(feature_names), list(target_names),
                                     training, opset, large_batch_graph, report)
            parity = verify_bundle(Bundle(stage, manifest), verify_inputs, tolerance=tolerance)
            manifest = add_html_report(Bundle(stage, manifest.with_parity(parity)))
            write_json(stage / MANIFEST, manifest.to_json())
    except FileExistsError:
        if out.exists():  # another writer published first
            raise BundleExistsError(out) from None
        raise
    return manifest


def _write_staged(stage: Path, module: nn.Module, spec: ModelSpec, features: list[str], targets: list[str],
                  training: TrainingRecord | None, opset: int, large_batch_graph: bool,
                  report: ReportWriter | None) -> Manifest:
    """Every file of the bundle into ``stage``; returns the manifest that lists them (parity not yet run)."""
    save_checkpoint(module, stage / CHECKPOINT_FILE)
    export = export_onnx(module, len(features), stage / ONNX_FILE, opset, features, targets,
                         large_batch_path=stage / LARGE_BATCH_FILE if large_batch_graph else None)
    export_torchscript(module, stage / TORCHSCRIPT_FILE)
    extra = report(stage) if report is not None else []
    names = [ONNX_FILE, *([LARGE_BATCH_FILE] if export.large_batch_graph else []), TORCHSCRIPT_FILE,
             CHECKPOINT_FILE, *extra]
    return Manifest(features=tuple(features), targets=tuple(targets),
                    input=TensorSpec(INPUT_NAME, "float32", len(features)),
                    output=TensorSpec(OUTPUT_NAME, "float32", len(targets)),
                    files={name: FileEntry.of(stage / name) for name in names}, model=spec.to_json(),
                    export=export, training=training.to_json() if training else None,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_from_regressor(reg: Regressor, data: Dataset, out: str | os.PathLike, plots: bool = True,
                         **kwargs) -> Manifest:
    """Bundle a fitted Regressor with its training record and report (inference table, plots unless
    ``plots`` is False), verifying on the training rows too."""
    record = TrainingRecord.from_fit(reg, data)
    return write_bundle(reg.module_, reg.spec_, data.feature_names, data.target_names, out, training=record,
                        verify_inputs=data.X, report=lambda stage: write_report(stage, reg, data, record, plots),
                        **kwargs)


def report_copier(bundle: Bundle) -> ReportWriter:
    """A report writer that carries an existing bundle's report files (sha256-checked) over on re-export;
    report/index.html is not carried: the new bundle gets its own, with the new parity and hashes."""
    contents = {name: bundle.read(name) for name in bundle.manifest.files
                if name.startswith(f"{REPORT_DIR}/") and name != REPORT_HTML}

    def copy(stage: Path) -> list[str]:
        for name, data in contents.items():
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return list(contents)
    return copy
