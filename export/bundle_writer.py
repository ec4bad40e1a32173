"""Write a bundle: stage every file in a temp directory beside the target, verify parity on the staged
files, then publish the directory by renaming it into place. Nothing appears at the target otherwise: a
bundle that fails parity stays beside it as ``<target>.parity-failed`` for inspection, unless it is asked to
be published anyway (marked failed in its manifest, which the runtime then refuses to load by default)."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from torchport.export.formats import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript, \
    save_checkpoint
from torchport.export.html_report import REPORT_HTML, add_html_report
from torchport.export.parity import Tolerance, describe_worst
from torchport.export.verify import Golden, verify_with_golden
from torchport.runtime.bundle import CHECKPOINT_FILE, GOLDEN_FILE, LARGE_BATCH_FILE, MANIFEST, ONNX_FILE, \
    TORCHSCRIPT_FILE, Bundle, FileEntry, GoldenCases, Manifest, ParityReport, TensorSpec, golden_json
from torchport.runtime.errors import Fix, InputError, ParityError
from torchport.runtime.files import publish_dir, staging_dir, write_json
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


class ParityFailed(ParityError):
    """A bundle whose copies disagree with the torch model was not published; ``report`` says how, ``kept`` is
    where its staged files are."""

    def __init__(self, report: ParityReport, out: Path, kept: Path):
        worst = "; ".join(list(report.problems) + [describe_worst(p) for p in report.pairs if not p.passed])
        super().__init__(f"parity FAILED: the exported copies disagree with the torch model beyond float32 "
                         f"rounding ({worst}); nothing was published at {out}; the staged bundle is in {kept} for "
                         "inspection", parameter="publish_failed",
                         fix=Fix("publish_failed", True, "to publish it marked failed"))
        self.report, self.kept = report, kept


def failed_dir(out: Path) -> Path:
    """Where the staged files of a bundle that failed parity are kept: beside ``out``, named to say so."""
    return out.parent / f"{out.name}.parity-failed"


def write_bundle(module: nn.Module, spec: ModelSpec, feature_names: list[str], target_names: list[str],
                 out: str | os.PathLike, *, training: TrainingRecord | None = None, opset: int = DEFAULT_OPSET,
                 force: bool = False, verify_inputs: np.ndarray | None = None, large_batch_graph: bool = True,
                 tolerance: Tolerance = Tolerance(), report: ReportWriter | None = None,
                 publish_failed: bool = False) -> Manifest:
    """Export ``module`` into the bundle directory ``out``, verified; returns its manifest. With ``force`` an
    existing bundle is replaced once the new one is complete. ``large_batch_graph``: also write
    model.large_batch.onnx when the model has a Gemm over one feature. ``report(dir)`` may add report files
    to the staged bundle; report/index.html is written last, once parity is known. A bundle that fails
    parity raises ParityFailed and stays in ``<out>.parity-failed`` (replacing an older one there); with
    ``publish_failed`` it is published, its manifest marked failed."""
    out = Path(out)
    if out.exists() and not force:
        raise BundleExistsError(out)
    stage = staging_dir(out)
    try:
        manifest = _write_staged(stage, module.to("cpu").eval(), spec, list(feature_names), list(target_names),
                                 training, opset, large_batch_graph, report)
        parity, golden = verify_with_golden(Bundle(stage, manifest), verify_inputs, tolerance=tolerance)
        manifest = add_html_report(Bundle(stage, _with_golden(stage, manifest, golden).with_parity(parity)))
        write_json(stage / MANIFEST, manifest.to_json())
        if not parity.passed and not publish_failed:
            kept = failed_dir(out)
            shutil.rmtree(kept, ignore_errors=True)
            os.rename(stage, kept)
            raise ParityFailed(parity, out, kept)
        publish_dir(stage, out, replace=force)
    except ParityFailed:
        raise
    except FileExistsError:
        shutil.rmtree(stage, ignore_errors=True)
        if out.exists():  # another writer published first
            raise BundleExistsError(out) from None
        raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def _with_golden(stage: Path, manifest: Manifest, golden: Golden) -> Manifest:
    """The manifest with golden.json written into the stage and listed."""
    write_json(stage / GOLDEN_FILE, golden_json(golden.inputs, golden.answers, golden.bound, manifest.features,
                                                manifest.targets))
    files = {**manifest.files, GOLDEN_FILE: FileEntry.of(stage / GOLDEN_FILE)}
    return replace(manifest, files=files,
                   golden=GoldenCases(GOLDEN_FILE, int(len(golden.inputs)), tuple(float(b) for b in golden.bound)))


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
                         record: TrainingRecord | None = None, **kwargs) -> Manifest:
    """Bundle a fitted Regressor with its training record (``record``, or made here) and report (inference
    table, plots unless ``plots`` is False), verifying on the training rows too; ``kwargs`` go to
    write_bundle."""
    record = record or TrainingRecord.from_fit(reg, data)
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
