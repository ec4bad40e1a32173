"""Predictor.tune: measure each regime that can run a batch size (every graph file of the bundle, one thread
or all, bound buffers or zero-copy, whole or in shared cache-sized chunks) on this machine, interleaved,
through the Predictor's engine, and build the plan that runs each size in the fastest (docs/hot-path.md)."""
from __future__ import annotations

import gc
import math
import time
import numpy as np

from torchport.runtime.bundle import THREADED_FILE
from torchport.runtime.engine import Engine
from torchport.runtime.errors import InputError
from torchport.runtime.hot_path import SLOT_ROWS
from torchport.runtime.openvino_runner import HINTS
from torchport.runtime.plan import Plan, Regime, Timing, machine_key, steps_from_winners

SIZES = (1, 8, 64, 256, 512, 1024, 2048, 4096, 16384, 65536, 262144, 1 << 20)
ROUNDS = 5
SETTLE_S = 0.002  # a pause after each regime's turn, untimed: threads a session left spinning go to sleep
# Another regime replaces the rules' one, or the one chosen at the size below, only if it takes at most
# this share of its time: a boundary should not move with one run's noise (5% did, at 8 rows).
KEEP_RULES_UNLESS = 0.90
DROP_AFTER = 2.5  # from 4096 rows on, a regime this many times slower than the best at the size before is dropped


def candidates(engine: Engine, rows: int) -> list[Regime]:
    """The regimes that can run ``rows`` rows: for each graph file, bound buffers (small batches), zero-copy
    on one thread and on ``intra_op_threads`` (its threads spinning or not; the threaded graph only so), cache-sized chunks shared by
    the threads (two chunks or more), and where OpenVINO can run the graph, OpenVINO with each performance
    hint (in bf16 too for a plan asked for bf16); the rules' regime among them."""
    threads = engine.intra_op_threads
    precisions = [p for p in dict.fromkeys(("f32", engine.precision)) if engine.openvino_unavailable(p) is None]
    out: list[Regime] = []
    for graph in engine.graphs:
        if graph == THREADED_FILE:  # written for ONNX Runtime's runs on several threads: measured there only
            if rows > SLOT_ROWS and threads > 1:
                out += [engine.whole(graph, threads), engine.whole(graph, threads, spin=True)]
            continue
        if rows <= engine.slot_rows:
            out.append(Regime(graph, 1, bound=True))
        if rows > SLOT_ROWS:
            out.append(engine.whole(graph, 1))
            if threads > 1:
                out += [engine.whole(graph, threads), engine.whole(graph, threads, spin=True)]
                chunks = engine.shared_chunks(graph)
                if rows >= 2 * chunks.chunk_rows and chunks.chunk_rows:
                    out.append(chunks)
            out += [engine.openvino(graph, hint, p) for p in precisions for hint in HINTS]
    rules = engine.rules().regime(rows)
    return list(dict.fromkeys([rules] + out))


def _rows(engine: Engine, rows: int) -> np.ndarray:
    """``rows`` rows like the bundle's golden cases (repeated), else standard normal ones: the graphs'
    speed does not depend on the values, but torchport's data keeps denormals out."""
    n_features = engine.n_features
    if engine.golden is not None:
        from torchport.runtime.golden import load_golden
        base = load_golden(engine.golden, engine.feature_names, engine.target_names, engine.dtype).inputs
    else:
        base = np.random.default_rng(0).standard_normal((256, n_features))
    if not len(base):
        base = np.zeros((1, n_features))
    return np.ascontiguousarray(np.resize(base, (rows, n_features)), dtype=engine.dtype)


