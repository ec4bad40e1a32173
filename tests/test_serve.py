"""`torchport serve` of one bundle as a real server process on 127.0.0.1, driven by the stock
tritonclient.http client and by plain HTTP: protocol, errors, dynamic batching (seen through /metrics) and
graceful shutdown. Repositories, gRPC, statistics and security: test_serve_repository.py,
test_serve_reload.py, test_serve_security.py."""
from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from conftest import BIN, DATA, run_cli
from servers import infer_body, metric as _metric, serving
from torchport.runtime import Predictor


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    status, _, body = _request(port, "GET", path)
    return status, body


def _infer_json(port: int, rows: list[list[float]], model: str = "seed", **tensor) -> tuple[int, dict]:
    status, _, body = _request(port, "POST", f"/v2/models/{model}/infer", infer_body(rows, **tensor),
                               {"Content-Type": "application/json"})
    return status, json.loads(body)


@pytest.fixture(scope="module")
def server(seed_bundle):
    """One server for the protocol and error tests: a small body limit so that 413 is cheap to provoke."""
    with serving(seed_bundle, "--max-body-bytes", "65536", "--max-queue-delay-us", "2000") as server:
        yield server.port


def test_serve_modules_never_import_torch():
    code = ("import sys, torchport.runtime.cli_serve, torchport.runtime.serve.app; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'onnx') "
            "or m.startswith(('torchport.train', 'torchport.export'))); print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tritonclient_works_unchanged(server, seed_bundle):
    client = triton.InferenceServerClient(f"127.0.0.1:{server}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("seed")
    meta = client.get_model_metadata("seed")
    assert meta["name"] == "seed" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["outputs"][0] == {"name": "targets", "datatype": "FP32", "shape": [-1, 1]}  # then the intervals'
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

    # The client's default: binary tensors both ways (Inference-Header-Content-Length).
    tensor = triton.InferInput("features", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[3.0]], dtype=np.float32))
    result = client.infer("seed", [tensor])
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 4
    assert abs(float(result.as_numpy("targets")[0, 0]) - 2.403) <= 0.01

    # JSON both ways, several rows, a request id, the explicit version: the rows come back in order and
    # agree with the in-process Predictor.
    rows = np.array([[3.0], [1.0], [0.01], [1000.0]], dtype=np.float32)
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    result = client.infer("seed", [tensor], model_version="1", request_id="r-7",
                          outputs=[triton.InferRequestedOutput("targets", binary_data=False)])
    assert result.get_response()["id"] == "r-7" and "data" in result.get_response()["outputs"][0]
    np.testing.assert_allclose(result.as_numpy("targets"), Predictor(seed_bundle).predict(rows), rtol=1e-6)

    # FP64 input, binary.
    tensor = triton.InferInput("features", [1, 1], "FP64")
    tensor.set_data_from_numpy(np.array([[3.0]]))
    assert abs(float(client.infer("seed", [tensor]).as_numpy("targets")[0, 0]) - 2.403) <= 0.01

    # A wrong shape is the client's error, with the server's message.
    tensor = triton.InferInput("features", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 2\].*expected \[rows, 1\]") as err:
        client.infer("seed", [tensor])
    assert err.value.status() == "400"
    client.close()


@pytest.mark.parametrize("path, method, status, message", [
    ("/v2/models/nope/infer", "POST", 404, "model 'nope' is not served here"),
    ("/v2/models/nope", "GET", 404, "model 'nope' is not served here"),
    ("/v2/models/seed/versions/2/infer", "POST", 404, "no version '2'"),
    ("/v2/nothing", "GET", 404, "no such endpoint"),
    ("/v2/models/seed/infer", "GET", 405, "takes POST"),
])
def test_unknown_paths_and_methods(server, path, method, status, message):
    code, headers, body = _request(server, method, path, b"{}" if method == "POST" else None)
    assert code == status and headers["content-type"] == "application/json"
    assert message in json.loads(body)["error"]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(inputs=[]), "exactly one tensor"),
    (lambda r: r["inputs"][0].update(name="x"), "unknown input 'x'"),
    (lambda r: r["inputs"][0].update(shape=[1, 2]), "expected [rows, 1]"),
    (lambda r: r["inputs"][0].update(datatype="BYTES"), "send FP32 or FP64"),
    (lambda r: r["inputs"][0].update(data=["three"]), "numbers only"),
    (lambda r: r["inputs"][0].update(data=[1.0, 2.0]), "has 2 values but shape [1, 1] needs 1"),
    (lambda r: r["inputs"][0].pop("data"), "no 'data'"),
    (lambda r: r.update(outputs=[{"name": "y"}]), "unknown output 'y'"),
])
def test_bad_requests_get_400_naming_the_problem(server, mutate, message):
    request = {"inputs": [{"name": "features", "shape": [1, 1], "datatype": "FP32", "data": [3.0]}]}
    mutate(request)
    status, _, body = _request(server, "POST", "/v2/models/seed/infer", json.dumps(request).encode())
    assert status == 400 and message in json.loads(body)["error"]


