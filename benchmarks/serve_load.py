"""Load benchmark of `torchport serve` over loopback: one-row V2 inference requests at several
concurrencies, bounded in count and time, over REST (JSON) and gRPC, against
  torchport          torchport serve, dynamic batching on (the defaults), REST
  torchport-grpc     the same over gRPC (--grpc-port), driven by the stock tritonclient.grpc.aio client
  torchport-nobatch  torchport serve --max-batch-size 1, REST
  noop               a no-op V2 endpoint on exactly torchport's HTTP stack: the REST floor
  peer               KServe's Python ModelServer (V2 REST) over an ONNX Runtime session of the same
                     model.onnx, in its own venv (made on first use), so that its pins never touch ours
  peer-grpc          the same KServe ModelServer over its gRPC endpoint, with the same gRPC client
Targets run interleaved (every target once per round; torchport's and noop back to back in a rotating
order, then the peers), after warm-up, so that the ratios between them compare runs made under the same
conditions. Every answer of the model servers is checked against the in-process Predictor. The REST client
is torchport.benchmarks.loadgen, the gRPC one torchport.benchmarks.grpc_loadgen. Prints a table; saves
JSON and Markdown.

Paths are relative to the current directory: the bundle (trained when missing), the peer's venv
(benchmarks/.venvs/kserve), the servers' logs (benchmarks/.work) and the results (benchmarks/results).

examples:
  python -m torchport.benchmarks.serve_load
  python -m torchport.benchmarks.serve_load --no-peer --rounds 1 --scale 0.1     # a smoke run
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

from torchport.benchmarks.grpc_loadgen import one_row_inputs, run_grpc_load
from torchport.benchmarks.loadgen import http_post, run_load
from torchport.benchmarks.machine import environment
from torchport.benchmarks.timing import RESULTS_DIR
from torchport.runtime import Predictor
from torchport.runtime.files import write_json, write_text
from torchport.runtime.options import positive_float, positive_int, sizes

try:
    import uvloop
    _run = uvloop.run
except ImportError:
    _run = asyncio.run

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "kserve_onnx.py"  # runs in the peer's venv: by path
PEER_VENV = Path("benchmarks", ".venvs", "kserve")
LOGS = Path("benchmarks", ".work")  # the servers' output (both folders are ignored by git)
TORCHPORT = [sys.executable, "-m", "torchport.runtime.cli"]
PEER_PINS = ["kserve==0.21.0", "onnxruntime"]
LEVELS = (1, 8, 32, 128)
COUNTS = {1: 3000, 8: 10000, 32: 20000, 128: 20000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating the peer's venv {PEER_VENV} ({' '.join(PEER_PINS)}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_PINS],
                       check=True)
    return python


def _pip_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


class Target:
    """One server process under test, driven over REST or gRPC."""

    def __init__(self, name: str, command: list[str], model: str, checked: bool, grpc: bool = False):
        self.name, self.model, self.checked, self.grpc = name, model, checked, grpc
        self.port, self.grpc_port = _free_port(), _free_port()
        self.command = [c.replace("{port}", str(self.port)).replace("{grpc_port}", str(self.grpc_port))
                        for c in command]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(LOGS / f"{self.name}.log", "w")
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready in 120 s; see {self.log.name}")
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_totals(self) -> tuple[float, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(("torchport_batch_size_count", "torchport_batch_size_sum"))}
        return values["torchport_batch_size_count"], values["torchport_batch_size_sum"]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def _requests(model: str, areas: np.ndarray) -> list[bytes]:
    return [http_post(f"/v2/models/{model}/infer", json.dumps(
        {"inputs": [{"name": "features", "shape": [1, 1], "datatype": "FP32", "data": [float(a)]}]}).encode())
        for a in areas]


def _checker(expected: np.ndarray, checked: bool):
    """Every answer is parsed (the same client work for every server); the model servers' values are
    compared with the in-process Predictor's, the no-op's (a fixed answer) only for its form."""
    def check(i: int, status: int, body: bytes) -> bool:
        got = orjson.loads(body)["outputs"][0]["data"][0]
        want = float(expected[i % len(expected)])
        return abs(got - want) <= 1e-5 * (1 + abs(want)) if checked else isinstance(got, float)
    return check


def _grpc_checker(expected: np.ndarray):
    def check(i: int, value: float) -> bool:
        want = float(expected[i % len(expected)])
        return abs(value - want) <= 1e-5 * (1 + abs(want))
    return check


def _measure(target: Target, areas: np.ndarray, expected: np.ndarray, concurrency: int, count: int,
             time_limit: float) -> dict:
    batches = target.batch_totals() if target.name.startswith("torchport") else None
    cpu0, client0 = target.cpu_seconds(), time.process_time()
    if target.grpc:
        result = _run(run_grpc_load(f"127.0.0.1:{target.grpc_port}", target.model, one_row_inputs(areas),
                                    _grpc_checker(expected), concurrency, count, time_limit))
    else:
        result = _run(run_load("127.0.0.1", target.port, _requests(target.model, areas),
                               _checker(expected, target.checked), concurrency, count, time_limit))
    summary = result.summary()
    summary["server_cpu_us_per_req"] = round((target.cpu_seconds() - cpu0) / max(result.sent, 1) * 1e6, 1)
    summary["client_cpu_fraction"] = round((time.process_time() - client0) / result.wall_s, 2)
    summary["answers_checked"] = target.checked
    if batches is not None:
        after = target.batch_totals()
        calls = after[0] - batches[0]
        summary["mean_batch_rows"] = round((after[1] - batches[1]) / calls, 2) if calls else None
    return summary


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(statistics.median(values), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchport.benchmarks.serve_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("bundles", "seed"),
                    help="the seed's bundle, trained there when missing (default: bundles/seed)")
    ap.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds per concurrency (default: 5)")
    ap.add_argument("--levels", type=sizes, default=list(LEVELS), metavar="N,N,...",
                    help=f"concurrencies (default: {','.join(map(str, LEVELS))})")
    ap.add_argument("--scale", type=positive_float, default=1.0,
                    help="multiply the request counts (default: 1; 0.1 for a smoke run)")
    ap.add_argument("--time-limit", type=positive_float, default=12.0, metavar="S",
                    help="seconds at most per measured run (default: 12)")
    ap.add_argument("--no-peer", action="store_true", help="skip the KServe peer")
    ap.add_argument("--no-nobatch", action="store_true", help="skip torchport with batching off")
    ap.add_argument("--no-grpc", action="store_true", help="skip the gRPC rows (torchport's and the peer's)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, metavar="DIR",
                    help=f"folder for serve_load.json and serve_load.md (default: {RESULTS_DIR}, relative to the "
                         "current directory)")
    args = ap.parse_args(argv)
    levels = args.levels
    loadavg_before = os.getloadavg()
    LOGS.mkdir(parents=True, exist_ok=True)
    if not (args.bundle / "manifest.json").exists():
        trained = subprocess.run([*TORCHPORT, "train", "--out", str(args.bundle), "--no-progress"])
        if trained.returncode:
            return trained.returncode
    predictor = Predictor(args.bundle, providers="cpu")
    areas = np.round(10 ** np.random.default_rng(0).uniform(-2, 4, 257), 4).astype(np.float32)
    expected = predictor.predict(areas.reshape(-1, 1))[:, 0]
    serve = [*TORCHPORT, "serve", str(args.bundle), "--port", "{port}", "--model-name", "seed"]
    targets = [Target("torchport", serve, "seed", True),
               Target("torchport-grpc", serve + ["--grpc-port", "{grpc_port}"], "seed", True, grpc=True),
               Target("torchport-nobatch", serve + ["--max-batch-size", "1"], "seed", True),
               Target("noop", [sys.executable, "-m", "torchport.benchmarks.noop_server", "{port}"], "noop", False)]
    if args.no_nobatch:
        targets = [t for t in targets if t.name != "torchport-nobatch"]
    if args.no_grpc:
        targets = [t for t in targets if not t.grpc]
    versions = {}
    for package in ("onnxruntime-gpu", "onnxruntime", "uvicorn", "uvloop", "httptools", "orjson", "torchport"):
        versions[package] = _pip_version(Path(sys.executable), package)
    if not args.no_peer:
        peer_python = _ensure_peer_venv()
        peer = [str(peer_python), str(PEER_SCRIPT), str(args.bundle / "model.onnx"), "seed", "--http_port", "{port}"]
        targets.append(Target("peer", peer, "seed", True))
        if not args.no_grpc:
            targets.append(Target("peer-grpc", peer + ["--grpc_port", "{grpc_port}"], "seed", True, grpc=True))
        versions["peer"] = {p: _pip_version(peer_python, p) for p in ("kserve", "onnxruntime", "fastapi", "uvicorn",
                                                                     "grpcio")}
        versions["peer"]["setup"] = ("kserve.ModelServer(workers=1), gRPC on only for peer-grpc, per-request "
                                     "logging off")
    runs: dict[str, dict[int, list[dict]]] = {t.name: {c: [] for c in levels} for t in targets}
    try:
        for t in targets:
            t.start()
        for t in targets:  # warm-up
            _measure(t, areas, expected, 32, max(200, int(2000 * args.scale)), args.time_limit)
        for c in levels:
            count = max(100, int(COUNTS.get(c, 10000) * args.scale))
            fast = [t for t in targets if not t.name.startswith("peer")]
            slow = [t for t in targets if t.name.startswith("peer")]
            for r in range(args.rounds):
                # the fast servers back to back in a rotating order, so that their ratios compare runs made
                # under the same conditions; the slow peers after them
                order = fast[r % len(fast):] + fast[:r % len(fast)] + slow
                for t in order:
                    s = _measure(t, areas, expected, c, count, args.time_limit)
                    s["round"] = r
                    runs[t.name][c].append(s)
                    print(f"c={c:<4} round {r} {t.name:<18} {s['req_per_s']:>9.1f} req/s  p50 {s['p50_ms']:.2f} ms  "
                          f"p90 {s['p90_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  errors {s['errors']}  "
                          f"wrong {s['wrong_answers']}  "
                          f"server {s['server_cpu_us_per_req']} us/req  batch {s.get('mean_batch_rows')}",
                          file=sys.stderr, flush=True)
    finally:
        exit_codes = {t.name: t.stop() for t in targets}

    table, acceptance = [], {}
    for c in levels:
        for t in targets:
            rs = runs[t.name][c]
            table.append({"concurrency": c, "target": t.name, "protocol": "gRPC" if t.grpc else "REST",
                          "req_per_s": _median(rs, "req_per_s"), "p50_ms": _median(rs, "p50_ms"),
                          "p90_ms": _median(rs, "p90_ms"), "p99_ms": _median(rs, "p99_ms"),
                          "errors": sum(x["errors"] for x in rs), "wrong": sum(x["wrong_answers"] for x in rs),
                          "requests": sum(x["requests"] for x in rs),
                          "server_cpu_us_per_req": _median(rs, "server_cpu_us_per_req"),
                          "mean_batch_rows": _median(rs, "mean_batch_rows") if t.name.startswith("torchport") else None,
                          "client_cpu_fraction": _median(rs, "client_cpu_fraction")})

    def ratios(a: str, b: str, c: int) -> list[float]:  # per round: the two runs were next to each other
        return [x["req_per_s"] / y["req_per_s"] for x, y in zip(runs[a][c], runs[b][c]) if y["req_per_s"]]

    for c in levels:
        acceptance[c] = {"torchport/noop": ratios("torchport", "noop", c)}
        if "torchport-nobatch" in runs:
            acceptance[c]["torchport/torchport-nobatch"] = ratios("torchport", "torchport-nobatch", c)
        if "peer" in runs:
            acceptance[c]["torchport/peer"] = ratios("torchport", "peer", c)
        if "torchport-grpc" in runs:
            acceptance[c]["torchport-grpc/torchport"] = ratios("torchport-grpc", "torchport", c)
        if "peer-grpc" in runs:
            acceptance[c]["torchport-grpc/peer-grpc"] = ratios("torchport-grpc", "peer-grpc", c)
    ours = [x for name in runs if name.startswith("torchport") for c in levels for x in runs[name][c]]
    checks = {"torchport_errors_all_levels": sum(x["errors"] for x in ours),
              "torchport_wrong_answers_all_levels": sum(x["wrong_answers"] for x in ours)}
    if 32 in levels:
        tp32 = runs["torchport"][32]
        checks["c32_torchport_all_correct"] = all(x["requests"] == x["ok"] for x in tp32)
        checks["c32_torchport_requests_per_run"] = [x["requests"] for x in tp32]
        med = {k: statistics.median(v) for k, v in acceptance[32].items() if v}
        checks["c32_median_ratios"] = {k: round(v, 3) for k, v in med.items()}
        checks["c32_torchport_ge_2x_peer"] = med.get("torchport/peer", 0) >= 2 if "peer" in runs else None
        checks["c32_torchport_ge_0.6x_noop"] = med["torchport/noop"] >= 0.6
        checks["c32_batching_on_beats_off"] = med["torchport/torchport-nobatch"] > 1 \
            if "torchport-nobatch" in runs else None
    report = {"benchmark": "serve_load", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment({"server_workers": 1, "client": "one asyncio process"}).to_json(),
              "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "versions": versions, "rounds": args.rounds, "counts": {c: max(100, int(COUNTS.get(c, 10000) * args.scale))
                                                                      for c in levels},
              "time_limit_s": args.time_limit, "table": table,
              "ratios_per_round": {str(c): {k: [round(x, 3) for x in v] for k, v in a.items()} for c, a in acceptance.items()},
              "acceptance": checks, "server_exit_codes_after_sigterm": exit_codes, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serve_load.json", report)
    md = _markdown(report, levels)
    write_text(args.out / "serve_load.md", md)
    print(md)
    return 0


def _loads(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _markdown(report: dict, levels: list[int]) -> str:
    cpu = report["environment"]["cpu"]
    lines = [f"# torchport serve load benchmark ({report['when']})", "",
             f"{cpu['model']}, {cpu['usable_cpus']} usable CPUs (the machine's load is not controlled); "
             f"loopback; one-row V2 requests (REST: JSON; gRPC: raw_input_contents); median of {report['rounds']} "
             "interleaved rounds. Clients: torchport.benchmarks.loadgen (REST: asyncio, uvloop) and "
             "torchport.benchmarks.grpc_loadgen (gRPC: tritonclient.grpc.aio, one channel). Load average "
             f"(1, 5, 15 min) before {_loads(report['loadavg_before'])}, after {_loads(report['loadavg_after'])}.", "",
             "| concurrency | server | protocol | req/s | p50 ms | p90 ms | p99 ms | errors | wrong | requests | "
             "server CPU us/req | client CPU share | mean batch rows |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["table"]:
        lines.append(f"| {row['concurrency']} | {row['target']} | {row['protocol']} | {row['req_per_s']:.0f} | "
                     f"{row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | "
                     f"{row['wrong']} | {row['requests']} | {row['server_cpu_us_per_req']} | "
                     f"{row['client_cpu_fraction']} | {row['mean_batch_rows'] if row['mean_batch_rows'] else ''} |")
    lines += ["", "Ratios of req/s per round (torchport's servers and noop ran back to back; the peers right after "
              "them), and their median:", ""]
    for c, ratios in report["ratios_per_round"].items():
        for k, v in ratios.items():
            lines.append(f"- c={c} {k}: {v} (median {statistics.median(v):.2f})" if v else f"- c={c} {k}: n/a")
    lines += ["", "Acceptance at concurrency 32: " + json.dumps(report["acceptance"]), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
