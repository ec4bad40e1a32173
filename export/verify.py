"""Verification: run the same rows through every way a bundle can be run (the torch module from the
checkpoint, TorchScript, the ExportedProgram, the AOTInductor packages, ONNX Runtime through the
Predictor, and in a two-graph bundle each graph on its own) and compare each with torch by the parity
criterion (parity.py). A bundle of a module torchport did not define is compared with its ExportedProgram.
Files this process cannot run (TorchScript a torch cannot load, a package for a GPU or CPU it lacks) are
left out with a note."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnxruntime as ort
from torch import nn

from torchport.export.aoti import PackageCannotRun, load_package
from torchport.export.exported import load_program
from torchport.export.formats import TorchScriptUnavailable, load_module, load_torchscript
from torchport.export.loading import module_runner
from torchport.export.parity import Tolerance, compare
from torchport.export.torch_calls import evaluating
from torchport.runtime.bundle import AOTI_CUDA_FILE, AOTI_FILE, CHECKPOINT_FILE, EXPORTED_FILE, LARGE_BATCH_FILE, \
    ONNX_FILE, TORCHSCRIPT_FILE, Bundle, Manifest, ParityCase, ParityReport
from torchport.runtime.errors import BundleError
from torchport.runtime.predictor import Predictor
from torchport.runtime.sessions import session_options
from torchport.train.datasets import load_dataset
from torchport.train.errors import DataError
from torchport.train.record import FeatureStats, TrainingRecord

# 40000 rows take the Predictor's multi-threaded session for linear models (large_batch_rows is 32768 by
# default; its chunked runs, from 2M rows of one feature, are left to the tests, to keep verify quick for
# wide models) and an MLP's cache-sized chunks shared between threads.
RANDOM_BATCHES = (1, 2, 7, 1001, 4096, 40000)
# In a bundle with two graphs the Predictor runs model.onnx only up to 64 rows (an MLP's folded graph: not
# at all), so each graph also runs every case on its own (a plain session), against torch.
GRAPH_BACKENDS = {ONNX_FILE: "onnxruntime_model", LARGE_BATCH_FILE: "onnxruntime_large_batch"}
Backend = Callable[[np.ndarray], np.ndarray]


def training_record(manifest: Manifest) -> TrainingRecord | None:
    """The manifest's training record, or None for a bundle of a module torchport did not train."""
    if manifest.training is None:
        return None
    try:
        return TrainingRecord.from_json(manifest.training)
    except DataError as e:
        raise BundleError(f"the manifest's training record is malformed: {e}; re-export the bundle") from None


def training_rows(record: TrainingRecord | None) -> tuple[np.ndarray | None, str]:
    """Re-load the training features a record names, if they are still what was trained on."""
    if record is None:
        return None, "no training dataset recorded"
    d = record.dataset
    for where in (d.name, d.source):
        try:
            data = load_dataset(where, d.targets, d.features)
        except (DataError, OSError):
            continue
        if data.fingerprint == d.fingerprint_sha256:
            return data.X, f"{data.source} ({len(data.X)} rows)"
    return None, f"training data {d.source!r} not found unchanged; checked random rows only"


def random_rows(n_features: int, rows: int, rng: np.random.Generator, stats: FeatureStats | None = None) -> np.ndarray:
    """Rows spread around the training features (twice their spread), or standard normal without stats."""
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


def session_backend(session: ort.InferenceSession, input_name: str, output_name: str) -> Backend:
    return lambda x: session.run([output_name], {input_name: x})[0]


def run_cases(backends: dict[str, Backend], pairs: list[tuple[str, str]], cases: list[tuple[str, np.ndarray]],
              n_targets: int, tolerance: Tolerance, problems: list[str], providers: list[str],
              training_rows_text: str | None = None, notes: list[str] | None = None) -> ParityReport:
    """Run every case through every backend; check shapes and dtypes, compare each pair's stacked answers."""
    outputs: dict[str, list[np.ndarray]] = {b: [] for b in backends}
    labels: list[tuple[str, int]] = []
    for label, rows in cases:
        x32 = np.ascontiguousarray(rows, dtype=np.float32)
        for backend, run in backends.items():
            out = np.asarray(run(x32))
            if out.shape != (len(x32), n_targets) or out.dtype != np.float32:
                problems.append(f"{label}: {backend} returned {out.dtype}{list(out.shape)}, expected "
                                f"float32[{len(x32)}, {n_targets}]")
            outputs[backend].append(out.reshape(len(x32), -1).astype(np.float32))
        labels += [(label, i) for i in range(len(x32))]
    stacked = {k: np.concatenate(v) for k, v in outputs.items()}
    results = tuple(compare(a, b, stacked[a], stacked[b], labels, tolerance)
                    for a, b in pairs if stacked[a].shape == stacked[b].shape)
    return ParityReport(not problems and all(p.passed for p in results), tolerance.atol, tolerance.rtol, "float32",
                        tuple(ParityCase(label, int(len(rows))) for label, rows in cases), tuple(providers),
                        results, tuple(problems), training_rows_text, tuple(notes or ()))


