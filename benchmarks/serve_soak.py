"""Soak run of `torchport serve` over a model repository in poll mode: two models (the seed's linear model and
a 3-feature linear model), REST and gRPC clients calling them without pause for --seconds (60 by default)
and until --requests (100,000) have been sent; halfway a new version of the seed is published into the
repository (the poll swaps it in and, by the default version policy, unloads version 1); all along, a
client that drops connections mid-request, and oversized, malformed and wrongly shaped requests mixed in.
Every answer is checked against the in-process Predictor of the version that says it answered. It
reports wrong answers, 5xx answers and failed connections (all must be zero), the 4xx each mixed-in kind
got, the 404s for version 1 once it was unloaded (counted apart), and the server's RSS sampled every
second: at the end against just after warm-up (within 10% is flat). Saves JSON and Markdown.

Paths are relative to the current directory: the bundles (trained when missing), the repository and the
server's log (benchmarks/.work) and the results (benchmarks/results).

examples:
  python -m torchport.benchmarks.serve_soak
  python -m torchport.benchmarks.serve_soak --seconds 10 --requests 5000     # a smoke run
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

from torchport.benchmarks.grpc_loadgen import first_value
from torchport.benchmarks.loadgen import Connection, http_post
from torchport.benchmarks.machine import environment
from torchport.benchmarks.timing import RESULTS_DIR
from torchport.export.triton import write_triton_repository
from torchport.runtime import Predictor
from torchport.runtime.files import write_json, write_text
from torchport.runtime.options import positive_float, positive_int

WORK = Path("benchmarks", ".work")
TORCHPORT = [sys.executable, "-m", "torchport.runtime.cli"]
MAX_BODY = 65536
MIXED_IN = {"oversized": 413, "malformed": 400, "wrong shape": 400}  # what each mixed-in kind must get
TRAIN = {"seed": [], "seed-v2": ["--epochs", "1500"], "mlr": ["--data", "plant_richness_mlr", "--scale", "on"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bundle(name: str, folder: Path) -> Path:
    path = folder / name
    if not (path / "manifest.json").exists():
        proc = subprocess.run([*TORCHPORT, "train", "--out", str(path), "--no-progress", *TRAIN[name]],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"training {name} failed:\n{proc.stderr}")
    return path


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Tally:
    """Every request's outcome by kind, and what the server's answers were checked against."""

    def __init__(self, expected: dict[tuple[str, str], np.ndarray]):
        self.expected = expected
        self.counts: Counter = Counter()
        self.versions: Counter = Counter()
        self.examples: dict[str, str] = {}
        self.published = False  # set once the seed's version 2 is in the repository (version 1 goes next)

    def note(self, key: str, example: str = "") -> None:
        self.counts[key] += 1
        if example and key not in self.examples:
            self.examples[key] = example[:300]

    def answer(self, model: str, version: str | None, index: int, value: float, via: str) -> None:
        want = self.expected.get((model, version or ""))
        if want is None:
            return self.note("wrong", f"{via}: an answer from {model} version {version!r}, which was never served")
        w = float(want[index % len(want)])
        if abs(value - w) <= 1e-5 * (1 + abs(w)):
            self.versions[f"{model} v{version}"] += 1
            self.note(f"ok {via}")
        else:
            self.note("wrong", f"{via}: {model} v{version} answered {value} for row {index}, expected {w}")


def _row(model: str, value: float) -> list[float]:
    return [value] if model == "seed" else [value, 45.0, 100.0]


async def _rest_client(port: int, tally: Tally, values: np.ndarray, stop: asyncio.Event, rng: random.Random,
                       sent: list[int]) -> None:
    """One keep-alive connection sending good requests to both models, some to seed version 1 explicitly,
    and now and then an oversized, malformed or wrongly shaped one."""
    loop = asyncio.get_running_loop()
    conn = None
    while not stop.is_set():
        i = rng.randrange(len(values))
        roll = rng.random()
        if roll < 0.004:
            kind, model, body = "oversized", "seed", json.dumps({"inputs": [{"name": "features", "shape": [20000, 1],
                                "datatype": "FP32", "data": [1.0] * 20000}]}).encode()
        elif roll < 0.008:
            kind, model, body = "malformed", "seed", b'{"inputs": [{"name": "features", "shape": [1, 1], '
        elif roll < 0.012:
            kind, model, body = "wrong shape", "mlr", json.dumps({"inputs": [{"name": "features", "shape": [1, 1],
                                "datatype": "FP32", "data": [1.0]}]}).encode()
        else:
            model = "mlr" if roll > 0.75 else "seed"
            kind = "seed v1" if model == "seed" and roll < 0.06 else "good"
            body = json.dumps({"inputs": [{"name": "features", "shape": [1, len(_row(model, 0))], "datatype": "FP32",
                                           "data": _row(model, float(values[i]))}]}).encode()
        path = f"/v2/models/{model}/versions/1/infer" if kind == "seed v1" else f"/v2/models/{model}/infer"
        sent[0] += 1
        try:
            if conn is None or conn.closed:
                _, conn = await loop.create_connection(Connection, "127.0.0.1", port)
            status, answer = await conn.request(http_post(path, body))
        except (OSError, ValueError) as e:
            tally.note("connection error", f"{type(e).__name__}: {e}")
            conn = None
            continue
        if status >= 500:
            tally.note(f"{status}", answer.decode(errors="replace"))
        elif kind in MIXED_IN:
            tally.note(f"{kind} -> {status}" if status == MIXED_IN[kind] else f"unexpected {status} for {kind}",
                       answer.decode(errors="replace"))
        elif kind == "seed v1" and status == 404:
            tally.note("seed v1 -> 404 after unload" if tally.published else "404 before unload",
                       answer.decode(errors="replace"))
        elif status != 200:
            tally.note(f"unexpected {status}", answer.decode(errors="replace"))
        else:
            out = orjson.loads(answer)
            tally.answer(out["model_name"], out["model_version"], i, out["outputs"][0]["data"][0], "REST")
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def _grpc_client(url: str, tally: Tally, values: np.ndarray, stop: asyncio.Event, rng: random.Random,
                       sent: list[int]) -> None:
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.grpc import InferInput
    from tritonclient.utils import InferenceServerException
    client = grpcaio.InferenceServerClient(url)
    try:
        while not stop.is_set():
            i = rng.randrange(len(values))
            model = "mlr" if rng.random() < 0.3 else "seed"
            tensor = InferInput("features", [1, len(_row(model, 0))], "FP32")
            tensor.set_data_from_numpy(np.array([_row(model, float(values[i]))], np.float32))
            sent[0] += 1
            try:
                result = await client.infer(model, [tensor])
            except InferenceServerException as e:
                tally.note(f"gRPC {e.status()}", e.message())
                continue
            response = result.get_response()
            tally.answer(response.model_name, response.model_version, i, first_value(response), "gRPC")
    finally:
        await client.close()


async def _dropper(port: int, tally: Tally, stop: asyncio.Event, rng: random.Random, sent: list[int]) -> None:
    """Connections closed mid-request: half of a body sent, or a whole request sent and not read."""
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 1], "datatype": "FP32", "data": [3.0]}]}).encode()
    request = http_post("/v2/models/seed/infer", body)
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            half = rng.random() < 0.5
            writer.write(request[:len(request) - len(body) // 2] if half else request)
            await writer.drain()
            writer.close()
            sent[0] += 1
            tally.note("dropped mid-body" if half else "dropped before the answer")
        except OSError as e:
            tally.note("connection error", f"dropper: {e}")
        await asyncio.sleep(0.02)


async def _soak(args, port: int, grpc_port: int, pid: int, tally: Tally, values: np.ndarray, repo: Path,
                v2: Path, log_path: Path) -> dict:
    stop = asyncio.Event()
    sent = [0]
    rng = random.Random(0)
    tasks = [asyncio.create_task(_rest_client(port, tally, values, stop, random.Random(rng.random()), sent))
             for _ in range(args.rest_clients)]
    tasks += [asyncio.create_task(_grpc_client(f"127.0.0.1:{grpc_port}", tally, values, stop,
                                               random.Random(rng.random()), sent)) for _ in range(args.grpc_clients)]
    tasks.append(asyncio.create_task(_dropper(port, tally, stop, random.Random(1), sent)))
    started = time.monotonic()
    rss, switched, unloaded_at, warm = [], None, None, None
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
        rss.append((round(elapsed, 1), _rss_kib(pid), sent[0]))
        if warm is None and elapsed >= args.warmup:
            warm = rss[-1]
        if switched is None and elapsed >= args.seconds / 2:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: write_triton_repository(v2, repo, name="seed", version=2))
            switched = elapsed
            tally.published = True
        if switched is not None and unloaded_at is None and "unloaded seed version 1" in log_path.read_text():
            unloaded_at = elapsed
        if elapsed >= args.seconds and sent[0] >= args.requests and unloaded_at is not None:
            break
        if elapsed >= args.max_seconds:
            break
    stop.set()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - started
    rss.append((round(wall, 1), _rss_kib(pid), sent[0]))
    return {"wall_s": round(wall, 1), "requests_sent": sent[0], "req_per_s": round(sent[0] / wall, 1),
            "new_version_published_at_s": switched, "old_version_unloaded_at_s": unloaded_at,
            "rss_kib": rss, "rss_after_warmup_kib": warm[1] if warm else None, "rss_end_kib": rss[-1][1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchport.benchmarks.serve_soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=positive_float, default=60.0, help="run at least this long (default: 60)")
    ap.add_argument("--requests", type=positive_int, default=100_000, help="and until this many were sent "
                                                                           "(default: 100000)")
    ap.add_argument("--max-seconds", type=positive_float, default=600.0, help="stop here regardless (default: 600)")
    ap.add_argument("--warmup", type=positive_float, default=10.0, help="seconds before the RSS baseline (default: 10)")
    ap.add_argument("--rest-clients", type=positive_int, default=24, help="REST connections (default: 24)")
    ap.add_argument("--grpc-clients", type=positive_int, default=8, help="gRPC callers on one channel (default: 8)")
    ap.add_argument("--bundles", type=Path, default=Path("bundles"), help="where the bundles are trained (default: "
                                                                          "bundles)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, metavar="DIR",
                    help=f"folder for serve_soak.json and serve_soak.md (default: {RESULTS_DIR})")
    args = ap.parse_args(argv)
    loadavg_before = os.getloadavg()
    WORK.mkdir(parents=True, exist_ok=True)
    bundles = {name: _bundle(name, args.bundles) for name in TRAIN}
    repo = WORK / "soak-repository"
    shutil.rmtree(repo, ignore_errors=True)
    write_triton_repository(bundles["seed"], repo, name="seed", version=1)
    write_triton_repository(bundles["mlr"], repo, name="mlr", version=1)
    values = np.round(10 ** np.random.default_rng(0).uniform(-2, 4, 257), 4).astype(np.float32)
    expected = {}
    for (model, version), bundle in {("seed", "1"): bundles["seed"], ("seed", "2"): bundles["seed-v2"],
                                     ("mlr", "1"): bundles["mlr"]}.items():
        rows = np.array([_row(model, float(v)) for v in values], np.float32)
        expected[model, version] = Predictor(bundle, providers="cpu").predict(rows)[:, 0]
    tally = Tally(expected)
    port, grpc_port = _free_port(), _free_port()
    log_path = WORK / "serve_soak.log"
    command = [*TORCHPORT, "serve", str(repo), "--port", str(port), "--grpc-port", str(grpc_port),
               "--model-control-mode", "poll", "--repository-poll-secs", "1", "--max-body-bytes", str(MAX_BODY)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start; see {log_path}")
                time.sleep(0.2)
        run = asyncio.run(_soak(args, port, grpc_port, server.pid, tally, values, repo, bundles["seed-v2"], log_path))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            metrics_text = r.read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = server.wait()
    server_errors = sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
                        if line.startswith("torchport_requests_total{") and 'outcome="error"' in line)
    counts = dict(sorted(tally.counts.items()))
    bad = {k: v for k, v in counts.items() if k == "wrong" or k.startswith(("5", "unexpected", "connection error",
                                                                            "gRPC", "404 before"))}
    rss_ratio = run["rss_end_kib"] / run["rss_after_warmup_kib"] if run["rss_after_warmup_kib"] else None
    report = {"benchmark": "serve_soak", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment({"server_workers": 1, "rest_clients": args.rest_clients,
                                          "grpc_clients": args.grpc_clients}).to_json(),
              "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "command": command,
              **{k: v for k, v in run.items() if k != "rss_kib"}, "rss_end_over_warmup": round(rss_ratio, 4)
              if rss_ratio else None, "outcomes": counts, "answers_by_version": dict(tally.versions),
              "problems": bad, "examples": tally.examples, "server_error_outcomes_in_metrics": server_errors,
              "server_exit_code": exit_code,
              "acceptance": {"at_least_100000_requests_over_60_s": run["requests_sent"] >= 100_000
                             and run["wall_s"] >= 60, "no_wrong_answers": counts.get("wrong", 0) == 0,
                             "no_5xx_and_no_failed_connections": not bad and server_errors == 0,
                             "new_version_served_and_old_unloaded": run["old_version_unloaded_at_s"] is not None
                             and tally.versions.get("seed v2", 0) > 0,
                             "rss_within_10_percent": rss_ratio is not None and abs(rss_ratio - 1) <= 0.10},
              "rss_kib": run["rss_kib"]}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serve_soak.json", report)
    md = _markdown(report)
    write_text(args.out / "serve_soak.md", md)
    print(md)
    return 0 if all(report["acceptance"].values()) else 1


def _markdown(report: dict) -> str:
    cpu = report["environment"]["cpu"]
    loads = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
    lines = [f"# torchport serve soak run ({report['when']})", "",
             f"{cpu['model']}, {cpu['usable_cpus']} usable CPUs, shared (load average before {loads(report['loadavg_before'])}, "
             f"after {loads(report['loadavg_after'])}); one server process in poll mode (1 s), two models; "
             f"`{' '.join(report['command'][3:])}`.", "",
             f"- {report['requests_sent']:,} requests in {report['wall_s']} s ({report['req_per_s']:,} req/s)",
             f"- seed version 2 published at {report['new_version_published_at_s']:.0f} s; version 1 unloaded at "
             f"{report['old_version_unloaded_at_s']:.0f} s" if report["old_version_unloaded_at_s"] else
             "- seed version 1 was never unloaded",
             f"- RSS after warm-up {report['rss_after_warmup_kib'] / 1024:.1f} MiB, at the end "
             f"{report['rss_end_kib'] / 1024:.1f} MiB ({report['rss_end_over_warmup']:.3f} of it)",
             f"- server `error` outcomes in /metrics: {report['server_error_outcomes_in_metrics']:.0f}; exit code after "
             f"SIGTERM: {report['server_exit_code']}", "", "| outcome | requests |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,} |" for k, v in report["outcomes"].items()]
    lines += ["", "| answers checked, by version | requests |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(report["answers_by_version"].items())]
    lines += ["", "Problems (must be empty): " + json.dumps(report["problems"]), "",
              "Acceptance: " + json.dumps(report["acceptance"]), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
