"""Parity: the torch module, the TorchScript file and ONNX Runtime must answer alike on the same rows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from torchport.export.formats import load_torchscript
from torchport.runtime.bundle import (LARGE_BATCH_FILE, ONNX_FILE, TORCHSCRIPT_FILE, BundleError, load_manifest,
                                      read_checked)
from torchport.runtime.predictor import Predictor

# 40000 rows take the Predictor's multi-threaded session (large_batch_rows is 32768 by default); its chunked
# runs (from 2M rows of one feature) are left to the tests, to keep verify quick for wide models.
RANDOM_BATCHES = (1, 7, 4096, 40000)
BACKENDS = ("torch", "torchscript", "onnxruntime")
PAIRS = (("torch", "torchscript"), ("torch", "onnxruntime"), ("torchscript", "onnxruntime"))
# In a bundle with two graphs the Predictor ("onnxruntime") runs model.onnx only up to 64 rows, so each
# graph also runs every case on its own (a plain session), against torch.
GRAPH_BACKENDS = {ONNX_FILE: "onnxruntime_model", LARGE_BATCH_FILE: "onnxruntime_large_batch"}


class ParityError(AssertionError):
    """Backends disagree: in names, shapes, dtypes, or values beyond the tolerance."""


def training_rows(manifest: dict) -> tuple[np.ndarray | None, str]:
    """Re-load the training features named in the manifest, if they are still what was trained on."""
    from torchport.train.datasets import DataError, load_dataset

    record = (manifest.get("training") or {}).get("dataset")
    if not record:
        return None, "no training dataset recorded"
    for where in (record.get("name"), record.get("source")):
        try:
            data = load_dataset(where, record["targets"], record["features"])
        except (DataError, KeyError, TypeError, OSError):
            continue
        if data.fingerprint == record.get("fingerprint_sha256"):
            return data.X, f"{data.source} ({len(data.X)} rows)"
    return None, f"training data {record.get('source')!r} not found unchanged; checked random rows only"


def random_rows(n_features: int, rows: int, rng: np.random.Generator, stats: dict | None = None) -> np.ndarray:
    """Rows spread around the training features (twice their spread), or standard normal without stats."""
    mean = np.asarray(stats["mean"]) if stats else np.zeros(n_features)
    std = np.where(np.asarray(stats["std"]) > 0, np.asarray(stats["std"]), 1.0) if stats else np.ones(n_features)
    return rng.normal(mean, 2 * std, size=(rows, n_features))


def _compare(a: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> dict:
    """Max abs/rel difference of ``a`` against ``ref`` and the element that is furthest out of tolerance."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(a - ref)
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    excess = diff - (atol + rtol * np.abs(ref))
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    return {"max_abs": float(diff.max()), "max_rel": float(rel.max()),
            "max_scaled": float((diff / np.maximum(1.0, np.abs(ref))).max()),
            "passed": bool(np.all(excess <= 0)),
            "worst": {"row": int(worst[0]), "column": int(worst[1]), "a": float(a[worst]),
                      "reference": float(ref[worst]), "abs": float(diff[worst]), "rel": float(rel[worst])}}


def check_names(session: ort.InferenceSession, features: list[str], targets: list[str],
                input_name: str, output_name: str, graph: str = ONNX_FILE) -> list[str]:
    """Problems with a graph's input/output names and the feature/target names it carries in its metadata
    (none: an empty list)."""
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
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for invalid models
        raise BundleError(f"{name} is not a model ONNX Runtime can load: {e}") from None


