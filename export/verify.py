"""Verification: run the same rows through every way a bundle can be run (the torch module from the
checkpoint, TorchScript, the ExportedProgram, the AOTInductor packages, ONNX Runtime through the
Predictor, and in a two-graph bundle each graph on its own) and compare each with a float64 run of the
same module by the parity criterion (parity.py); a few hundred of those rows, with their float64 answers
and the bound, become the bundle's golden cases. A bundle of a module torchport did not define is run in
float64 from its ExportedProgram. Files this process cannot run (TorchScript a torch cannot load, a
package for a GPU or CPU it lacks) are left out with a note."""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from torchport.export.aoti import PackageCannotRun, load_package
from torchport.train.datasets import load_dataset
from torchport.export.exported import load_program
from torchport.export.formats import TorchScriptUnavailable, load_module, load_torchscript
from torchport.export.loading import module_runner
from torchport.export.parity import EPS32, EPS64, EPS_RATIO, REFERENCE, Tolerance, column_errors, compare_all
from torchport.export.torch_calls import evaluating
from torchport.runtime.bundle import AOTI_CUDA_FILE, AOTI_FILE, CHECKPOINT_FILE, EXPORTED_FILE, LARGE_BATCH_FILE, \
    ONNX_FILE, THREADED_FILE, TORCHSCRIPT_FILE, Bundle, Manifest, ParityCase, ParityReport
from torchport.runtime.encoding import CATEGORICAL, Encoding
from torchport.runtime.errors import BundleError, DataError
from torchport.runtime.golden import Golden
from torchport.runtime.predictor import Predictor
from torchport.runtime.sessions import session_options
from torchport.train.record import FeatureStats, TrainingRecord

# 40000 rows take the Predictor's multi-threaded session for linear models (large_batch_rows is 32768 by
# default; its chunked runs, from 2M rows of one feature, are left to the tests, to keep verify quick for
# wide models) and an MLP's cache-sized chunks shared between threads.
RANDOM_BATCHES = (1, 2, 7, 1001, 4096, 40000)
# In a bundle with two graphs the Predictor runs model.onnx only up to 64 rows (an MLP's folded graph: not
# at all), so each graph also runs every case on its own (a plain session), against the float64 answers.
GRAPH_BACKENDS = {ONNX_FILE: "onnxruntime_model", LARGE_BATCH_FILE: "onnxruntime_large_batch",
                  THREADED_FILE: "onnxruntime_threaded"}
GOLDEN_ROWS = 256  # rows kept as golden cases: up to half from the training rows, the rest from random batches
# float32 torch's rounding is measured on at least this many rows: fewer (a one-row check) are joined by
# copies jittered by 1e-3 of their value, which round like them, so that one lucky row cannot set the scale.
SCALE_ROWS = 1024
Backend = Callable[[np.ndarray], np.ndarray]


def training_record(manifest: Manifest) -> TrainingRecord | None:
    """The manifest's training record, or None for a bundle of a module torchport did not train."""
    if manifest.training is None:
        return None
    try:
        return TrainingRecord.from_json(manifest.training)
    except DataError as e:
        raise BundleError(f"the manifest's training record is malformed: {e}; re-export the bundle") from None


def training_rows(record: TrainingRecord | None, encoding: Encoding | None = None) -> tuple[np.ndarray | None, str]:
    """Re-load the training features a record names, if they are still what was trained on (with an
    encoding: the raw columns, encoded as recorded, as the graph takes them)."""
    if record is None:
        return None, "no training dataset recorded"
    d = record.dataset
    for where in (d.name, d.source):
        try:
            if encoding is None:
                data = load_dataset(where, d.targets, d.features)
            else:
                imputed = [c.impute for c in encoding.columns if c.impute]
                data = load_dataset(where, d.targets, encoding.features, categorical=encoding.categorical,
                                    impute=imputed[0] if imputed else None, coding=encoding.coding,
                                    missing_indicator=any(c.indicator for c in encoding.columns))
        except (DataError, OSError):
            continue
        if data.fingerprint == d.fingerprint_sha256:
            return data.inputs, f"{data.source} ({len(data.X)} rows)"
    return None, f"training data {d.source!r} not found unchanged; checked random rows only"