def test_malformed_json_and_binary_framing(server):
    status, _, body = _request(server, "POST", "/v2/models/seed/infer", b'{"inputs": [')
    assert status == 400 and "malformed" in json.loads(body)["error"]
    header = json.dumps({"inputs": [{"name": "features", "shape": [2, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    data = np.array([3.0, 1.0], dtype="<f4").tobytes()
    status, headers, body = _request(server, "POST", "/v2/models/seed/infer", header + data,
                                     {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and "inference-header-content-length" not in headers  # JSON out unless asked
    assert json.loads(body)["outputs"][0]["shape"] == [2, 1]
    status, _, body = _request(server, "POST", "/v2/models/seed/infer", header + data[:4],
                               {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "only 4 bytes" in json.loads(body)["error"]
    status, _, body = _request(server, "POST", "/v2/models/seed/infer", header + data + b"xx",
                               {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "2 bytes after the JSON header" in json.loads(body)["error"]


def test_several_rows_flat_or_nested_come_back_in_order(server, seed_bundle):
    rows = [[3.0], [1.0], [250.0]]
    want = Predictor(seed_bundle).predict(np.array(rows, dtype=np.float32))[:, 0].tolist()
    for data in (rows, [3.0, 1.0, 250.0]):
        status, answer = _infer_json(server, rows, data=data)
        assert status == 200 and answer["outputs"][0]["shape"] == [3, 1]
        assert answer["outputs"][0]["data"] == pytest.approx(want, rel=1e-6)
    status, answer = _infer_json(server, rows, data=[3.0, 1.0, True])
    assert status == 400 and "numbers only" in answer["error"]


def test_body_over_the_limit_gets_413(server):
    rows = [[1.0]] * 20000  # about 120 kB of JSON, over the fixture's 64 KiB limit
    status, answer = _infer_json(server, rows)
    assert status == 413 and "--max-body-bytes" in answer["error"]
    assert _infer_json(server, [[3.0]])[0] == 200  # the server is still fine


def test_metrics_count_outcomes(server):
    _infer_json(server, [[3.0]])
    _infer_json(server, [[3.0]], model="nope")
    status, text = _get(server, "/metrics")
    text = text.decode()
    assert status == 200
    assert _metric(text, "torchport_requests_total", model="seed", version="1", outcome="success") >= 1
    assert _metric(text, "torchport_rejected_requests_total", reason="not_found") >= 1
    assert _metric(text, "torchport_requests_total", model="seed", version="1", outcome="too_large") >= 0
    assert _metric(text, "torchport_request_duration_seconds_count", model="seed", version="1") >= 1
    assert "# TYPE torchport_batch_size histogram" in text and "torchport_queue_duration_seconds_bucket" in text


def _concurrent_requests(port: int, values: list[float]) -> list[tuple[int, dict, float]]:
    """One thread per value, released together; each sends a one-row JSON request. (status, answer, done time)."""
    barrier, out = threading.Barrier(len(values)), [None] * len(values)

    def call(i: int) -> None:
        barrier.wait()
        status, answer = _infer_json(port, [[values[i]]])
        out[i] = (status, answer, time.monotonic())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(values))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _check_answers(results, values, predictor) -> None:
    expected = predictor.predict(np.array(values, dtype=np.float32).reshape(-1, 1))
    for (status, answer, _), want in zip(results, expected):
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == pytest.approx([float(want[0])], rel=1e-6)


def test_dynamic_batching_merges_concurrent_requests(seed_bundle):
    values = [float(v) for v in np.linspace(0.5, 500.0, 24)]
    with serving(seed_bundle, "--max-batch-size", "64", "--max-queue-delay-us", "50000") as server_on, \
            serving(seed_bundle, "--max-batch-size", "1") as server_off:
        on, off = server_on.port, server_off.port
        results_on, results_off = _concurrent_requests(on, values), _concurrent_requests(off, values)
        metrics_on, metrics_off = _get(on, "/metrics")[1].decode(), _get(off, "/metrics")[1].decode()
    predictor = Predictor(seed_bundle)
    _check_answers(results_on, values, predictor)  # each caller got its own row back
    _check_answers(results_off, values, predictor)
    batches, rows = _metric(metrics_on, "torchport_batch_size_count"), _metric(metrics_on, "torchport_batch_size_sum")
    assert rows == len(values) and batches < len(values) / 2, metrics_on  # merged: far fewer calls than requests
    assert _metric(metrics_on, "torchport_batch_size_bucket", le="1") < batches or batches == 1
    assert _metric(metrics_off, "torchport_batch_size_count") == len(values)  # batching off: one call each
    assert _metric(metrics_off, "torchport_batch_size_sum") == len(values)


def test_sigterm_finishes_requests_in_flight_and_exits_0(seed_bundle):
    values = [float(v) for v in np.linspace(1.0, 100.0, 16)]
    with serving(seed_bundle, "--max-queue-delay-us", "3000000") as server:
        proc, port = server.proc, server.port
        results: list = []
        load = threading.Thread(target=lambda: results.extend(_concurrent_requests(port, values)))
        load.start()
        deadline = time.monotonic() + 20
        while _metric(_get(port, "/metrics")[1].decode(), "torchport_queued_requests") < len(values):
            assert time.monotonic() < deadline, "the requests did not reach the batcher"
            time.sleep(0.02)
        signalled = time.monotonic()  # all 16 are in flight, held by the 3 s queue delay
        proc.send_signal(signal.SIGTERM)
        refused = False
        while not refused and time.monotonic() < signalled + 2:  # stops accepting new connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.02)
            except OSError:
                refused = True
        load.join(60)
        assert proc.wait(timeout=30) == 0
        stderr = server.log
    assert refused
    assert len(results) == len(values)
    _check_answers(results, values, Predictor(seed_bundle))
    assert all(done > signalled for _, _, done in results)
    assert "finishing the requests in flight" in stderr and "Traceback" not in stderr


def test_several_workers_serve_and_stop_cleanly(seed_bundle):
    with serving(seed_bundle, "--workers", "2", "--model-name", "island") as server:
        proc, port = server.proc, server.port
        status, answer = _infer_json(port, [[3.0]], model="island")
        assert status == 200 and abs(answer["outputs"][0]["data"][0] - 2.403) <= 0.01
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_user_mistakes_exit_2_with_one_line(seed_bundle, tmp_path):
    proc = run_cli("serve", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = run_cli("serve", str(seed_bundle), "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 2 and "cannot listen on" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("serve", str(seed_bundle), "--max-batch-size", "0")
    assert proc.returncode == 2 and "expected a whole number >= 1" in proc.stderr
    assert re.search(r"--port", run_cli("serve", "--help").stdout)


def test_a_value_beyond_float32_fails_only_its_own_request(seed_bundle):
    """1e39 and 1e300 are finite JSON numbers that overflow float32: the request holding one gets 400 naming
    its own row and column, and the requests that arrive with it, merged into the same batch, are answered."""
    good = [float(v) for v in np.linspace(1.0, 4.0, 12)]
    bad = {3: [[2.0], [1e39]], 8: [[1e300]]}
    barrier, out = threading.Barrier(len(good)), [None] * len(good)

    def call(i: int, port: int) -> None:
        barrier.wait()
        out[i] = _infer_json(port, bad.get(i, [[good[i]]]))

    with serving(seed_bundle, "--max-batch-size", "64", "--max-queue-delay-us", "100000") as srv:
        threads = [threading.Thread(target=call, args=(i, srv.port)) for i in range(len(good))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        metrics = _get(srv.port, "/metrics")[1].decode()
    assert out[3] == (400, {"error": "input 'features': row 1 (0-based), column 0 ('area') holds 1e+39: beyond "
                                     "float32's range (about ±3.4e38)"})
    assert out[8][0] == 400 and "row 0 (0-based), column 0 ('area') holds 1e+300" in out[8][1]["error"]
    predictor = Predictor(seed_bundle)
    for i, (status, answer) in enumerate(out):
        if i not in bad:
            assert status == 200, answer
            assert answer["outputs"][0]["data"] == pytest.approx(predictor.predict([[good[i]]])[0], rel=1e-6)
    served = {"model": "seed", "version": "1"}
    assert _metric(metrics, "torchport_requests_total", **served, outcome="bad_request") == 2
    assert f'outcome="error"' not in metrics or _metric(metrics, "torchport_requests_total", **served,
                                                          outcome="error") == 0
    assert _metric(metrics, "torchport_batch_size_count", **served) < len(good) - len(bad)  # the good ones merged


def test_nan_in_binary_data_and_empty_batches(server):
    header = json.dumps({"inputs": [{"name": "features", "shape": [3, 1], "datatype": "FP64",
                                     "parameters": {"binary_data_size": 24}}]}).encode()
    for value, why in ((np.nan, "nan: NaN and infinite inputs are refused"), (1e300, "1e+300: beyond float32")):
        data = np.array([1.0, 2.0, value], dtype="<f8").tobytes()
        status, _, body = _request(server, "POST", "/v2/models/seed/infer", header + data,
                                   {"Inference-Header-Content-Length": str(len(header))})
        assert status == 400 and f"row 2 (0-based), column 0 ('area') holds {why}" in json.loads(body)["error"]
    status, answer = _infer_json(server, [[]], shape=[0, 1], data=[])
    assert status == 200 and answer["outputs"][0]["shape"] == [0, 1] and answer["outputs"][0]["data"] == []
    assert Predictor(DATA / "v1" / "seed").predict(np.empty((0, 1))).shape == (0, 1)  # as the Predictor answers


def test_answers_are_strict_json_even_when_the_model_overflows():
    from torchport.runtime.serve.protocol import ModelInfo, ResponseEncoder
    encoder = ResponseEncoder(ModelInfo("m", "features", "targets", ("x",), ("y",)))
    body, _ = encoder.encode("id", np.array([[np.inf], [np.nan], [1.5]], dtype=np.float32), binary=False)
    parsed = json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} in a response"))
    assert parsed["outputs"][0]["data"] == [None, None, 1.5]