def compare_backends(module: nn.Module, scripted: torch.jit.ScriptModule, predictor: Predictor,
                     cases: list[tuple[str, np.ndarray]], features: list[str], targets: list[str], *,
                     atol: float = 1e-5, rtol: float = 1e-4,
                     graphs: dict[str, ort.InferenceSession] | None = None) -> dict:
    """Run every case through the three backends and through each of ``graphs`` (file name -> plain
    session, run on its own as GRAPH_BACKENDS names it); check names, shapes and dtypes, compare values
    per pair (every graph against torch)."""
    n_targets = len(targets)
    graphs = graphs or {}
    problems = check_names(predictor._session, features, targets, predictor.input_name, predictor.output_name)
    for name, session in graphs.items():
        if name != ONNX_FILE:
            problems += check_names(session, features, targets, predictor.input_name, predictor.output_name, name)
    # a graph with other input/output names cannot be run by name: reported above, not run
    extra = {} if problems else {GRAPH_BACKENDS[name]: session for name, session in graphs.items()}
    backends, pairs_checked = BACKENDS + tuple(extra), PAIRS + tuple(("torch", b) for b in extra)
    outputs: dict[str, list[np.ndarray]] = {b: [] for b in backends}
    labels = []
    for label, rows in cases:
        x32 = np.ascontiguousarray(rows, dtype=np.float32)
        with torch.no_grad():
            got = {"torch": module(torch.from_numpy(x32)).numpy(),
                   "torchscript": scripted(torch.from_numpy(x32)).numpy(),
                   "onnxruntime": predictor.predict(x32)}
        for backend, session in extra.items():
            got[backend] = session.run([predictor.output_name], {predictor.input_name: x32})[0]
        for backend, out in got.items():
            if out.shape != (len(x32), n_targets) or out.dtype != np.float32:
                problems.append(f"{label}: {backend} returned {out.dtype}{list(out.shape)}, expected "
                                f"float32[{len(x32)}, {n_targets}]")
            outputs[backend].append(out.reshape(len(x32), -1).astype(np.float32))
        labels += [(label, i) for i in range(len(x32))]
    stacked = {k: np.concatenate(v) for k, v in outputs.items()}
    pairs = {}
    for a, b in pairs_checked:
        if stacked[a].shape != stacked[b].shape:
            continue
        p = _compare(stacked[b], stacked[a], atol, rtol)
        p["worst"]["case"], p["worst"]["row"] = labels[p["worst"]["row"]]
        pairs[f"{a}~{b}"] = p
    return {"passed": not problems and all(p["passed"] for p in pairs.values()), "problems": problems,
            "atol": atol, "rtol": rtol, "dtype": "float32",
            "cases": [{"name": label, "rows": int(len(rows))} for label, rows in cases],
            "onnxruntime_providers": predictor.providers, "pairs": pairs}


def verify_bundle(bundle: str | os.PathLike, X: np.ndarray | None = None, *, atol: float = 1e-5,
                  rtol: float = 1e-4, seed: int = 0) -> dict:
    """Run the training rows (``X`` or the manifest's dataset) and random batches of 1, 7, 4096 and 40000
    rows through torch (from the checkpoint), TorchScript and ONNX Runtime (CPU: the Predictor, and, when
    the bundle has two graphs, each graph on its own); report per-pair differences."""
    from torchport.export.bundle_writer import load_module

    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    module = load_module(bundle)
    read_checked(bundle, TORCHSCRIPT_FILE, manifest)
    scripted = load_torchscript(bundle / TORCHSCRIPT_FILE)
    predictor = Predictor(bundle, providers="cpu")
    graphs = {}
    if LARGE_BATCH_FILE in manifest["files"]:
        graphs = {name: graph_session(read_checked(bundle, name, manifest), str(bundle / name))
                  for name in (ONNX_FILE, LARGE_BATCH_FILE)}
    described = f"training data ({len(X)} rows)" if X is not None else None
    if X is None:
        X, described = training_rows(manifest)
    rng = np.random.default_rng(seed)
    stats = (manifest.get("training") or {}).get("feature_stats")
    n = len(manifest["features"])
    cases = ([("training data", X)] if X is not None else []) + \
        [(f"random {k} rows", random_rows(n, k, rng, stats)) for k in RANDOM_BATCHES]
    report = compare_backends(module, scripted, predictor, cases, manifest["features"], manifest["targets"],
                              atol=atol, rtol=rtol, graphs=graphs)
    report["training_rows"] = described
    return report


def describe_worst(name: str, p: dict) -> str:
    """The worst element of one pair, in words."""
    a, b = name.split("~")
    w = p["worst"]
    return (f"{a} vs {b}: worst element at row {w['row']}, column {w['column']} of {w['case']!r}: "
            f"{a} {w['reference']:.9g}, {b} {w['a']:.9g}, abs error {w['abs']:.3g}, rel error {w['rel']:.3g}")


def format_report(report: dict) -> str:
    """One line per pair plus a verdict, for the terminal."""
    rows = sum(c["rows"] for c in report["cases"])
    lines = [f"parity over {rows} rows ({', '.join(c['name'] for c in report['cases'])}), "
             f"atol {report['atol']:g}, rtol {report['rtol']:g}:"]
    for name, p in report["pairs"].items():
        a, b = name.split("~")
        lines.append(f"  max |{a} - {b}| = {p['max_abs']:.3g}   max rel = {p['max_rel']:.3g}   "
                     f"{'ok' if p['passed'] else 'FAIL: ' + describe_worst(name, p)}")
    lines += [f"  {problem}" for problem in report.get("problems", [])]
    lines.append("parity: " + ("PASSED" if report["passed"] else "FAILED"))
    return "\n".join(lines)
