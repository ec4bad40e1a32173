"""The runtime's hot path against a plain ONNX Runtime session, the numpy copy floor and TorchScript, on
one bundle (the seed's one-feature model, or an MLP): single-row latency, rows/s at large batches with the
model's FLOP/s and its share of the machine's float32 matmul peak (measured in the same run), and cold
start in fresh processes. Every figure is measured in the same run as its baselines, interleaved after warm-up, so the
ratios hold even on a loaded machine. Prints a table with the ratios and saves the figures, with the
machine and thread settings, as JSON.

"plain" is a default InferenceSession on the bundle's model.onnx (what an app that loads the file itself
runs). When the bundle has model.large_batch.onnx (which the Predictor runs for batches of more than 64
rows), a default session on that graph is timed too ("plain lb"): the stricter reference, the same graph
run without the Predictor's hot path. docs/benchmarks.md describes the method and the saved runs.

examples:
  torchport train --out bundles/seed
  python -m torchport.benchmarks.hot_path --bundle bundles/seed
  python -m torchport.benchmarks.hot_path --bundle bundles/seed --quick       # a smoke run
  torchport export bundles/seed --out bundles/seed-gemm --no-large-batch-graph  # model.onnx only
  python -m torchport.benchmarks.hot_path --bundle bundles/seed-gemm
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from torchport.benchmarks.machine import environment
from torchport.benchmarks.peak import matmul_peak
from torchport.runtime.plan import flops_per_row
from torchport.benchmarks.timing import RESULTS_DIR, interleaved, rates
from torchport.runtime import Predictor
from torchport.runtime.bundle import LARGE_BATCH_FILE, ONNX_FILE, Bundle
from torchport.runtime.errors import BundleError
from torchport.runtime.files import write_json
from torchport.runtime.hot_path import CHUNK_BYTES
from torchport.runtime.ort_api import bound_run
from torchport.runtime.providers import CPU
from torchport.runtime.sessions import session_options

COLD = {
    "predictor": "import torchport.runtime as rt\np = rt.Predictor(B, providers='cpu')\np.predict([[3.0] * F])",
    "ort": ("import numpy as np, onnxruntime as ort\n"
            "s = ort.InferenceSession(B + '/model.onnx', providers=['CPUExecutionProvider'])\n"
            "s.run(None, {s.get_inputs()[0].name: np.full((1, F), 3.0, dtype=np.float32)})"),
    "torchscript": ("import torch\nm = torch.jit.load(B + '/model.torchscript.pt', map_location='cpu')\n"
                    "m(torch.full((1, F), 3.0))"),
}
# Each child times its own work (imports included) from its first line; interpreter start-up is excluded.
CHILD = ("import time\nt0 = time.perf_counter()\nB = {bundle!r}\nF = {features}\n{body}\n"
         "print(time.perf_counter() - t0)\n")


def stats_us(seconds: list[float]) -> dict:
    a = np.asarray(seconds) * 1e6
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def plain_session(bundle: Bundle, graph: str) -> ort.InferenceSession:
    """A default ONNX Runtime session on one of the bundle's graphs (its checked bytes): what an app that
    loads the file itself runs."""
    return ort.InferenceSession(bundle.read(graph), sess_options=session_options(tuned=False), providers=[CPU])


def agrees(predictor: Predictor, answer: np.ndarray, expected: np.ndarray) -> bool:
    """Within what the bundle's parity check allows: two float32 answers each within its bound of the float64
    answer (per target) are within twice the bound of each other; a fixed tolerance as recorded, else 1e-5
    and 1e-4."""
    parity = predictor.manifest.parity if predictor.manifest is not None else None
    if parity is not None and parity.atol is None and parity.bound:
        return bool(np.all(np.abs(answer - expected) <= 2 * np.asarray(parity.bound, dtype=np.float64)))
    atol, rtol = (parity.atol, parity.rtol) if parity is not None and parity.atol is not None else (1e-5, 1e-4)
    return bool(np.all(np.abs(answer - expected) <= atol + rtol * np.abs(expected)))


def single_row(predictor: Predictor, plain: ort.InferenceSession, quick: bool) -> dict:
    x = np.full((1, predictor.n_features), 3.0, dtype=np.float32)
    fetches, feed = [predictor.output_name], predictor.input_name
    answer, expected = predictor.predict(x), plain.run(fetches, {feed: x})[0]
    assert agrees(predictor, answer, expected)  # an MLP's small batches run the folded graph
    # ONNX Runtime's own floor: the one-thread session with input and output bound once, nothing copied
    bound = bound_run(predictor.engine.first_session, predictor.input_name, predictor.output_name, x.copy(),
                      np.empty((1, predictor.n_targets), dtype=np.float32))
    candidates = {"predictor": lambda: predictor.predict(x), "plain": lambda: plain.run(fetches, {feed: x}),
                  "bound": bound}
    interleaved(candidates, 2, 2000)  # warm-up
    s = interleaved(candidates, 6 if quick else 100, 200 if quick else 500)
    pred, base, floor = stats_us(s["predictor"]), stats_us(s["plain"]), stats_us(s["bound"])
    return {"predictor_us": pred, "plain_us": base, "ratio": pred["median"] / base["median"],
            "bit_identical_to_plain": bool(np.array_equal(answer, expected)),
            "bound_run_us": floor, "bound_run_ratio": floor["median"] / base["median"],
            "note": "each call timed alone (perf_counter_ns around it, the same clock cost in all); bound_run is "
                    "ONNX Runtime with input and output bound once and nothing copied, the floor for any wrapper"}


def throughput(predictor: Predictor, plain: ort.InferenceSession, plain_lb: ort.InferenceSession | None, rows: int,
               quick: bool, per_row: int | None) -> dict:
    x = np.random.default_rng(0).uniform(0, 5, size=(rows, predictor.n_features)).astype(np.float32)
    dst, out = np.empty_like(x), np.empty((rows, predictor.n_targets), dtype=np.float32)
    fetches, feed = [predictor.output_name], predictor.input_name
    expected = plain.run(fetches, {feed: x})[0]
    answer = predictor.predict(x)  # an MLP's folded graph rounds differently: within the bundle's tolerance
    assert agrees(predictor, answer, expected), float(np.abs(answer - expected).max())
    if plain_lb is not None:
        assert agrees(predictor, plain_lb.run(fetches, {feed: x})[0], expected)

    def unchecked() -> np.ndarray:
        """The same Predictor (same sessions) with the NaN/inf check off: what the check costs."""
        predictor.allow_nonfinite = True
        try:
            return predictor.predict(x)
        finally:
            predictor.allow_nonfinite = False

    candidates = {
        "floor": lambda: np.copyto(dst, x),  # read 4 bytes and write 4 per row into a reused buffer
        "plain": lambda: plain.run(fetches, {feed: x}),
        "predictor": lambda: predictor.predict(x),
        "predictor_out": lambda: predictor.predict(x, out=out),
        "predictor_unchecked": unchecked,
    }
    if plain_lb is not None:
        candidates["plain_lb"] = lambda: plain_lb.run(fetches, {feed: x})
    interleaved(candidates, 2, 1)  # warm-up
    rate = rates(interleaved(candidates, 3 if quick else (41 if rows <= 1_000_000 else 15), 1), rows)
    lb = {"ratio_to_plain_lb": rate["predictor"] / rate["plain_lb"],
          "plain_lb_to_floor": rate["plain_lb"] / rate["floor"]} if plain_lb is not None else {}
    flops = {k: v * per_row for k, v in rate.items() if k != "floor"} if per_row else None
    return {"rows": rows, "rows_per_s": rate, "flops_per_s": flops,
            "bit_identical_to_plain": bool(np.array_equal(answer, expected)),
            "ratio_to_plain": rate["predictor"] / rate["plain"], **lb,
            "predictor_to_floor": rate["predictor"] / rate["floor"], "plain_to_floor": rate["plain"] / rate["floor"],
            "predictor_out_to_floor": rate["predictor_out"] / rate["floor"],
            "unchecked_ratio_to_plain": rate["predictor_unchecked"] / rate["plain"]}


def cold_start(bundle: Path, repeats: int, features: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in COLD}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for name, body in COLD.items():
                script = Path(tmp) / f"{name}.py"
                script.write_text(CHILD.format(bundle=str(bundle.resolve()), features=features, body=body))
                proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                                      timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError(f"cold start {name} failed: {proc.stderr.strip()}")
                times[name].append(float(proc.stdout.strip().splitlines()[-1]))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"predictor_s": med["predictor"], "ort_s": med["ort"], "torchscript_s": med["torchscript"],
            "ratio_to_ort": med["predictor"] / med["ort"],
            "torchscript_over_predictor": med["torchscript"] / med["predictor"], "runs": repeats, "samples_s": times}


def graph_ops(bundle: Bundle) -> dict[str, list[str]]:
    """The op types of model.onnx and of the large-batch graph (empty: none), as the manifest records them."""
    export = bundle.manifest.export
    large = export.large_batch_graph
    return {ONNX_FILE: list(export.ops), LARGE_BATCH_FILE: list(large.ops) if large else []}


def flops_lines(report: dict, lb: bool) -> list[str]:
    """The model's GFLOP/s per backend and size, and each over the run's float32 matmul peak."""
    per_row, peak = report["flops_per_row"], report["matmul_peak"]["flops_per_s"]
    if not per_row:
        return ["", "model FLOP/s: not known for a module torchport did not define"]
    lines = ["", f"model FLOP/s ({per_row:,} FLOP a row) over the float32 matmul peak of this run, "
                 f"{peak / 1e9:.1f} GFLOP/s ({report['matmul_peak']['size']}-square numpy products, "
                 f"{report['matmul_peak']['threads']} BLAS threads, best before and after):",
             f"{'':34s} {'predictor':>12s} {'plain run':>12s}" + (f" {'plain lb':>10s}" if lb else "")]
    for row in report["throughput"]:
        f, size = row["flops_per_s"], format(row["rows"], ",")
        lines.append(f"{'  ' + size + ' rows, GFLOP/s':34s} {f['predictor'] / 1e9:12.2f} {f['plain'] / 1e9:12.2f}"
                     + (f" {f['plain_lb'] / 1e9:10.2f}" if lb else ""))
        lines.append(f"{'    x peak':34s} {f['predictor'] / peak:12.3f} {f['plain'] / peak:12.3f}"
                     + (f" {f['plain_lb'] / peak:10.3f}" if lb else ""))
    return lines


def table(report: dict) -> str:
    s, c = report["single_row"], report["cold_start"]
    ops = report["graph_ops"]
    lb = bool(ops[LARGE_BATCH_FILE])
    graphs = f"model.onnx {'+'.join(ops[ONNX_FILE])}" + \
        (f", large-batch graph {'+'.join(ops[LARGE_BATCH_FILE])} (\"plain lb\")" if lb else ", no large-batch graph")
    env = report["environment"]
    lines = [f"torchport hot path, {env['cpu']['model']}, {env['cpu']['usable_cpus']} usable CPUs, "
             f"onnxruntime {env['versions']['onnxruntime']}{' (quick run)' if report['quick'] else ''}",
             graphs, "",
             f"{'single row (numpy)':34s} {'predictor':>12s} {'plain run':>12s} {'ratio':>8s} {'target':>8s}",
             f"{'  median latency, us':34s} {s['predictor_us']['median']:12.2f} {s['plain_us']['median']:12.2f} "
             f"{s['ratio']:8.2f} {'<= 0.5':>8s}",
             f"{'  p99 latency, us':34s} {s['predictor_us']['p99']:12.2f} {s['plain_us']['p99']:12.2f}",
             f"{'  ORT bound once, no copies, us':34s} {s['bound_run_us']['median']:12.2f} {'':12s} "
             f"{s['bound_run_ratio']:8.2f} {'(floor)':>8s}", "",
             f"{'throughput, Mrows/s':34s} {'predictor':>12s} {'plain run':>12s} {'ratio':>8s} "
             f"{'target':>8s}" + (f" {'plain lb':>10s} {'ratio lb':>8s}" if lb else "") +
             f" {'floor':>10s} {'pred/floor':>10s} {'plain/floor':>11s} {'out=/floor':>10s} {'unchecked/plain':>15s}"]
    for row in report["throughput"]:
        r = row["rows_per_s"]
        lines.append(f"{'  ' + format(row['rows'], ',') + ' rows':34s} {r['predictor'] / 1e6:12.1f} "
                     f"{r['plain'] / 1e6:12.1f} {row['ratio_to_plain']:8.2f} {'>= 1.0':>8s}" +
                     (f" {r['plain_lb'] / 1e6:10.1f} {row['ratio_to_plain_lb']:8.2f}" if lb else "") +
                     f" {r['floor'] / 1e6:10.1f} {row['predictor_to_floor']:10.2f} {row['plain_to_floor']:11.2f} "
                     f"{row['predictor_out_to_floor']:10.2f} {row['unchecked_ratio_to_plain']:15.2f}")
    lines += flops_lines(report, lb)
    lines += ["", f"{'cold start (fresh process), s':34s} {'predictor':>12s} {'ort':>12s} {'ratio':>8s} {'target':>8s}",
              f"{'  import + load + first run':34s} {c['predictor_s']:12.3f} {c['ort_s']:12.3f} "
              f"{c['ratio_to_ort']:8.2f} {'<= 1.3':>8s}",
              f"{'  TorchScript (torch) / predictor':34s} {c['torchscript_s']:12.3f} {'':12s} "
              f"{c['torchscript_over_predictor']:8.1f}x {'>= 5x':>8s}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.benchmarks.hot_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/seed"),
                        help="the bundle, e.g. the seed model's, made by `torchport train --out bundles/seed` "
                             "(default: bundles/seed)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help=f"where to save the JSON (default: {RESULTS_DIR}/hot_path-<UTC time>.json, relative "
                             "to the current directory)")
    args = parser.parse_args(argv)
    try:
        bundle = Bundle.open(args.bundle)
    except BundleError as e:
        print(f"hot_path: error: {e}; make one with `torchport train --out {args.bundle}`", file=sys.stderr)
        return 2
    predictor = Predictor(bundle, providers="cpu")
    plain = plain_session(bundle, ONNX_FILE)
    plain_lb = plain_session(bundle, LARGE_BATCH_FILE) if predictor.large_batch_graph else None
    sizes = [65_536, 300_000] if args.quick else [65_536, 1_048_576] + [16_000_000] * (predictor.n_features == 1)
    model = bundle.manifest.model
    per_row = flops_per_row(model.get("kind", "linear"), predictor.n_features, predictor.n_targets,
                            tuple(model.get("hidden") or ()))
    peak_calls = 2 if args.quick else 5
    threads = {"predictor_small": 1, "predictor_large": predictor.intra_op_threads,
               "predictor_large_from_rows": predictor.large_batch_rows,
               "predictor_large_chunk_bytes": CHUNK_BYTES if predictor.large_batch_graph else None,
               "plain_session": "onnxruntime default (one per physical core)"}
    report = {
        "benchmark": "hot_path", "quick": args.quick, "when": dt.datetime.now(dt.timezone.utc).isoformat(),
        "bundle": str(args.bundle), "graph_ops": graph_ops(bundle), "environment": environment(threads).to_json(),
        "providers": {"predictor": predictor.providers, "plain_session": plain.get_providers()},
        "plan": predictor.plan.describe(),
        "method": "one process; every figure interleaved with its baselines, after warm-up; medians",
    }
    peak = matmul_peak(predictor.intra_op_threads, calls=peak_calls)
    report["single_row"] = single_row(predictor, plain, args.quick)
    report["throughput"] = [throughput(predictor, plain, plain_lb, n, args.quick, per_row) for n in sizes]
    report["matmul_peak"] = peak.merged(matmul_peak(predictor.intra_op_threads, calls=peak_calls)).to_json()
    report["flops_per_row"] = per_row
    report["cold_start"] = cold_start(args.bundle, 2 if args.quick else 7, predictor.n_features)
    target = args.json or RESULTS_DIR / f"hot_path-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, report)
    print(table(report))
    print(f"\nsaved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