def _medians(engine: Engine, regimes: list[Regime], x: np.ndarray, budget_s: float, check: bool) -> list[float]:
    """Median seconds per call of each regime on ``x`` (``check``: with the NaN/inf check, as predict runs
    it): two warm-up calls each (sessions and slots are made then), then ROUNDS interleaved rounds, the
    order rotating, of individually timed calls, with a pause after each turn (ONNX Runtime's
    multi-threaded sessions spin a while after a run, taking the cores from whatever runs next). Each regime
    runs as given, whatever other processes do: a plan measured under load keeps what held up under it."""
    runs = [lambda r=r: engine.run(r, x, None, check, calm=False) for r in regimes]
    typical = []
    for run in runs:
        run()
        t0 = time.perf_counter()
        run()
        typical.append(time.perf_counter() - t0)
    per_visit = [max(1, int(budget_s / (ROUNDS * len(runs) * max(t, 1e-7)))) for t in typical]
    samples: list[list[int]] = [[] for _ in runs]
    gc.collect()
    gc.disable()
    try:
        for k in range(ROUNDS):
            order = list(range(len(runs)))
            order = order[k % len(order):] + order[:k % len(order)]
            for i in order:
                run, out = runs[i], samples[i]
                for _ in range(per_visit[i]):
                    t0 = time.perf_counter_ns()
                    run()
                    out.append(time.perf_counter_ns() - t0)
                time.sleep(SETTLE_S)
    finally:
        gc.enable()
    return [float(np.median(s)) * 1e-9 for s in samples]


def measure_plan(engine: Engine, max_rows: int = 65536, seconds: float = 2.0, check: bool = True) -> Plan:
    """The plan that runs each size in the regime measured fastest here by ``engine`` (see Predictor.tune);
    ``check``: time the runs with the NaN/inf check, as the Predictor will run them."""
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
        raise InputError(f"max_rows must be a whole number >= 1; got {max_rows!r}", parameter="max_rows")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0 \
            or not math.isfinite(seconds):
        raise InputError(f"seconds must be a positive number; got {seconds!r}", parameter="seconds")
    sizes = [n for n in SIZES if n <= max_rows] or [max_rows]
    if sizes[-1] != max_rows and max_rows not in SIZES:
        sizes.append(max_rows)
    started = time.perf_counter()
    rules = engine.rules()
    timings: list[Timing] = []
    winners: list[tuple[int, Regime, Regime]] = []
    previous: dict[Regime, float] = {}
    x_all = _rows(engine, sizes[-1])
    for rows in sizes:
        regimes = candidates(engine, rows)
        if rows >= 4096 and previous:
            best_before = min(previous.values())
            regimes = [r for r in regimes if r == rules.regime(rows) or r not in previous
                       or previous[r] <= DROP_AFTER * best_before]
        medians = _medians(engine, regimes, x_all[:rows], seconds / len(sizes), check)
        timings += [Timing(rows, r, m) for r, m in zip(regimes, medians)]
        by = dict(zip(regimes, medians))
        best, rule = min(by, key=by.get), rules.regime(rows)
        for keep in (rule, winners[-1][1] if winners else None):
            if keep == best:
                break
            if keep not in by or by[keep] > by[rule]:  # the size below's regime only if not slower than the rules'
                continue
            confirmed = by[best] <= KEEP_RULES_UNLESS * by[keep]
            if confirmed:  # measure the two again: one run's noise should not move a boundary
                again = _medians(engine, [best, keep], x_all[:rows], seconds / len(sizes) / 2, check)
                timings += [Timing(rows, best, again[0], True), Timing(rows, keep, again[1], True)]
                confirmed = again[0] <= KEEP_RULES_UNLESS * again[1]
            if not confirmed:
                best = keep
                break
        zero_copy = [r for r in by if not r.bound]
        fallback = min(zero_copy, key=by.get) if zero_copy else engine.whole(best.graph, 1)
        winners.append((rows, best, fallback))
        previous = by
    chunked = [r for r in previous if r.chunk_rows]
    if chunked and not winners[-1][1].chunk_rows:
        # Past the largest size measured a whole batch's intermediates leave the cache; chunks do not.
        beyond = min(chunked, key=previous.get)
        winners.append((sizes[-1] + 1, beyond, beyond))
    return Plan(steps_from_winners(winners, engine.slot_rows), "measured", machine_key(), engine.graph_digests(),
                tuple(timings), time.perf_counter() - started, engine.precision)
