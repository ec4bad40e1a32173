"""Write a bundle: stage every file in a temp directory beside the target, verify parity on the staged
files, then publish the directory by renaming it into place. Nothing appears at the target otherwise: a
bundle that fails parity stays beside it as ``<target>.parity-failed`` for inspection, unless it is asked to
be published anyway (marked failed in its manifest, which the runtime then refuses to load by default).
Every file goes into the manifest with its sha256 and what wrote it (the tool and its versions, the
seconds it took, the device it is for, the compiler)."""
from __future__ import annotations

import copy
import os
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from torchport.export.aoti import compile_package
from torchport.export.encoded import Encoded
from torchport.export.exported import export_program, save_program
from torchport.export.formats import DEFAULT_OPSET, EXPORTER, INPUT_NAME, OUTPUT_NAME, TORCHSCRIPT_TOOL, \
    export_onnx, export_torchscript, save_checkpoint, torchport_version, versions
from torchport.export.format_choices import DEFAULT_FORMATS, check_formats
from torchport.export.html_report import REPORT_HTML, add_html_report
from torchport.export.module_spec import ModuleSpec
from torchport.export.parity import Tolerance, describe_worst
from torchport.export.precision import choose_precision
from torchport.export.torch_calls import evaluating
from torchport.export.verify import GRAPH_BACKENDS, Golden, verify_with_golden
from torchport.runtime.bundle import AOTI_CUDA_FILE, AOTI_FILE, CHECKPOINT_FILE, EXPORTED_FILE, GOLDEN_FILE, \
    LARGE_BATCH_FILE, MANIFEST, ONNX_FILE, THREADED_FILE, TORCHSCRIPT_FILE, Bundle, FileEntry, FileWriter, GoldenCases, Manifest, \
    ParityReport, Precision, TensorSpec, golden_json
from torchport.runtime.encoding import Encoding
from torchport.runtime.errors import Fix, InputError, ParityError
from torchport.runtime.intervals import IntervalRecord
from torchport.runtime.files import discard_dir, naming, publish_dir, staging_dir, write_json
from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.models import ModelSpec
from torchport.train.calibration import interval_record
from torchport.train.record import TrainingRecord, training_fit
from torchport.train.report import REPORT_DIR, write_report

# report(dir) adds files to a staged bundle and returns their bundle-relative names
ReportWriter = Callable[[Path], list[str]]
EXPORTED_TOOL = "torch.export.export + torch.export.save"


class BundleExistsError(InputError):
    """The output directory exists and replacing it was not asked for."""

    def __init__(self, out: Path):
        super().__init__(f"{out} exists", parameter="out", fixes=(Fix({"force": True}, "to replace it"),))


class ParityFailed(ParityError):
    """A bundle whose copies disagree with the torch model was not published; ``report`` says how, ``kept`` is
    where its staged files are."""

    def __init__(self, report: ParityReport, out: Path, kept: Path):
        worst = "; ".join(list(report.problems) + [describe_worst(p) for p in report.pairs if not p.passed])
        super().__init__(f"parity FAILED: the exported copies disagree with the torch model beyond float32 "
                         f"rounding ({worst}); nothing was published at {out}; the staged bundle is in {kept} for "
                         "inspection", parameter="publish_failed",
                         fixes=(Fix({"publish_failed": True}, "to publish it marked failed"),))
        self.report, self.kept = report, kept


def failed_dir(out: Path) -> Path:
    """Where the staged files of a bundle that failed parity are kept: beside ``out``, named to say so."""
    return out.parent / f"{out.name}.parity-failed"


