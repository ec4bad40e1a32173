"""Measure every backend of a bundle at each batch size: warm-up, then interleaved rounds (the backends'
order rotates each round) of individually timed calls, so load on the machine hits every backend alike."""
from __future__ import annotations

import gc
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from torchport.export.bench_backends import Backend, BundleBackends, build_backends, cuda_status
from torchport.export.verify import random_rows
from torchport.runtime.machine import cpu_description, physical_cores

DEFAULT_BATCH_SIZES = (1, 8, 64, 512, 4096, 65536, 1 << 20)


@dataclass(frozen=True)
class Plan:
    """How long to measure: per (model, batch size) cell, the time budget, warm-up and minimum rounds."""
    seconds_per_cell: float = 3.0
    warmup_s: float = 0.2
    min_rounds: int = 5
    target_rounds: int = 10


QUICK = Plan(seconds_per_cell=0.15, warmup_s=0.01, min_rounds=2, target_rounds=3)


def gpu_description() -> list[dict]:
    """Name, memory and driver of each NVIDIA GPU (from torch and nvidia-smi), empty without one."""
    gpus = []
    if torch.cuda.is_available():
        gpus = [{"name": torch.cuda.get_device_name(i), "cuda_runtime": torch.version.cuda,
                 "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                for i in range(torch.cuda.device_count())]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            out = []
        for i, line in enumerate(out):
            name, _, driver = line.partition(",")
            if i < len(gpus):
                gpus[i]["driver"] = driver.strip()
            else:
                gpus.append({"name": name.strip(), "driver": driver.strip()})
    return gpus


def environment(threads: dict) -> dict:
    """Versions, CPU and GPU, and the thread settings the run used: what a reader needs to compare runs."""
    import threadpoolctl
    blas = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
            for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    return {"python": platform.python_version(), "platform": platform.platform(),
            "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
            "onnxruntime_providers": ort.get_available_providers(), "cpu": cpu_description(),
            "gpus": gpu_description(), "cuda": cuda_status(), "numpy_blas": blas, "threads": threads}


def _one_call_seconds(backend: Backend, x: np.ndarray) -> float:
    t0 = time.perf_counter_ns()
    backend.call(x)
    return (time.perf_counter_ns() - t0) * 1e-9


def measure_cell(backends: list[Backend], x: np.ndarray, plan: Plan) -> tuple[list[np.ndarray], int]:
    """Per-call seconds of each backend on batch ``x`` and the number of rounds: warm-up, then interleaved
    rounds in which every backend makes about the same number of seconds of calls."""
    typical = []
    for b in backends:
        start, times = time.perf_counter(), []
        while len(times) < 3 or (time.perf_counter() - start < plan.warmup_s and len(times) < 10_000):
            times.append(_one_call_seconds(b, x))
        typical.append(float(np.median(times[len(times) // 2:])))  # the later, warm half
    visit_s = plan.seconds_per_cell / (plan.target_rounds * len(backends))
    per_visit = [int(min(20_000, max(1, visit_s / max(t, 1e-9)))) for t in typical]
    samples: list[list[float]] = [[] for _ in backends]
    gc.collect()
    gc.disable()
    try:
        start, rounds = time.perf_counter(), 0
        while rounds < plan.min_rounds or time.perf_counter() - start < plan.seconds_per_cell:
            shift = rounds % len(backends)
            for i in list(range(shift, len(backends))) + list(range(shift)):
                call, out = backends[i].call, samples[i]
                for _ in range(per_visit[i]):
                    t0 = time.perf_counter_ns()
                    call(x)
                    out.append(time.perf_counter_ns() - t0)
            rounds += 1
    finally:
        gc.enable()
    return [np.asarray(s, dtype=np.float64) * 1e-9 for s in samples], rounds


AGREE_ATOL, AGREE_RTOL = 1e-4, 1e-3
GPU_TOLERANCE_FACTOR = 10  # onnxruntime's CUDA provider may use TF32 matmuls (10 mantissa bits)


def _agreement(backends: list[Backend], x: np.ndarray) -> list[tuple[float | None, bool | None]]:
    """(max |output - torch eager on the CPU|, within tolerance) per backend on ``x``: the figures of a
    backend that answers wrongly are void."""
    reference = next(b for b in backends if b.id == "torch_eager" and b.device == "cpu").call(x).astype(np.float64)
    out = []
    for b in backends:
        if not b.computes_model:
            out.append((None, None))
            continue
        diff = np.abs(np.asarray(b.call(x), np.float64).reshape(reference.shape) - reference)
        factor = 1 if b.device == "cpu" else GPU_TOLERANCE_FACTOR
        out.append((float(diff.max()), bool(np.all(diff <= factor * (AGREE_ATOL + AGREE_RTOL * np.abs(reference))))))
    return out


def bench_bundle(built: BundleBackends, batch_sizes: list[int], plan: Plan, model_name: str,
                 progress=None) -> list[dict]:
    """Result rows for one bundle: one per backend and batch size, with ratios within each batch size."""
    manifest = built.manifest
    stats = (manifest.get("training") or {}).get("feature_stats")
    rows_all = random_rows(len(manifest["features"]), max(batch_sizes), np.random.default_rng(0), stats)
    rows_all = np.ascontiguousarray(rows_all, dtype=np.float32)
    results = []
    for n in batch_sizes:
        x = rows_all[:n]
        diffs = _agreement(built.backends, x)
        samples, rounds = measure_cell(built.backends, x, plan)
        cell = []
        for i, b in enumerate(built.backends):
            s = samples[i]
            median = float(np.median(s))
            cell.append({"model": model_name, "backend": b.id, "label": b.label, "device": b.device, "batch_size": n,
                         "calls": int(s.size), "rounds": rounds, "median_s": median,
                         "p99_s": float(np.percentile(s, 99)), "mean_s": float(s.mean()), "min_s": float(s.min()),
                         "rows_per_s": n / median, "threads": b.threads, "max_abs_diff_vs_torch": diffs[i][0],
                         "agrees_with_torch": diffs[i][1]})
        best = min(r["median_s"] for r, b in zip(cell, built.backends) if b.computes_model)
        for r in cell:
            plain = next((p for p in cell if p["backend"] == "ort_plain" and p["device"] == r["device"]),
                         next((p for p in cell if p["backend"] == "ort_plain"), None))
            r["x_fastest"] = r["median_s"] / best
            r["x_ort_plain"] = r["median_s"] / plain["median_s"] if plain else None
        results += cell
        if progress:
            progress(cell)
    return results


def model_record(built: BundleBackends, name: str) -> dict:
    """What the report says about one bundle's model and the backends it was run on."""
    m = built.manifest
    return {"name": name, "bundle": str(built.bundle), "model": m["model"], "features": m["features"],
            "targets": m["targets"], "onnx_opset": (m.get("export") or {}).get("opset"),
            "backends": [{"backend": b.id, "label": b.label, "device": b.device, "threads": b.threads}
                         for b in built.backends],
            "skipped": built.skipped}


def run_benchmark(bundles: list[Path], batch_sizes: list[int], devices: list[str], threads: int,
                  pin_predictor: bool, plan: Plan, progress=None) -> dict:
    """Benchmark each bundle; returns the whole report (settings, environment, models, result rows)."""
    import threadpoolctl
    torch.set_num_threads(threads)
    limiter = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    try:
        names = _model_names(bundles)
        built = [build_backends(b, devices, threads, pin_predictor) for b in bundles]
        thread_settings = {"threads": threads, "torch_num_threads": torch.get_num_threads(),
                           "torch_interop_threads": torch.get_num_interop_threads(),
                           "ort_plain_intra_op_num_threads": threads, "numpy_blas_threads": threads,
                           "predictor": next((b.threads for b in built[0].backends if b.id == "predictor"), None),
                           "onnxruntime_default_intra_op_threads": physical_cores()}
        report = {"format": "torchport.bench", "format_version": 1,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "settings": {"batch_sizes": batch_sizes, "devices": devices, "plan": asdict(plan),
                               "timing": "per-call wall time (time.perf_counter_ns) of host numpy in -> host "
                                         "numpy out, GC off while timing; rows/s = batch size / median"},
                  "environment": environment(thread_settings),
                  "models": [model_record(b, n) for b, n in zip(built, names)], "results": []}
        for b, name in zip(built, names):
            report["results"] += bench_bundle(b, batch_sizes, plan, name, progress)
    finally:
        limiter.restore_original_limits()
    return report


def _model_names(bundles: list[Path]) -> list[str]:
    names = [Path(b).resolve().name for b in bundles]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