def random_rows(n_features: int, rows: int, rng: np.random.Generator, stats: FeatureStats | None = None,
                encoding: Encoding | None = None) -> np.ndarray:
    """Rows spread around the training features (twice their spread), or standard normal without stats. With
    an encoding (whose ``stats`` are the design's): numeric columns so, categorical ones uniform over their
    level codes, and about one cell in ten missing in each imputed column."""
    if encoding is not None:
        names = encoding.design_names()
        out = np.empty((rows, n_features))
        for j, column in enumerate(encoding.columns):
            if column.kind == CATEGORICAL:
                out[:, j] = rng.integers(0, len(column.levels), rows)
            else:
                k = names.index(column.name)
                std = stats.std[k] if stats and stats.std[k] > 0 else 1.0
                out[:, j] = rng.normal(stats.mean[k] if stats else 0.0, 2 * std, rows)
            if column.impute is not None:
                out[rng.random(rows) < 0.1, j] = np.nan
        return out
    mean = np.asarray(stats.mean) if stats else np.zeros(n_features)
    std = np.where(np.asarray(stats.std) > 0, np.asarray(stats.std), 1.0) if stats else np.ones(n_features)
    return rng.normal(mean, 2 * std, size=(rows, n_features))


def check_names(session: ort.InferenceSession, features: list[str], targets: list[str], input_name: str,
                output_name: str, graph: str = ONNX_FILE) -> list[str]:
    """Problems with a graph's input/output names and the feature/target names in its metadata (none: [])."""
    meta = session.get_modelmeta().custom_metadata_map
    problems = []
    for key, expected in (("torchport.features", list(features)), ("torchport.targets", list(targets))):
        found = json.loads(meta[key]) if key in meta else None
        if found != expected:
            problems.append(f"{graph}: ONNX metadata {key} is {found}, expected {expected}")
    inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if inputs != [input_name] or outputs[:1] != [output_name]:
        problems.append(f"{graph}: inputs {inputs} and outputs {outputs}, expected [{input_name!r}] and "
                        f"[{output_name!r}]")
    return problems