def write_bundle(module: nn.Module | torch.export.ExportedProgram, spec: ModelSpec | ModuleSpec,
                 feature_names: list[str], target_names: list[str],
                 out: str | os.PathLike, *, training: TrainingRecord | None = None, opset: int = DEFAULT_OPSET,
                 force: bool = False, verify_inputs: np.ndarray | None = None, large_batch_graph: bool = True,
                 tolerance: Tolerance = Tolerance(), report: ReportWriter | None = None,
                 formats: Iterable[str] = DEFAULT_FORMATS, aoti_cpu: str = "native",
                 publish_failed: bool = False, precision: Precision | None = None,
                 intervals: IntervalRecord | None = None, encoding: Encoding | None = None) -> Manifest:
    """Export ``module`` into the bundle directory ``out``, verified; returns its manifest. The graphs take,
    compute and answer in ``module``'s dtype (float32, or float64 where ``precision`` says why). With ``force`` an
    existing bundle is replaced once the new one is complete. ``formats``: the model formats to write
    (FORMAT_FILES' names; "onnx" always); "aoti" also writes a CUDA package when torch sees a GPU, and
    ``aoti_cpu`` says which CPUs its native code is for ("native": this one; or an x86-64 level).
    ``large_batch_graph``: also write model.large_batch.onnx when the model has a Gemm over one feature.
    ``intervals``: what the bundle's prediction intervals and domain flags need (manifest field).
    ``report(dir)`` may add report files to the staged bundle; report/index.html is written last, once
    parity is known. A bundle that fails parity raises ParityFailed and stays in ``<out>.parity-failed``
    (replacing an older one there); with ``publish_failed`` it is published, its manifest marked failed.
    A ModuleSpec bundle (a module torchport did not define) always holds model.pt2, its torch-side source;
    ``module`` may then be that ExportedProgram (re-exporting such a bundle), which every format is written
    from as it is. ``encoding``: the categorical and imputed columns ``module`` (an ``Encoded``) takes, recorded
    in the manifest."""
    out = Path(out)
    formats = check_formats(formats)
    if isinstance(spec, ModuleSpec) and "exported" not in formats:
        formats = check_formats((*formats, "exported"))
    if out.exists() and not force:
        raise BundleExistsError(out)
    program = module if isinstance(module, torch.export.ExportedProgram) else None
    module = program.module() if program is not None else evaluating(module.to("cpu"))
    with naming(out):  # a full disk, a read-only folder: the error names the bundle, not a temp name
        stage = staging_dir(out)
        try:
            manifest = write_files(stage, module, spec, list(feature_names), list(target_names), training, opset,
                                   large_batch_graph, report, formats, aoti_cpu, program)
            manifest = replace(manifest, precision=precision or _given(manifest), intervals=intervals,
                               encoding=encoding)
            reference = module if isinstance(spec, ModuleSpec) else None
            parity, golden = verify_with_golden(Bundle(stage, manifest), verify_inputs, tolerance=tolerance,
                                                module=reference)
            while failing := _failing_variants(parity, manifest.files):  # a rewritten graph failing parity is left out
                for name in failing:
                    (stage / name).unlink(missing_ok=True)
                files = {k: v for k, v in manifest.files.items() if k not in failing}
                export = manifest.export
                if LARGE_BATCH_FILE in failing:
                    export = replace(export, large_batch_graph=None)
                if THREADED_FILE in failing:
                    export = replace(export, threaded_graph=None)
                manifest = replace(manifest, files=files, export=export)
                parity, golden = verify_with_golden(Bundle(stage, manifest), verify_inputs, tolerance=tolerance,
                                                    module=reference)
            manifest = add_html_report(Bundle(stage, _with_golden(stage, manifest, golden).with_parity(parity)))
            write_json(stage / MANIFEST, manifest.to_json())
            if not parity.passed and not publish_failed:
                kept = failed_dir(out)
                publish_dir(stage, kept, replace=True)
                raise ParityFailed(parity, out, kept)
            publish_dir(stage, out, replace=force)
        except ParityFailed:
            raise
        except FileExistsError:
            discard_dir(stage)
            if out.exists():  # another writer published first
                raise BundleExistsError(out) from None
            raise
        except BaseException:
            discard_dir(stage)
            raise
        return manifest


def _with_golden(stage: Path, manifest: Manifest, golden: Golden) -> Manifest:
    """The manifest with golden.json written into the stage and listed."""
    start = time.perf_counter()
    write_json(stage / GOLDEN_FILE, golden_json(golden.inputs, golden.answers, golden.bound, manifest.features,
                                                manifest.targets))
    writer = FileWriter("torchport verify (golden cases)", {"torchport": torchport_version()},
                        time.perf_counter() - start, "any")
    files = {**manifest.files, GOLDEN_FILE: FileEntry.of(stage / GOLDEN_FILE, writer)}
    return replace(manifest, files=files,
                   golden=GoldenCases(GOLDEN_FILE, int(len(golden.inputs)), tuple(float(b) for b in golden.bound)))


