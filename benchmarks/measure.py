"""Measure every backend of a bundle at each batch size: each backend first answers the rows once (checked
against torch eager), warms up, then runs interleaved rounds (the backends' order rotates each round) of
individually timed calls, so that load on the machine hits every backend alike."""
from __future__ import annotations

import gc
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import torch

from torchport.benchmarks.backends import Backend, BundleBackends, build_backends
from torchport.benchmarks.machine import environment
from torchport.benchmarks.peak import MatmulPeak, matmul_peak
from torchport.benchmarks.records import BenchReport, BenchSettings, BenchThreads, ModelEntry, Plan, ResultRow
from torchport.export.formats import model_spec
from torchport.export.verify import random_rows, training_record
from torchport.runtime.bundle import Bundle
from torchport.runtime.cpus import physical_cores
from torchport.runtime.plan import flops_per_row
from torchport.runtime.jsonfields import finite

DEFAULT_BATCH_SIZES = (1, 8, 64, 512, 4096, 65536, 1 << 20)
QUICK = Plan(seconds_per_cell=0.15, warmup_s=0.01, min_rounds=2, target_rounds=3)
AGREE_ATOL, AGREE_RTOL = 1e-4, 1e-3
# What every backend's answers are checked against: torch eager on the CPU, else the ExportedProgram (a
# module torchport did not define has no torch eager row).
REFERENCES = ("torch_eager", "exported")
GPU_TOLERANCE_FACTOR = 10  # onnxruntime's CUDA provider may use TF32 matmuls (10 mantissa bits)
# After each backend's turn in a round, untimed: ONNX Runtime's and torch's thread pools spin a while after
# a run, which took a core from the backend that ran next (up to 1.4x its time at 64K rows, measured).
SETTLE_S = 0.002


def _one_call_seconds(backend: Backend, x: np.ndarray) -> float:
    t0 = time.perf_counter_ns()
    backend.call(x)
    return (time.perf_counter_ns() - t0) * 1e-9


def measure_cell(backends: list[Backend], x: np.ndarray, plan: Plan) -> tuple[list[np.ndarray], int]:
    """Per-call seconds of each backend on batch ``x`` and the number of rounds: warm-up, then interleaved
    rounds in which every backend makes about the same number of seconds of calls, each turn followed by
    an untimed pause (SETTLE_S)."""
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
                time.sleep(SETTLE_S)
            rounds += 1
    finally:
        gc.enable()
    return [np.asarray(s, dtype=np.float64) * 1e-9 for s in samples], rounds


def _agreement(built: BundleBackends, x: np.ndarray) -> list[tuple[float | None, bool | None, float | None]]:
    """(max |output - torch eager on the CPU|, within tolerance, max |output - the module in float64|) per
    backend on ``x`` (for a module torchport did not define, against its ExportedProgram, and no float64
    figure): the figures of a backend that answers wrongly are void; a reduced-precision one (bf16, asked
    for) is not held to the tolerance. (None, None, None) for the copy floor, which is not the model."""
    backends = built.backends
    reference = next(b for b in backends if b.id in REFERENCES and b.device == "cpu").call(x).astype(np.float64)
    exact = np.asarray(built.float64(x), np.float64).reshape(reference.shape) if built.float64 else None
    out: list[tuple[float | None, bool | None, float | None]] = []
    for b in backends:
        if not b.computes_model:
            out.append((None, None, None))
            continue
        answer = np.asarray(b.call(x), np.float64).reshape(reference.shape)
        diff = np.abs(answer - reference)
        factor = 1 if b.device == "cpu" else GPU_TOLERANCE_FACTOR
        agrees = None if b.reduced else bool(np.all(diff <= factor * (AGREE_ATOL + AGREE_RTOL * np.abs(reference))))
        error = finite(np.abs(answer - exact).max()) if exact is not None and answer.size else None
        out.append((finite(diff.max()) if diff.size else None, agrees, error))
    return out


