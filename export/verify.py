"""Verification: run the same rows through every way a bundle can be run (the torch module from the
checkpoint, TorchScript, ONNX Runtime through the Predictor, and in a two-graph bundle each graph on its
own) and compare each with torch by the parity criterion (parity.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from torchport.export.formats import load_module, load_torchscript
from torchport.export.parity import Tolerance, compare
from torchport.runtime.bundle import LARGE_BATCH_FILE, ONNX_FILE, TORCHSCRIPT_FILE, Bundle, Manifest, ParityCase, \
    ParityReport
from torchport.runtime.errors import BundleError
from torchport.runtime.predictor import Predictor
from torchport.runtime.sessions import session_options
from torchport.train.datasets import load_dataset
from torchport.train.errors import DataError
from torchport.train.record import FeatureStats, TrainingRecord

# 40000 rows take the Predictor's multi-threaded session (large_batch_rows is 32768 by default); its chunked
# runs (from 2M rows of one feature) are left to the tests, to keep verify quick for wide models.
RANDOM_BATCHES = (1, 7, 4096, 40000)
# In a bundle with two graphs the Predictor runs model.onnx only up to 64 rows, so each graph also runs
# every case on its own (a plain session), against torch.
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


def torch_backend(module: nn.Module) -> Backend:
    """A torch module (eager or TorchScript) as numpy rows in, numpy rows out."""
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return run


def session_backend(session: ort.InferenceSession, input_name: str, output_name: str) -> Backend:
    return lambda x: session.run([output_name], {input_name: x})[0]


def run_cases(backends: dict[str, Backend], pairs: list[tuple[str, str]], cases: list[tuple[str, np.ndarray]],
              n_targets: int, tolerance: Tolerance, problems: list[str], providers: list[str],
              training_rows_text: str | None = None) -> ParityReport:
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
                        results, tuple(problems), training_rows_text)


def verify_bundle(bundle: str | os.PathLike | Bundle, X: np.ndarray | None = None, *,
                  tolerance: Tolerance = Tolerance(), seed: int = 0) -> ParityReport:
    """Run the training rows (``X`` or the manifest's dataset) and random batches of 1, 7, 4096 and 40000
    rows through torch (from the checkpoint), TorchScript and ONNX Runtime (the Predictor on the CPU, and
    in a two-graph bundle each graph on its own); each file is loaded from the bytes its sha256 was
    checked on."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    m = bundle.manifest
    features, targets = list(m.features), list(m.targets)
    predictor = Predictor(bundle, providers="cpu")
    backends = {"torch": torch_backend(load_module(bundle))}
    pairs = []
    if bundle.has(TORCHSCRIPT_FILE):
        backends["torchscript"] = torch_backend(load_torchscript(bundle.read(TORCHSCRIPT_FILE)))
        pairs.append(("torch", "torchscript"))
    backends["onnxruntime"] = predictor.predict
    pairs.append(("torch", "onnxruntime"))
    if "torchscript" in backends:
        pairs.append(("torchscript", "onnxruntime"))
    problems = check_names(predictor._session, features, targets, m.input.name, m.output.name)
    if bundle.has(LARGE_BATCH_FILE):
        for name, backend in GRAPH_BACKENDS.items():
            session = graph_session(bundle.read(name), str(bundle.path / name))
            found = check_names(session, features, targets, m.input.name, m.output.name, name)
            if found:  # a graph with other input/output names cannot be run by name: reported, not run
                problems += found if name != ONNX_FILE else []
                continue
            backends[backend] = session_backend(session, m.input.name, m.output.name)
            pairs.append(("torch", backend))
    record = training_record(m)
    described = f"training data ({len(X)} rows)" if X is not None else None
    if X is None:
        X, described = training_rows(record)
    rng = np.random.default_rng(seed)
    stats = record.feature_stats if record else None
    cases = ([("training data", X)] if X is not None else []) + \
        [(f"random {k} rows", random_rows(len(features), k, rng, stats)) for k in RANDOM_BATCHES]
    return run_cases(backends, pairs, cases, len(targets), tolerance, problems, predictor.providers, described)


def module_parity(module: nn.Module, inputs: np.ndarray, features: list[str], targets: list[str],
                  onnx_path: Path, torchscript_path: Path, large_batch_path: Path | None,
                  tolerance: Tolerance) -> ParityReport:
    """Parity of a module against its exported files (written by the caller) on ``inputs``."""
    predictor = Predictor(onnx_path, providers="cpu")
    backends = {"torch": torch_backend(module.eval()),
                "torchscript": torch_backend(load_torchscript(torchscript_path.read_bytes())),
                "onnxruntime": predictor.predict}
    pairs = [("torch", "torchscript"), ("torch", "onnxruntime"), ("torchscript", "onnxruntime")]
    problems = check_names(predictor._session, features, targets, predictor.input_name, predictor.output_name)
    if large_batch_path is not None:
        session = graph_session(large_batch_path.read_bytes(), str(large_batch_path))
        problems += check_names(session, features, targets, predictor.input_name, predictor.output_name,
                                LARGE_BATCH_FILE)
        backends["onnxruntime_large_batch"] = session_backend(session, predictor.input_name, predictor.output_name)
        pairs.append(("torch", "onnxruntime_large_batch"))
    return run_cases(backends, pairs, [("inputs", inputs)], len(targets), tolerance, problems, predictor.providers)