class _Files:
    """The staged files and what wrote each, timed step by step."""

    def __init__(self, stage: Path):
        self.stage, self.entries, self.start = stage, {}, time.perf_counter()

    def step(self) -> float:
        """Seconds since the last step ended (or since the first began)."""
        now = time.perf_counter()
        seconds, self.start = now - self.start, now
        return seconds

    def add(self, names: Iterable[str], tool: str, tool_versions: dict[str, str], device: str,
            seconds: float | None = None) -> None:
        """Files written by ``tool`` in the step that just ended (or in ``seconds``), for ``device``."""
        seconds = self.step() if seconds is None else seconds
        self.put(names, FileWriter(tool, tool_versions, seconds, device))

    def put(self, names: Iterable[str], writer: FileWriter) -> None:
        writer = replace(writer, versions={"torchport": torchport_version(), **writer.versions})
        for name in names:
            self.entries[name] = FileEntry.of(self.stage / name, writer)
        self.step()


def write_files(stage: Path, module: nn.Module, spec: ModelSpec | ModuleSpec, features: list[str],
                targets: list[str], training: TrainingRecord | None, opset: int, large_batch_graph: bool,
                report: ReportWriter | None, formats: tuple[str, ...], aoti_cpu: str,
                program: torch.export.ExportedProgram | None = None) -> Manifest:
    """Every file of the bundle into ``stage`` (each format from ``program``, or from ``module``'s
    ExportedProgram); returns the manifest that lists them (parity not yet run)."""
    files, torch_version = _Files(stage), {"torch": torch.__version__}
    dtype = module_dtype(module)
    if isinstance(spec, ModelSpec):
        save_checkpoint(module, stage / CHECKPOINT_FILE)
        files.add([CHECKPOINT_FILE], "torch.save(state_dict)", torch_version, "any")
    if program is None:
        program = export_program(module, len(features), dtype=dtype)
    traced = files.step()
    export = export_onnx(program, stage / ONNX_FILE, opset, features, targets,
                         large_batch_path=stage / LARGE_BATCH_FILE if large_batch_graph else None,
                         threaded_path=stage / THREADED_FILE if large_batch_graph else None)
    variants = [g.file for g in (export.large_batch_graph, export.threaded_graph) if g]
    files.add([ONNX_FILE, *variants], EXPORTER, versions(), "any",
              seconds=traced + files.step())
    not_written: dict[str, str] = {}
    if "torchscript" in formats:
        why = export_torchscript(module, stage / TORCHSCRIPT_FILE)
        if why:
            not_written["torchscript"] = why
            files.step()
        else:
            files.add([TORCHSCRIPT_FILE], TORCHSCRIPT_TOOL, torch_version, "any")
    if "exported" in formats:
        save_program(program, stage / EXPORTED_FILE)
        files.add([EXPORTED_FILE], EXPORTED_TOOL, torch_version, "any", seconds=traced + files.step())
    written = [f for f in formats if f not in not_written]
    if "aoti" in formats:
        files.put([AOTI_FILE], compile_package(program, stage / AOTI_FILE, "cpu", aoti_cpu))
        if torch.cuda.is_available():
            on_gpu = export_program(copy.deepcopy(module).to("cuda"), len(features), device="cuda", dtype=dtype)
            files.put([AOTI_CUDA_FILE], compile_package(on_gpu, stage / AOTI_CUDA_FILE, "cuda", aoti_cpu))
            written.append("aoti_cuda")
        else:
            not_written["aoti_cuda"] = "no CUDA GPU when the bundle was written (torch.cuda.is_available() is False)"
    if report is not None:
        files.add(report(stage), "torchport report", {}, "any")
    return Manifest(features=tuple(features), targets=tuple(targets),
                    input=TensorSpec(INPUT_NAME, _DTYPE_NAMES[dtype], len(features)),
                    output=TensorSpec(OUTPUT_NAME, _DTYPE_NAMES[dtype], len(targets)), files=files.entries,
                    model=spec.to_json(), export=replace(export, formats=tuple(written), not_written=not_written),
                    training=training.to_json() if training else None,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


def _given(manifest: Manifest) -> Precision | None:
    """The precision record of a float64 module written without one (not chosen by a fit: given)."""
    if manifest.dtype == "float32":
        return None
    return Precision(manifest.dtype, f"the module given computes in {manifest.dtype} (not measured against a fit)",
                     "the module run in float64", 0, (), ())


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a module computes in: that of its first parameter or buffer (float32 without either)."""
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.dtype if tensor is not None and tensor.dtype in _DTYPE_NAMES else torch.float32


def _failing_variants(parity, present) -> list[str]:
    """The rewritten graphs to leave out, when model.onnx passes and every failing pair is a rewritten
    graph's (on its own, or run by the Predictor): the rewrite's float32 rounding (folded scaling) is what
    fell outside the tolerance. Those whose own pairs failed; when only the Predictor (which may run either)
    fails, every one ``present`` lists. Empty when model.onnx fails too, or nothing does."""
    failing = {p.candidate for p in parity.pairs if not p.passed}
    model_ok = any(p.candidate == "onnxruntime_model" and p.passed for p in parity.pairs)
    by_backend = {backend: name for name, backend in GRAPH_BACKENDS.items() if name != ONNX_FILE}
    if not failing or not model_ok or parity.problems or not failing <= {"onnxruntime", *by_backend}:
        return []
    own = [by_backend[c] for c in sorted(failing) if c in by_backend and by_backend[c] in present]
    return own or [name for name in by_backend.values() if name in present]


def describe_module(module: nn.Module, n_features: int) -> ModuleSpec:
    """The ModuleSpec of a module torchport did not define, its width of answers found by running it on
    two rows; InputError unless it maps (rows, n_features) float32 to (rows, targets)."""
    try:
        with torch.no_grad():
            answer = evaluating(module)(torch.zeros(2, n_features, dtype=torch.float32))
    except Exception as e:  # a user's module may raise anything for the wrong width
        raise InputError(f"the module cannot answer a (2, {n_features}) float32 batch: {type(e).__name__}: {e}",
                         parameter="module") from None
    if not isinstance(answer, torch.Tensor) or answer.dim() != 2 or answer.shape[0] != 2:
        shape = list(answer.shape) if isinstance(answer, torch.Tensor) else type(answer).__name__
        raise InputError(f"the module must answer a 2-D (rows, targets) tensor; for 2 rows it answered {shape}",
                         parameter="module")
    return ModuleSpec(f"{type(module).__module__}.{type(module).__qualname__}", n_features, int(answer.shape[1]))


def write_module_bundle(module: nn.Module, feature_names: list[str], target_names: list[str],
                        out: str | os.PathLike, *, inputs: np.ndarray | None = None, **kwargs) -> Manifest:
    """Bundle any module that maps a (rows, features) float32 batch to (rows, targets): its ExportedProgram
    (model.pt2, the torch-side source that verify, export and bench load) and the other ``formats``,
    verified against the module itself on ``inputs`` (if given) and random batches. Other keyword
    arguments are write_bundle's."""
    spec = describe_module(module, len(feature_names))
    if spec.n_targets != len(target_names):
        raise InputError(f"the module answers {spec.n_targets} column(s), and target_names names "
                         f"{len(target_names)}", parameter="target_names")
    return write_bundle(module, spec, list(feature_names), list(target_names), out, verify_inputs=inputs, **kwargs)


def write_from_regressor(reg: Regressor, data: Dataset, out: str | os.PathLike, plots: bool = True,
                         record: TrainingRecord | None = None, intervals: IntervalRecord | None = None,
                         **kwargs) -> Manifest:
    """Bundle a fitted Regressor with its training record (``record``, or made here), what its prediction
    intervals need (``intervals``, or made here) and report (inference table, plots unless ``plots`` is
    False), verifying on the training rows too; ``kwargs`` go to write_bundle. The bundle is float32 where
    the float32 model holds the float64 fit on the training rows, else float64 (export/precision.py);
    PrecisionError, with nothing written, where neither does."""
    fit = training_fit(reg, data) if record is None or intervals is None else None
    record = record or TrainingRecord.from_fit(reg, data, fit)
    intervals = intervals or interval_record(reg, data, fit)
    module, precision = choose_precision(reg, data)
    if data.encoding is not None:  # the coding of categorical and imputed columns, in front of the model
        module = Encoded(data.encoding, module)
    return write_bundle(module, reg.spec_, data.input_names, data.target_names, out, training=record,
                        verify_inputs=data.inputs, precision=precision, intervals=intervals, encoding=data.encoding,
                        report=lambda stage: write_report(stage, reg, data, record, plots, intervals), **kwargs)


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