def _cell_rows(built: BundleBackends, model_name: str, x: np.ndarray, plan: Plan) -> list[ResultRow]:
    """One result row per backend at the batch ``x``, with ratios to the others at the same batch size and
    the model's FLOP/s (its share of the matmul peak is set once the run is over)."""
    diffs = _agreement(built, x)
    samples, rounds = measure_cell(built.backends, x, plan)
    medians = [float(np.median(s)) for s in samples]
    best = min(m for m, b in zip(medians, built.backends) if b.computes_model and not b.reduced)
    plain = {b.device: m for m, b in zip(medians, built.backends) if b.id == "ort_plain"}
    spec = model_spec(built.bundle)
    per_row = flops_per_row(spec.kind, spec.n_features, spec.n_targets, tuple(getattr(spec, "hidden", ())))
    rows = []
    for b, s, median, (diff, agrees, error) in zip(built.backends, samples, medians, diffs):
        flops = per_row * len(x) / median if b.computes_model and per_row else None
        reference = plain.get(b.device, next(iter(plain.values()), None))
        rows.append(ResultRow(
            model=model_name, backend=b.id, label=b.label, device=b.device, batch_size=len(x), calls=int(s.size),
            rounds=rounds, median_s=median, p99_s=float(np.percentile(s, 99)), mean_s=float(s.mean()),
            min_s=float(s.min()), rows_per_s=len(x) / median, threads=b.threads, max_abs_diff_vs_torch=diff,
            agrees_with_torch=agrees, x_fastest=median / best,
            x_ort_plain=median / reference if reference else None, flops_per_s=flops,
            max_abs_error_vs_float64=error))
    return rows


def bench_bundle(built: BundleBackends, batch_sizes: tuple[int, ...], plan: Plan, model_name: str,
                 progress: Callable[[list[ResultRow]], None] | None = None) -> list[ResultRow]:
    """Result rows for one bundle: one per backend and batch size, on rows spread around its training data."""
    manifest = built.bundle.manifest
    record = training_record(manifest)
    rows_all = random_rows(len(manifest.features), max(batch_sizes), np.random.default_rng(0),
                           record.feature_stats if record else None, manifest.encoding)
    rows_all = np.ascontiguousarray(rows_all, dtype=manifest.dtype)  # what the graphs take: float32 or float64
    results = []
    for n in batch_sizes:
        cell = _cell_rows(built, model_name, rows_all[:n], plan)
        results += cell
        if progress:
            progress(cell)
    return results


def model_entry(built: BundleBackends, name: str) -> ModelEntry:
    """What the report says about one bundle's model and the backends it was run on."""
    m = built.bundle.manifest
    return ModelEntry(name, str(built.bundle.path), model_spec(built.bundle), m.features, m.targets, m.export.opset,
                      tuple(b.entry() for b in built.backends), tuple(built.skipped))


def run_benchmark(bundles: list[Bundle], settings: BenchSettings, threads: int, pin_predictor: bool, command: str,
                  progress: Callable[[list[ResultRow]], None] | None = None) -> BenchReport:
    """Benchmark each bundle with ``threads`` threads for torch, numpy's BLAS and plain ONNX Runtime (and the
    Predictor when ``pin_predictor``); returns the whole report. The matmul peak is measured before the
    rows and again after them; the rows' FLOP/s ratios are to the best of both."""
    import threadpoolctl
    torch.set_num_threads(threads)
    limiter = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    try:
        names = _model_names(bundles)
        built = [build_backends(b, list(settings.devices), threads, pin_predictor, 0.5 if settings.quick else 2.0)
                 for b in bundles]
        thread_settings = BenchThreads(
            threads=threads, torch_num_threads=torch.get_num_threads(),
            torch_interop_threads=torch.get_num_interop_threads(), ort_plain_intra_op_num_threads=threads,
            numpy_blas_threads=threads,
            predictor=next((b.threads for b in built[0].backends if b.id == "predictor"), None),
            onnxruntime_default_intra_op_threads=physical_cores())
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        env = environment(thread_settings)
        models = tuple(model_entry(b, n) for b, n in zip(built, names))
        calls = 2 if settings.quick else 5
        peak = matmul_peak(threads, calls=calls)
        results = [row for b, name in zip(built, names)
                   for row in bench_bundle(b, settings.batch_sizes, settings.plan, name, progress)]
        peak = peak.merged(matmul_peak(threads, calls=calls))
    finally:
        limiter.restore_original_limits()
    return BenchReport(created, command, settings, env, models, _against(tuple(results), peak), matmul_peak=peak)


def _against(results: tuple[ResultRow, ...], peak: MatmulPeak) -> tuple[ResultRow, ...]:
    """The rows with their FLOP/s ratio taken against the run's best matmul rate (before or after)."""
    return tuple(replace(r, x_matmul_peak=r.flops_per_s / peak.flops_per_s) if r.flops_per_s is not None else r
                 for r in results)


def _model_names(bundles: list[Bundle]) -> list[str]:
    """Each bundle's directory name, numbered where two are alike."""
    names = [b.path.resolve().name for b in bundles]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
