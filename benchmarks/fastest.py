"""Is `Predictor(bundle)`, as constructed (its rules, no tune), the fastest way to run a bundle on this
machine? For the three reference bundles (the seed's linear model, the 3-32-32-1 MLP and the 16-128-128-4
MLP; `python -m torchport.benchmarks.compare_backends` describes them and trains them where missing) and
batch sizes 1 to 1M, it times the Predictor against every runtime a user would pick instead (plain ONNX
Runtime, OpenVINO f32 with the LATENCY and the THROUGHPUT hint, the AOTInductor package) in interleaved
rounds in one process, and prints the Predictor's time over the fastest other's per cell (a cell over 1.10
is measured once more, and the second figure kept); then, beside one busy process (one core's worth of a
Python loop), the Predictor's time over plain ONNX Runtime's at 1, 64 and 4,096 rows and the largest size.
The load average is recorded before and after each model. Writes the figures as JSON to benchmarks/results/
and renders the README's table from such a JSON (--render, --readme).

examples:
  python -m torchport.benchmarks.fastest                            # the reference run (minutes)
  python -m torchport.benchmarks.fastest --quick --bundles tests/data/current/seed
  python -m torchport.benchmarks.fastest --render benchmarks/results/fastest-X.json --readme README.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from torchport.benchmarks.backends import Backend, BundleBackends, openvino_backends
from torchport.benchmarks.hot_path import agrees
from torchport.benchmarks.machine import environment
from torchport.benchmarks.measure import measure_cell
from torchport.benchmarks.records import BACKEND_LABELS, Plan as Budget
from torchport.benchmarks.timing import RESULTS_DIR
from torchport.benchmarks.under_load import busy_processes
from torchport.runtime import Predictor
from torchport.runtime.bundle import AOTI_FILE, ONNX_FILE, Bundle
from torchport.runtime.cpus import physical_cores
from torchport.runtime.errors import TorchportError
from torchport.runtime.files import write_json, write_text
from torchport.runtime.jsonfields import FLAG, INT, NUMBER, TEXT, Flat, items, scalar, values
from torchport.runtime.options import positive_float
from torchport.runtime.providers import CPU
from torchport.runtime.sessions import session_options

FORMAT = "torchport.fastest"
SIZES = (1, 8, 64, 512, 4096, 65536, 1 << 20)
QUICK_SIZES = (1, 4096)
BUSY_SIZES = (1, 64, 4096)  # and the largest size measured
LIMIT = 1.10  # a cell whose ratio is above this is measured once more
PEERS = ("ort_plain", "openvino_latency", "openvino_throughput", "aoti")
README_BEGIN, README_END = "<!-- fastest: begin -->", "<!-- fastest: end -->"


@dataclass(frozen=True)
class FastestCell(Flat):
    """One model at one batch size: seconds per call (medians) of the Predictor and of each other runtime,
    the fastest other, the Predictor's time over its (``ratio``), and whether the cell was measured twice
    (``first_ratio``: the first measurement's ratio, kept for the record). In a busy-neighbour cell the
    other runtime is plain ONNX Runtime alone."""
    model: str
    rows: int
    predictor_s: float
    peers_s: dict
    fastest: str
    ratio: float
    remeasured: bool
    first_ratio: float

    SCHEMA = {"model": TEXT, "rows": INT, "predictor_s": NUMBER, "peers_s": (dict,), "fastest": TEXT,
              "ratio": NUMBER, "remeasured": FLAG, "first_ratio": NUMBER}


@dataclass(frozen=True)
class Model(Flat):
    """One reference bundle: its name and path, the Predictor's plan as constructed, the runtimes that could
    not run it (with the reason), and the load average (1, 5, 15 min) before and after it was measured."""
    name: str
    bundle: str
    plan: list
    skipped: list
    load_before: list
    load_after: list

    SCHEMA = {"name": TEXT, "bundle": TEXT, "plan": (list,), "skipped": (list,), "load_before": (list,),
              "load_after": (list,)}


@dataclass(frozen=True)
class FastestReport:
    """A whole run: when, the command, whether quick, the machine, the models, the cells alone and beside
    a busy process."""
    created: str
    command: str
    quick: bool
    machine: str
    environment: dict
    models: tuple[Model, ...]
    cells: tuple[FastestCell, ...]
    busy: tuple[FastestCell, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "created": self.created, "command": self.command, "quick": self.quick,
                "machine": self.machine, "environment": self.environment, "limit": LIMIT,
                "models": [m.to_json() for m in self.models], "cells": [c.to_json() for c in self.cells],
                "busy": [c.to_json() for c in self.busy]}

    @classmethod
    def from_json(cls, obj: Any, where: str = "fastest.json") -> "FastestReport":
        v = values(obj, where, {"format": TEXT, "created": TEXT, "command": TEXT, "quick": FLAG, "machine": TEXT,
                                "environment": (dict,), "models": (list,), "cells": (list,), "busy": (list,)})
        if v["format"] != FORMAT:
            raise TorchportError(f"{where} is not written by torchport.benchmarks.fastest (format {v['format']!r})")
        models = items(v["models"], f"{where}.models", Model.from_json)
        for i, m in enumerate(models):
            items(m.plan, f"{where}.models[{i}].plan", scalar(TEXT))
            items(m.load_before + m.load_after, f"{where}.models[{i}].load", scalar(NUMBER))
        cells, busy = (items(v[k], f"{where}.{k}", FastestCell.from_json) for k in ("cells", "busy"))
        for i, c in enumerate(cells + busy):
            values(c.peers_s, f"{where} cell {i}.peers_s", {k: NUMBER for k in c.peers_s})
        return cls(v["created"], v["command"], v["quick"], v["machine"], v["environment"], models, cells, busy)


def peers(bundle: Bundle, threads: int) -> BundleBackends:
    """The other runtimes, built as an app would build them: plain ONNX Runtime (default options), OpenVINO
    f32 with each hint, the AOTInductor package; each missing one skipped with the reason."""
    out = BundleBackends(bundle)
    session = ort.InferenceSession(bundle.read(ONNX_FILE), sess_options=session_options(tuned=False), providers=[CPU])
    feed, fetch = bundle.manifest.input.name, [bundle.manifest.output.name]
    out.backends.append(Backend("ort_plain", "cpu", lambda x: session.run(fetch, {feed: x})[0], "default"))
    openvino_backends(bundle, threads, out)
    out.backends = [b for b in out.backends if not b.reduced]
    out.skipped = [s for s in out.skipped if s.backend in PEERS]
    if not bundle.has(AOTI_FILE):
        from torchport.benchmarks.records import Skipped
        out.skipped.append(Skipped("aoti", "cpu", f"the bundle has no {AOTI_FILE}"))
    else:
        from torchport.export.aoti import PackageCannotRun, load_package
        from torchport.export.loading import module_runner
        try:
            out.backends.append(Backend("aoti", "cpu", module_runner(load_package(bundle, AOTI_FILE), "cpu"), "torch"))
        except PackageCannotRun as e:
            from torchport.benchmarks.records import Skipped
            out.skipped.append(Skipped("aoti", "cpu", str(e)))
    return out


def _rows(bundle: Bundle, n: int) -> np.ndarray:
    """``n`` rows spread around the bundle's training data (as `torchport bench` makes them)."""
    from torchport.export.verify import random_rows, training_record
    record = training_record(bundle.manifest)
    x = random_rows(len(bundle.manifest.features), n, np.random.default_rng(0),
                    record.feature_stats if record else None, bundle.manifest.encoding)
    return np.ascontiguousarray(x, dtype=bundle.manifest.dtype)  # what the graphs take: float32 or float64


def _cell(name: str, predictor: Backend, others: list[Backend], x: np.ndarray, budget: Budget) -> FastestCell:
    """The Predictor against ``others`` on ``x``, interleaved; measured once more when over LIMIT."""
    first = None
    while True:
        samples, _ = measure_cell([predictor, *others], x, budget)
        medians = [float(np.median(s)) for s in samples]
        by = {b.id: m for b, m in zip(others, medians[1:])}
        fastest = min(by, key=by.get)
        ratio = medians[0] / by[fastest]
        if ratio <= LIMIT or first is not None:
            return FastestCell(name, len(x), medians[0], by, fastest, ratio, first is not None,
                        first if first is not None else ratio)
        first = ratio


def measure_model(name: str, bundle: Bundle, sizes: tuple[int, ...], budget: Budget, threads: int,
                  busy_seconds: float) -> tuple[Model, list[FastestCell], list[FastestCell]]:
    """One reference bundle's cells alone and beside a busy process (see the module's docstring)."""
    load_before = list(os.getloadavg())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor(bundle)
    others = peers(bundle, threads)
    mine = Backend("predictor", "cpu", predictor.predict, "rules")
    x_all = _rows(bundle, max(sizes))
    cells = []
    for n in sizes:
        x = x_all[:n]
        expected = others.backends[0].call(x)
        for b in [mine, *others.backends]:
            if not agrees(predictor, np.asarray(b.call(x)), expected):
                raise TorchportError(f"{b.label if b.id in BACKEND_LABELS else b.id} answers {name} at {n} rows "
                                     "differently from plain ONNX Runtime beyond the bundle's parity bound")
        cells.append(_cell(name, mine, others.backends, x, budget))
    plain = [b for b in others.backends if b.id == "ort_plain"]
    busy_budget = Budget(busy_seconds, budget.warmup_s, budget.min_rounds, budget.target_rounds)
    busy = []
    procs = busy_processes(1)
    try:
        time.sleep(0.2)
        for n in sorted({*(s for s in BUSY_SIZES if s <= max(sizes)), max(sizes)}):
            busy.append(_cell(name, mine, plain, x_all[:n], busy_budget))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    skipped = [f"{s.backend}: {s.reason}" for s in others.skipped]
    return Model(name, str(bundle.path), predictor.plan.describe(), skipped, load_before,
                 list(os.getloadavg())), cells, busy


def render_table(report: FastestReport) -> str:
    """The README's table (Markdown): per model and batch size the Predictor's time, the fastest other
    runtime's and the ratio; then the busy-neighbour ratios; then how the figures were measured."""
    label = {**BACKEND_LABELS, "ort_plain": "plain ORT"}
    sizes = sorted({c.rows for c in report.cells})
    head = "| model | " + " | ".join(f"{n:,}" for n in sizes) + " |"
    lines = [f"Predictor(bundle) time over the fastest other runtime (plain ORT, OpenVINO f32 LATENCY / "
             f"THROUGHPUT, AOTInductor), {report.machine}, {report.created[:10]}"
             f"{' (quick run)' if report.quick else ''}:", "", head, "|---" * (len(sizes) + 1) + "|"]
    by = {(c.model, c.rows): c for c in report.cells}
    for m in report.models:
        row = [f"{by[m.name, n].ratio:.2f} ({label.get(by[m.name, n].fastest, by[m.name, n].fastest)})"
               if (m.name, n) in by else "-" for n in sizes]
        lines.append(f"| {m.name} | " + " | ".join(row) + " |")
    busy_sizes = sorted({c.rows for c in report.busy})
    if busy_sizes:
        bby = {(c.model, c.rows): c for c in report.busy}
        lines += ["", "Beside one busy process, Predictor time over plain ONNX Runtime's:", "",
                  "| model | " + " | ".join(f"{n:,}" for n in busy_sizes) + " |",
                  "|---" * (len(busy_sizes) + 1) + "|"]
        lines += [f"| {m.name} | " + " | ".join(f"{bby[m.name, n].ratio:.2f}" if (m.name, n) in bby else "-"
                                               for n in busy_sizes) + " |" for m in report.models]
    loads = ", ".join(f"{m.name} {m.load_before[0]:.2f}-{m.load_after[0]:.2f}" for m in report.models)
    lines += ["", f"One process, interleaved rounds, medians; a cell over {LIMIT:.2f} measured once more. Load "
                  f"average (1 min) before-after: {loads}. `{report.command}`"]
    return "\n".join(lines)


def into_readme(readme: Path, table: str) -> None:
    """Replace what lies between README_BEGIN and README_END in ``readme`` with ``table``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise TorchportError(f"{readme} has no {README_BEGIN} ... {README_END} block to fill; add one where "
                             "the table belongs")
    write_text(readme, text[:start + len(README_BEGIN)] + "\n" + table + "\n" + text[end:])


def table(report: FastestReport) -> str:
    """The terminal's table: every runtime's median per cell, the fastest other and the ratio."""
    lines = [f"{report.machine}"]
    for m in report.models:
        lines += ["", f"{m.name} ({m.bundle}), load average {m.load_before[0]:.2f} -> {m.load_after[0]:.2f}",
                  "  plan: " + "; ".join(m.plan)] + [f"  not run: {s}" for s in m.skipped]
        for c in (c for c in report.cells if c.model == m.name):
            others = "  ".join(f"{k} {v * 1e6:.1f}" for k, v in c.peers_s.items())
            again = f" (first {c.first_ratio:.2f}, measured again)" if c.remeasured else ""
            lines.append(f"  {c.rows:>9,} rows: predictor {c.predictor_s * 1e6:.1f} µs; {others}; "
                         f"x fastest other ({c.fastest}) {c.ratio:.2f}{again}")
        for c in (c for c in report.busy if c.model == m.name):
            lines.append(f"  {c.rows:>9,} rows beside a busy process: predictor {c.predictor_s * 1e6:.1f} µs, "
                         f"plain ORT {c.peers_s['ort_plain'] * 1e6:.1f} µs, x plain {c.ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.benchmarks.fastest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", type=Path, metavar="BUNDLE",
                        help="bundles to measure instead of the three reference ones (trained where missing)")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} and short cells: a smoke run")
    parser.add_argument("--seconds-per-cell", type=positive_float, help="measuring time per cell (default 1.5; "
                        "0.1 with --quick)")
    parser.add_argument("--json", type=Path, help=f"where to write the JSON (default {RESULTS_DIR}/fastest-<time>.json)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the README table of a saved run instead "
                        "of measuring")
    parser.add_argument("--readme", type=Path, help=f"with --render: write the table into this file between "
                        f"{README_BEGIN} and {README_END}")
    args = parser.parse_args(argv)
    try:
        if args.render:
            import json
            report = FastestReport.from_json(json.loads(args.render.read_text(encoding="utf-8")), str(args.render))
            rendered = render_table(report)
            if args.readme:
                into_readme(args.readme, rendered)
            print(rendered)
            return 0
        if args.readme:
            parser.error("--readme goes with --render JSON")
        if args.bundles:
            paths = [str(p) for p in args.bundles]
        else:
            from torchport.benchmarks.compare_backends import reference_bundles
            made = reference_bundles()
            if isinstance(made, int):
                return made
            paths = made
        bundles = [Bundle.open(p) for p in paths]
    except (TorchportError, OSError, ValueError) as e:
        print(f"fastest: error: {e}", file=sys.stderr)
        return 2
    seconds = args.seconds_per_cell or (0.1 if args.quick else 1.5)
    budget = Budget(seconds, 0.05 if args.quick else 0.2, 2 if args.quick else 5, 3 if args.quick else 10)
    sizes = QUICK_SIZES if args.quick else SIZES
    threads = physical_cores()
    models, cells, busy = [], [], []
    try:  # a bundle the Predictor refuses, or a runtime answering it differently: one line, exit 2
        for bundle in bundles:
            model, alone, beside = measure_model(bundle.path.name, bundle, sizes, budget, threads, seconds)
            models.append(model)
            cells += alone
            busy += beside
            print(f"measured {bundle.path.name}", file=sys.stderr)
    except (TorchportError, OSError, ValueError) as e:
        print(f"fastest: error: {e}", file=sys.stderr)
        return 2
    env = environment({"plain": "onnxruntime default", "predictor": "its rules", "openvino": threads}).to_json()
    cpu = env["cpu"]
    machine = f"{cpu['model']}, {cpu['usable_cpus']} usable CPUs"
    argv_words = sys.argv[1:] if argv is None else argv
    report = FastestReport(dt.datetime.now(dt.timezone.utc).isoformat(), shlex.join(
        ["python", "-m", "torchport.benchmarks.fastest", *argv_words]), args.quick, machine, env, tuple(models),
        tuple(cells), tuple(busy))
    print(table(report))
    target = args.json or RESULTS_DIR / f"fastest-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, report.to_json())
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