@dataclass
class Backends:
    """Every way to run one bundle, the pairs to compare, and what was found before running any: problems
    (names, unloadable graphs) and notes (files left out, with why)."""
    backends: dict[str, Backend] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)


def torch_side(bundle: Bundle, module: nn.Module | None = None) -> tuple[dict[str, Backend], list[str]]:
    """The bundle's torch-side backends, the reference first: ``module`` (or the checkpoint's module) as
    "torch", else the ExportedProgram; then the ExportedProgram, TorchScript, the AOTInductor packages.
    Returns them and notes on files left out. Every file is read (and its sha256 checked) first, so a
    tampered file is an error, never a note."""
    backends: dict[str, Backend] = {}
    notes: list[str] = []
    if module is not None or bundle.has(CHECKPOINT_FILE):
        backends["torch"] = module_runner(evaluating(module if module is not None else load_module(bundle)))
    if bundle.has(EXPORTED_FILE):
        program = load_program(bundle.read(EXPORTED_FILE), str(bundle.path / EXPORTED_FILE))
        backends["exported"] = module_runner(program.module())
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
    if not backends:
        raise BundleError(f"{bundle.path} holds neither {CHECKPOINT_FILE} nor {EXPORTED_FILE}: nothing to "
                          "compare its ONNX graph with; re-export the bundle")
    return backends, notes


def bundle_backends(bundle: Bundle, module: nn.Module | None = None) -> Backends:
    """Every backend of ``bundle`` and the pairs to compare: each against the reference (the first
    torch-side backend), and TorchScript against ONNX Runtime."""
    m = bundle.manifest
    features, targets = list(m.features), list(m.targets)
    torch_backends, notes = torch_side(bundle, module)
    out = Backends(dict(torch_backends), notes=notes)
    reference = next(iter(torch_backends))
    predictor = Predictor(bundle, providers="cpu")
    out.providers = predictor.providers
    out.backends["onnxruntime"] = predictor.predict
    out.pairs = [(reference, b) for b in torch_backends if b != reference] + [(reference, "onnxruntime")]
    if "torchscript" in torch_backends and reference != "torchscript":
        out.pairs.append(("torchscript", "onnxruntime"))
    out.problems = check_names(predictor._session, features, targets, m.input.name, m.output.name)
    if bundle.has(LARGE_BATCH_FILE):
        for name, backend in GRAPH_BACKENDS.items():
            session = graph_session(bundle.read(name), str(bundle.path / name))
            found = check_names(session, features, targets, m.input.name, m.output.name, name)
            if found:  # a graph with other input/output names cannot be run by name: reported, not run
                out.problems += found if name != ONNX_FILE else []
                continue
            out.backends[backend] = session_backend(session, m.input.name, m.output.name)
            out.pairs.append((reference, backend))
    return out


def verify_bundle(bundle: str | os.PathLike | Bundle, X: np.ndarray | None = None, *,
                  tolerance: Tolerance = Tolerance(), seed: int = 0, module: nn.Module | None = None) -> ParityReport:
    """Run the training rows (``X`` or the manifest's dataset) and random batches of 1, 2, 7, 1001, 4096 and
    40000 rows through every format of the bundle (bundle_backends) and compare them with the reference:
    ``module`` when given, else the torch module from the checkpoint, else the ExportedProgram. Each file
    is loaded from the bytes its sha256 was checked on."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    m = bundle.manifest
    found = bundle_backends(bundle, module)
    record = training_record(m)
    described = f"training data ({len(X)} rows)" if X is not None else None
    if X is None:
        X, described = training_rows(record)
    rng = np.random.default_rng(seed)
    stats = record.feature_stats if record else None
    cases = ([("training data", X)] if X is not None else []) + \
        [(f"random {k} rows", random_rows(len(m.features), k, rng, stats)) for k in RANDOM_BATCHES]
    return run_cases(found.backends, found.pairs, cases, len(m.targets), tolerance, found.problems, found.providers,
                     described, found.notes)
