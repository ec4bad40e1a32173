"""Starting real `torchport serve` processes on 127.0.0.1 for the tests, and small HTTP helpers."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import BIN, with_default_signals


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: its process, ports, and the file its stderr goes to."""
    proc: subprocess.Popen
    port: int
    grpc_port: int | None
    log_path: Path
    tls_ca: Path | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            assert self.proc.poll() is None, f"the server exited: {self.log}"
            assert time.monotonic() < deadline, f"{text!r} did not appear in the server's log:\n{self.log}"
            time.sleep(0.05)


@contextmanager
def serving(path: Path, *options: str, grpc: bool = False, tls_ca: Path | None = None):
    """Run `torchport serve PATH OPTIONS` on free loopback ports until it is ready; yield a Server. SIGTERM
    at the end, and the exit code must be 0."""
    port = free_port()
    grpc_port = free_port() if grpc else None
    log = Path(tempfile.mkstemp(prefix="torchport-serve-", suffix=".log")[1])
    command = [str(BIN / "torchport"), "serve", str(path), "--port", str(port), *options]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    with open(log, "w") as err:
        proc = subprocess.Popen(with_default_signals(command), stdout=subprocess.DEVNULL, stderr=err, text=True)
    server = Server(proc, port, grpc_port, log, tls_ca)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the server exited early: {server.log}"
            try:
                if request(server, "GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 90 s"
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.unlink(missing_ok=True)


def request(server: Server, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One HTTP(S) request on a new connection: (status, headers with lower-case names, body)."""
    if server.tls_ca is not None:
        context = ssl.create_default_context(cafile=str(server.tls_ca))
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def infer_body(rows: list[list[float]], **tensor) -> bytes:
    return json.dumps({"inputs": [{"name": "features", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                                   "data": rows, **tensor}]}).encode()


def infer_json(server: Server, rows: list[list[float]], model: str = "seed", version: str | None = None,
               headers: dict | None = None, **tensor) -> tuple[int, dict]:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    status, _, body = request(server, "POST", path, infer_body(rows, **tensor),
                              {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(body)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} {labels} not found in:\n{text}")


class Caller(threading.Thread):
    """Calls ``model`` with one row, without pause, over REST (one keep-alive connection) or gRPC
    (tritonclient) until ``stop`` is set; keeps (status, model version, seconds) of each call: status 200, the
    HTTP status, or the error's repr."""

    def __init__(self, server: Server, model: str = "seed", grpc: bool = False):
        super().__init__(daemon=True)
        self.server, self.model, self.grpc, self.results, self.stop = server, model, grpc, [], threading.Event()

    def run(self) -> None:
        if self.grpc:
            import numpy as np
            import tritonclient.grpc as grpcclient
            client = grpcclient.InferenceServerClient(self.server.grpc_url)
            tensor = grpcclient.InferInput("features", [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[3.0]], np.float32))
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    version = client.infer(self.model, [tensor], client_timeout=30).get_response().model_version
                    self.results.append((200, version, time.perf_counter() - started))
                except Exception as e:
                    self.results.append((repr(e), None, time.perf_counter() - started))
            client.close()
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        body = infer_body([[3.0]])
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("POST", f"/v2/models/{self.model}/infer", body)
                response = conn.getresponse()
                answer = response.read()
                version = json.loads(answer).get("model_version") if response.status == 200 else None
                self.results.append((response.status, version, time.perf_counter() - started))
            except Exception as e:
                self.results.append((repr(e), None, time.perf_counter() - started))
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        conn.close()
