"""Whether the Predictor's speed holds when the cores are shared: a plain ONNX Runtime session on model.onnx
(default options), the Predictor with its rules and the Predictor with a plan measured here first (while
the machine is quiet), each at a few batch sizes, in four conditions measured in one run: alone; two
threads of this process calling the same backend at once; with one busy process beside it (a Python
loop, one core's worth); and with a busy process per usable CPU (a test suite, say). Within a condition the
backends take turns of about 0.2 s (rotating order), so that drift falls on all alike; each backend's
figure is rows/s over all its callers. Prints, per size, rows/s, the Predictor's rows/s over plain ORT's in
the same condition, and each backend's rows/s over its own alone figure (1.0: it held), and the
busy-neighbour figure per size (the Predictor's time over plain ORT's beside one busy process); saves the
figures as JSON.

examples:
  python -m torchport.benchmarks.under_load --bundle bundles/mlr-mlp
  python -m torchport.benchmarks.under_load --bundle bundles/seed --sizes 1,4096,1048576 --seconds 1
"""
from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from torchport.benchmarks.hot_path import agrees, plain_session
from torchport.benchmarks.machine import environment
from torchport.benchmarks.timing import RESULTS_DIR
from torchport.runtime import Predictor
from torchport.runtime.bundle import ONNX_FILE, Bundle
from torchport.runtime.cpus import usable_cpus
from torchport.runtime.errors import BundleError
from torchport.runtime.files import write_json
from torchport.runtime.options import positive_float, positive_int

CONDITIONS = ("alone", "two callers", "one busy process", "busy process per CPU")
BUSY = "while True:\n    pass\n"
TURN_S = 0.2


def _turns(calls: dict[str, Callable[[], object]], rows: int, seconds: float, callers: int) -> dict[str, float]:
    """Rows/s of each backend: turns of TURN_S in rotating order for about ``seconds`` each, ``callers``
    threads calling it at once during its turn."""
    done = {k: 0 for k in calls}
    spent = {k: 0.0 for k in calls}
    names = list(calls)
    for turn in range(max(1, round(seconds / TURN_S))):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            counts = [0] * callers
            stop = time.perf_counter() + TURN_S

            def loop(i: int, fn=calls[name]) -> None:
                while time.perf_counter() < stop:
                    fn()
                    counts[i] += 1

            threads = [threading.Thread(target=loop, args=(i,)) for i in range(1, callers)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            loop(0)
            for t in threads:
                t.join()
            spent[name] += time.perf_counter() - t0
            done[name] += sum(counts)
            time.sleep(0.002)  # spinning thread pools settle before the next turn
    return {k: done[k] * rows / spent[k] for k in calls}


def busy_processes(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep a core busy (a Python loop) until killed."""
    return [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]


def measure(bundle: Bundle, sizes: list[int], seconds: float, tune_seconds: float) -> dict:
    """The figures of every condition, backend and size (see the module's docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rules = Predictor(bundle, providers="cpu")
        tuned = Predictor(bundle, providers="cpu")
    plan = tuned.tune(seconds=tune_seconds)
    plain = plain_session(bundle, ONNX_FILE)
    name_in, name_out = rules.input_name, rules.output_name
    rng = np.random.default_rng(0)
    out: dict = {"plan": plan.describe(), "plan_measured_s": plan.measured_s, "sizes": {}}
    inputs = {}
    for n in sizes:
        x = rng.normal(size=(n, rules.n_features)).astype(rules.dtype)  # what the graphs take
        expected = plain.run([name_out], {name_in: x})[0]
        assert agrees(rules, rules.predict(x), expected) and agrees(rules, tuned.predict(x), expected)
        inputs[n] = x
    for condition in CONDITIONS:
        procs = busy_processes({"one busy process": 1, "busy process per CPU": usable_cpus()}.get(condition, 0))
        try:
            time.sleep(0.2 if procs else 0)
            for n in sizes:
                x = inputs[n]
                calls = {"ort_plain": lambda x=x: plain.run([name_out], {name_in: x}),
                         "predictor": lambda x=x: rules.predict(x), "predictor_tuned": lambda x=x: tuned.predict(x)}
                rate = _turns(calls, n, seconds, 2 if condition == "two callers" else 1)
                out["sizes"].setdefault(str(n), {})[condition] = rate
        finally:
            for p in procs:
                p.kill()
                p.wait()
    out["busy_neighbour"] = busy_neighbour(out["sizes"])
    return out


def busy_neighbour(sizes: dict) -> dict:
    """Per size, beside one busy process: the Predictor's time over plain ONNX Runtime's (its rules, and its
    plan measured while quiet), the figure `python -m torchport.benchmarks.fastest` holds to 1.10."""
    out = {}
    for n, by_condition in sizes.items():
        rate = by_condition["one busy process"]
        out[n] = {k: rate["ort_plain"] / rate[k] for k in ("predictor", "predictor_tuned")}
    return out


def table(figures: dict) -> list[str]:
    lines = []
    for n, by_condition in figures["sizes"].items():
        lines.append(f"{int(n):,} rows: rows/s (Predictor over plain ORT; each over its own 'alone' figure)")
        alone = by_condition["alone"]
        for condition, rate in by_condition.items():
            cells = [f"plain {rate['ort_plain']:.3g}"] + [
                f"{label} {rate[k]:.3g} ({rate[k] / rate['ort_plain']:.2f}x plain)"
                for k, label in (("predictor", "rules"), ("predictor_tuned", "tuned"))]
            held = ", ".join(f"{rate[k] / alone[k]:.2f}" for k in ("ort_plain", "predictor", "predictor_tuned"))
            lines.append(f"  {condition:<22s} {'  '.join(cells)}   held: {held}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.benchmarks.under_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("bundles/seed"))
    parser.add_argument("--sizes", default="64,4096,65536", help="batch sizes, comma-separated (default: 64,4096,65536)")
    parser.add_argument("--seconds", type=positive_float, default=2.0, help="seconds per backend, size and condition")
    parser.add_argument("--tune-seconds", type=positive_float, default=2.0, help="seconds the tuned Predictor measures")
    parser.add_argument("--json", type=Path, help="where to save the figures (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    try:
        sizes = [positive_int(s) for s in args.sizes.split(",")]
    except argparse.ArgumentTypeError:
        parser.error(f"--sizes must be whole numbers >= 1, comma-separated; got {args.sizes!r}")
    try:
        bundle = Bundle.open(args.bundle)
    except BundleError as e:
        print(f"under_load: error: {e}; make one with `torchport train --out {args.bundle}`", file=sys.stderr)
        return 2
    figures = measure(bundle, sizes, args.seconds, args.tune_seconds)
    report = {"benchmark": "under_load", "when": dt.datetime.now(dt.timezone.utc).isoformat(),
              "bundle": str(args.bundle), "environment": environment({"plain": "onnxruntime default",
                                                                       "predictor": "its own sessions"}).to_json(),
              "method": __doc__.split("\n\n")[0], **figures}
    print(f"plan measured in {figures['plan_measured_s']:.1f} s: " + "; ".join(figures["plan"]))
    print("\n".join(table(figures)))
    print("beside one busy process, time over plain ORT's: " + "; ".join(
        f"{int(n):,} rows: rules {r['predictor']:.2f}, tuned {r['predictor_tuned']:.2f}"
        for n, r in figures["busy_neighbour"].items()))
    target = args.json or RESULTS_DIR / f"under_load-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, report)
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
