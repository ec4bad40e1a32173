"""Parity: the torch module, the TorchScript file and ONNX Runtime must answer alike on the same rows."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from torchport.export.formats import load_torchscript
from torchport.runtime.bundle import TORCHSCRIPT_FILE, load_manifest, read_checked
from torchport.runtime.predictor import Predictor

RANDOM_BATCHES = (1, 7, 4096)
PAIRS = (("torch", "torchscript"), ("torch", "onnxruntime"), ("torchscript", "onnxruntime"))


class ParityError(AssertionError):
    """Two backends disagree beyond the tolerance."""


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


def _random_rows(manifest: dict, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Rows spread around the training features (twice their spread), or standard normal without stats."""
    n = len(manifest["features"])
    stats = (manifest.get("training") or {}).get("feature_stats")
    mean = np.asarray(stats["mean"]) if stats else np.zeros(n)
    std = np.where(np.asarray(stats["std"]) > 0, np.asarray(stats["std"]), 1.0) if stats else np.ones(n)
    return rng.normal(mean, 2 * std, size=(rows, n))


def _compare(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> dict:
    """Max abs/rel difference of a against reference b, and where the worst element is."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    rel = diff / np.maximum(np.abs(b), np.finfo(np.float32).tiny)
    excess = diff - (atol + rtol * np.abs(b))
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.size else ()
    return {"max_abs": float(diff.max(initial=0.0)), "max_rel": float(rel.max(initial=0.0)),
            "passed": bool(np.all(excess <= 0)),
            "worst": {"index": [int(i) for i in worst], "a": float(a[worst]), "b": float(b[worst])}
            if excess.size else None}


def verify_bundle(bundle: str | os.PathLike, X: np.ndarray | None = None, *, atol: float = 1e-5,
                  rtol: float = 1e-4, seed: int = 0) -> dict:
    """Run the training rows (``X`` or the manifest's dataset) and random batches of 1, 7 and 4096 rows
    through torch, TorchScript and ONNX Runtime (CPU); report max abs/rel differences per pair."""
    from torchport.export.bundle_writer import load_module

    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    module = load_module(bundle)
    read_checked(bundle, TORCHSCRIPT_FILE, manifest)
    scripted = load_torchscript(bundle / TORCHSCRIPT_FILE)
    predictor = Predictor(bundle, providers="cpu")

    cases = []
    if X is None:
        X, described = training_rows(manifest)
    else:
        described = f"training data ({len(X)} rows)"
    rng = np.random.default_rng(seed)
    inputs = ([("training data", X)] if X is not None else []) + \
        [(f"random {n} rows", _random_rows(manifest, n, rng)) for n in RANDOM_BATCHES]
    outputs = {name: [] for name in ("torch", "torchscript", "onnxruntime")}
    for label, rows in inputs:
        x32 = np.ascontiguousarray(rows, dtype=np.float32)
        with torch.no_grad():
            outputs["torch"].append(module(torch.from_numpy(x32)).numpy())
            outputs["torchscript"].append(scripted(torch.from_numpy(x32)).numpy())
        outputs["onnxruntime"].append(predictor.predict(x32))
        shapes = {k: v[-1].shape for k, v in outputs.items()}
        if len(set(shapes.values())) != 1:
            raise ParityError(f"{label}: output shapes differ: {shapes}")
        cases.append({"name": label, "rows": int(len(x32))})
    stacked = {k: np.concatenate(v) for k, v in outputs.items()}
    pairs = {f"{a}~{b}": _compare(stacked[b], stacked[a], atol, rtol) for a, b in PAIRS}
    return {"passed": all(p["passed"] for p in pairs.values()), "atol": atol, "rtol": rtol,
            "dtype": "float32", "cases": cases, "training_rows": described,
            "onnxruntime_providers": predictor.providers, "pairs": pairs}


def format_report(report: dict) -> str:
    """One line per pair plus a verdict, for the terminal."""
    rows = sum(c["rows"] for c in report["cases"])
    lines = [f"parity over {rows} rows ({', '.join(c['name'] for c in report['cases'])}), "
             f"atol {report['atol']:g}, rtol {report['rtol']:g}:"]
    for name, p in report["pairs"].items():
        a, b = name.split("~")
        lines.append(f"  max |{a} - {b}| = {p['max_abs']:.3g}   max rel = {p['max_rel']:.3g}   "
                     f"{'ok' if p['passed'] else 'FAIL at ' + str(p['worst'])}")
    lines.append("parity: " + ("PASSED" if report["passed"] else "FAILED"))
    return "\n".join(lines)