def graph_session(graph: bytes, name: str) -> ort.InferenceSession:
    """A plain one-thread CPU session over one graph's bytes; a graph ONNX Runtime refuses is a BundleError."""
    try:
        return ort.InferenceSession(graph, session_options(1, tuned=False), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for invalid models
        raise BundleError(f"{name} is not a model ONNX Runtime can load: {e}") from None


def float64_backend(module: nn.Module) -> Backend:
    """A float64 copy of a torch module (or of an ExportedProgram's module), run on the float32 rows as
    float64: the reference answers."""
    wide = copy.deepcopy(module).double()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wide(torch.from_numpy(np.asarray(x, np.float64))).numpy()
    return run


def float32_shadow(module: nn.Module) -> Backend:
    """A float32 copy of a float64 module, run on the rows rounded to float32: the same computation rounded at
    float32, whose distance from the float64 run (times EPS_RATIO) sets a float64 bundle's rounding scale."""
    narrow = copy.deepcopy(module).float()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return narrow(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
    return run


def session_backend(session: ort.InferenceSession, input_name: str, output_name: str) -> Backend:
    return lambda x: session.run([output_name], {input_name: x})[0]


@dataclass
class Backends:
    """Every way to run one bundle in float32, the float64 reference, the backend whose error sets the
    scale of rounding (``scale``: float32 torch, or the ExportedProgram for a module torchport did not
    define), and what was found before running any: problems (names, unloadable graphs) and notes (files
    left out, with why), and ``offset``: per target, the magnitude of the constant the module's target
    scaling adds last (None for a module without one), whose rounding an answer near zero still carries.
    ``dtype``: what the backends take and answer; in a float64 bundle ``scale_run`` is the float32 shadow of
    the torch module (float32_shadow), its error taken times ``scale_factor`` (EPS_RATIO) as the scale."""
    backends: dict[str, Backend] = field(default_factory=dict)
    reference: Backend | None = None
    scale: str = "torch"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    offset: np.ndarray | None = None
    dtype: np.dtype = np.dtype(np.float32)
    scale_run: Backend | None = None
    scale_factor: float = 1.0


def torch_side(bundle: Bundle, module: nn.Module | None = None) -> tuple[dict[str, Backend], nn.Module, list[str]]:
    """The bundle's torch-side backends, the scale first: ``module`` (or the checkpoint's module) as
    "torch", else the ExportedProgram; then the ExportedProgram, TorchScript, the AOTInductor packages.
    Returns them, the module the float64 reference is made from, and notes on files left out. Every file is
    read (and its sha256 checked) first, so a tampered file is an error, never a note."""
    backends: dict[str, Backend] = {}
    notes: list[str] = []
    source = None
    if module is not None or bundle.has(CHECKPOINT_FILE):
        source = evaluating(module if module is not None else load_module(bundle))
        backends["torch"] = module_runner(source)
    if bundle.has(EXPORTED_FILE):
        program = load_program(bundle.read(EXPORTED_FILE), str(bundle.path / EXPORTED_FILE)).module()
        backends["exported"] = module_runner(program)
        source = program if source is None else source
    if bundle.has(TORCHSCRIPT_FILE):
        try:
            backends["torchscript"] = module_runner(load_torchscript(bundle.read(TORCHSCRIPT_FILE)))
        except TorchScriptUnavailable as e:
            notes.append(f"{TORCHSCRIPT_FILE} not run: {e}")
    for name, backend, device in ((AOTI_FILE, "aoti", "cpu"), (AOTI_CUDA_FILE, "aoti_cuda", "cuda")):
        if bundle.has(name):
            try:
                backends[backend] = module_runner(load_package(bundle, name), device)
            except PackageCannotRun as e:
                notes.append(f"{name} not run: {e}")
    if source is None:
        raise BundleError(f"{bundle.path} holds neither {CHECKPOINT_FILE} nor {EXPORTED_FILE}: nothing to "
                          "compare its ONNX graph with; re-export the bundle")
    return backends, source, notes


def bundle_backends(bundle: Bundle, module: nn.Module | None = None) -> Backends:
    """Every backend of ``bundle``, each to be compared with the float64 run of its torch module (``module``,
    else the checkpoint's, else the ExportedProgram's)."""
    m = bundle.manifest
    features, targets = list(m.features), list(m.targets)
    torch_backends, source, notes = torch_side(bundle, module)
    out = Backends(dict(torch_backends), float64_backend(source), next(iter(torch_backends)), notes=notes,
                   dtype=np.dtype(m.dtype))
    if m.dtype == "float64":
        out.scale_run, out.scale_factor = float32_shadow(source), EPS_RATIO
    scale_out = getattr(source, "scale_out", None)
    if scale_out is not None:
        out.offset = np.abs(scale_out.mean.detach().double().cpu().numpy()).reshape(-1)
    predictor = Predictor(bundle, providers="cpu", allow_failed_parity=True)
    out.providers = predictor.providers
    out.backends["onnxruntime"] = predictor.predict
    out.problems = check_names(predictor.engine.first_session, features, targets, m.input.name, m.output.name)
    if bundle.has(LARGE_BATCH_FILE) or bundle.has(THREADED_FILE):
        for name, backend in [(n, b) for n, b in GRAPH_BACKENDS.items() if bundle.has(n)]:
            session = graph_session(bundle.read(name), str(bundle.path / name))
            found = check_names(session, features, targets, m.input.name, m.output.name, name)
            if found:  # a graph with other input/output names cannot be run by name: reported, not run
                out.problems += found if name != ONNX_FILE else []
                continue
            out.backends[backend] = session_backend(session, m.input.name, m.output.name)
    return out


def run_cases(found: Backends, cases: list[tuple[str, np.ndarray]], n_targets: int, tolerance: Tolerance,
              training_rows_text: str | None = None) -> tuple[ParityReport, Golden]:
    """Run every case through every backend (in the bundle's dtype) and the float64 reference; check shapes
    and dtypes and compare each backend's stacked answers with the reference's. Returns the report and up to GOLDEN_ROWS
    of the rows with their float64 answers."""
    backends, reference, problems = found.backends, found.reference, list(found.problems)
    outputs: dict[str, list[np.ndarray]] = {b: [] for b in backends}
    answers, inputs, labels = [], [], []
    dtype = found.dtype
    for label, rows in cases:
        xd = np.ascontiguousarray(rows, dtype=dtype)
        for backend, run in backends.items():
            out = np.asarray(run(xd))
            if out.dtype != dtype or out.shape not in ((len(xd), n_targets), (len(xd),)):
                problems.append(f"{label}: {backend} returned {out.dtype}{list(out.shape)}, expected "
                                f"{dtype}[{len(xd)}, {n_targets}]")
            outputs[backend].append(out.reshape(len(xd), -1).astype(dtype))
        answers.append(np.asarray(reference(xd), np.float64).reshape(len(xd), n_targets))
        inputs.append(xd)
        labels += [(label, i) for i in range(len(xd))]
    stacked = {k: np.concatenate(v) for k, v in outputs.items()}
    truth = np.concatenate(answers)
    x = np.concatenate(inputs)
    scale_run = found.scale_run or backends[found.scale]
    torch_error = column_errors(stacked[found.scale] if found.scale_run is None else
                                np.asarray(scale_run(x)).reshape(len(x), -1), truth)
    if 0 < len(x) < SCALE_ROWS:
        jittered = (np.repeat(x, -(-SCALE_ROWS // len(x)), axis=0) *
                    (1 + 1e-3 * np.random.default_rng(0).standard_normal((len(x) * -(-SCALE_ROWS // len(x)),
                                                                          x.shape[1])))).astype(dtype)
        extra = column_errors(np.asarray(scale_run(jittered)).reshape(len(jittered), -1),
                              np.asarray(reference(jittered)).reshape(len(jittered), -1))
        torch_error = np.maximum(torch_error, extra)
    torch_error = torch_error * found.scale_factor
    eps = EPS64 if dtype == np.float64 else EPS32
    results, torch_error, bound = compare_all(stacked, truth, labels, tolerance, torch_error, found.offset, eps)
    report = ParityReport(not problems and all(p.passed for p in results), tolerance.atol, tolerance.rtol,
                          str(dtype), tuple(ParityCase(label, int(len(rows))) for label, rows in cases),
                          tuple(found.providers), tuple(results), tuple(problems), training_rows_text,
                          criterion=tolerance.describe(str(dtype)), reference=REFERENCE,
                          multiple=None if tolerance.fixed else tolerance.multiple,
                          floor_ulps=None if tolerance.fixed else tolerance.floor_ulps,
                          torch_error=tuple(float(e) for e in torch_error), bound=tuple(float(b) for b in bound),
                          notes=tuple(found.notes))
    return report, _golden(cases, x, truth, bound)


def _golden(cases: list[tuple[str, np.ndarray]], inputs: np.ndarray, answers: np.ndarray,
            bound: np.ndarray) -> Golden:
    """Up to GOLDEN_ROWS rows: evenly spread over the first case (the training rows, when there are any) for
    up to half of them, then over the rest."""
    first = len(cases[0][1]) if cases else 0
    half = min(first, GOLDEN_ROWS // 2)
    picks = [np.linspace(0, first - 1, half).round().astype(int)] if half else []
    rest = min(len(inputs) - first, GOLDEN_ROWS - half)
    if rest > 0:
        picks.append(first + np.linspace(0, len(inputs) - first - 1, rest).round().astype(int))
    rows = np.unique(np.concatenate(picks)) if picks else np.arange(0)
    return Golden(inputs[rows], answers[rows], bound)


def verify_bundle(bundle: str | os.PathLike | Bundle, X: np.ndarray | None = None, *,
                  tolerance: Tolerance = Tolerance(), seed: int = 0, module: nn.Module | None = None) -> ParityReport:
    """Run the training rows (``X`` or the manifest's dataset) and random batches of 1, 2, 7, 1001, 4096 and
    40000 rows through every format of the bundle (bundle_backends) and compare each with the same module
    run in float64: ``module`` when given, else the torch module from the checkpoint, else the
    ExportedProgram's. Each file is loaded from the bytes its sha256 was checked on."""
    return verify_with_golden(bundle, X, tolerance=tolerance, seed=seed, module=module)[0]


def verify_with_golden(bundle: str | os.PathLike | Bundle, X: np.ndarray | None = None, *,
                       tolerance: Tolerance = Tolerance(), seed: int = 0,
                       module: nn.Module | None = None) -> tuple[ParityReport, Golden]:
    """verify_bundle's report, and the golden cases its run gives."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    m = bundle.manifest
    found = bundle_backends(bundle, module)
    record = training_record(m)
    described = f"training data ({len(X)} rows)" if X is not None else None
    if X is None:
        X, described = training_rows(record, m.encoding)
    rng = np.random.default_rng(seed)
    stats = record.feature_stats if record else None
    cases = ([("training data", X)] if X is not None else []) + \
        [(f"random {k} rows", random_rows(len(m.features), k, rng, stats, m.encoding)) for k in RANDOM_BATCHES]
    return run_cases(found, cases, len(m.targets), tolerance, described)
