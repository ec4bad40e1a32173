"""The front door against hostile clients, with raw sockets on 127.0.0.1 and good requests running beside
them over REST and gRPC: slow bodies hold no slot (a request counts against --max-concurrent-requests once
its body is in) and get 408 when their time is up; a huge header is refused as soon as it passes the cap
(431 or the connection closed) while other requests stay fast; numeric headers out of bounds get 400, never
500; a large JSON body is parsed (and its answer written) without stalling other requests."""
from __future__ import annotations

import http.client
import json
import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from servers import Caller, infer_body, metric, request, serving
from torchport.runtime import Predictor

SLOW_CONNECTIONS = 1100
SLOW_HEAD = (b"POST /v2/models/seed/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n")


def _run_beside(server, work):
    """Run ``work()`` while good REST and gRPC requests go on; (its result, every good (status, seconds))."""
    good = [Caller(server), Caller(server, grpc=True)]
    for g in good:
        g.start()
    time.sleep(0.3)
    try:
        result = work()
    finally:
        time.sleep(0.3)
        for g in good:
            g.stop.set()
        for g in good:
            g.join(60)
    return result, [(status, seconds) for g in good for status, _, seconds in g.results]


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on ``sock`` until it closes the connection (a timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


@pytest.mark.full  # a server under load: the full tier
def test_slow_bodies_take_no_slot_and_get_408(seed_bundle):
    with serving(seed_bundle, "--body-timeout-s", "4", grpc=True) as server:
        slow = []
        for _ in range(SLOW_CONNECTIONS):  # more than the 1,024 requests in flight allowed
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(SLOW_HEAD + b'{"inputs":')  # the head and 10 bytes of the body, then nothing
            slow.append(sock)
        opened = time.monotonic()
        time.sleep(0.5)
        in_a_row = [request(server, "POST", "/v2/models/seed/infer", infer_body([[3.0]]))[0] for _ in range(20)]
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("features", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[3.0]], np.float32))
        over_grpc = [grpc.infer("seed", [tensor]).get_response().model_version for _ in range(5)]
        grpc.close()
        still_waiting = time.monotonic() - opened < 4
        answers = [_until_closed(sock) for sock in slow]
        text = request(server, "GET", "/metrics")[2].decode()
    assert still_waiting  # the 20 and the gRPC ones were answered while all the slow bodies were pending
    assert in_a_row == [200] * 20 and over_grpc == ["1"] * 5
    assert {answer[:12] for answer in answers} == {b"HTTP/1.1 408"}
    assert all(b"connection: close" in answer and b"--body-timeout-s" in answer for answer in answers)
    assert metric(text, "torchport_requests_total", model="seed", version="1", outcome="body_timeout") == \
        SLOW_CONNECTIONS
    assert metric(text, "torchport_requests_total", model="seed", version="1", outcome="overloaded") == 0


def _send_head(port: int, size: int) -> tuple[int, bytes, float]:
    """Send a request whose one header is ``size`` bytes long, 64 KiB at a time; (bytes sent before the
    server cut it off, what it answered, seconds)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    started, sent = time.perf_counter(), 0
    try:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 65536
        while sent < size:
            sock.sendall(chunk[:size - sent])
            sent += min(len(chunk), size - sent)
        sock.sendall(b"\r\n\r\n")
    except OSError:
        pass
    try:
        answer = sock.recv(4096)
    except OSError:  # reset: the server closed with the rest of the header unread
        answer = b""
    sock.close()
    return sent, answer, time.perf_counter() - started


@pytest.mark.full  # a server under load: the full tier
def test_a_huge_header_is_refused_while_others_stay_fast(seed_bundle):
    with serving(seed_bundle, grpc=True) as server:
        (sent, answer, seconds), good = _run_beside(server, lambda: _send_head(server.port, 64 * 1024 * 1024))
        under = request(server, "GET", "/v2/health/live", headers={"X-Big": "a" * 60_000})[0]
        just_over = _send_head(server.port, 64 * 1024 + 100)
    assert sent < 64 * 1024 * 1024 and (answer == b"" or answer.startswith(b"HTTP/1.1 431")), (sent, answer[:40])
    assert good and {status for status, _ in good} == {200}
    worst = max(s for _, s in good)
    assert worst < 0.5, f"worst latency beside the huge header: {worst:.3f} s"
    assert under == 200
    assert just_over[1].startswith(b"HTTP/1.1 431") and b"--max-header-bytes" in just_over[1], just_over[1][:200]
    print(f"64 MiB header cut off after {sent / 2**20:.1f} MiB sent, {seconds:.3f} s; {len(good)} good requests "
          f"beside it, worst {worst * 1000:.1f} ms")


@pytest.mark.parametrize("name, value", [("Inference-Header-Content-Length", "9" * 5000),
                                         ("Inference-Header-Content-Length", "-12"),
                                         ("Inference-Header-Content-Length", "0x10"),
                                         ("Content-Length", "9" * 5000)])
def test_numeric_headers_out_of_bounds_get_400(seed_bundle, name, value):
    with serving(seed_bundle) as server:
        body = infer_body([[3.0]])
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        length = value if name == "Content-Length" else str(len(body))
        extra = "" if name == "Content-Length" else f"{name}: {value}\r\n"
        sock.sendall(f"POST /v2/models/seed/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
                     f"{extra}\r\n".encode() + body)
        answer = sock.recv(4096)
        sock.close()
        text = request(server, "GET", "/metrics")[2].decode()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert 'outcome="error"' not in text or metric(text, "torchport_requests_total", model="seed", version="1",
                                                    outcome="error") == 0


@pytest.mark.full  # a server under load: the full tier
def test_a_large_json_body_does_not_stall_others(seed_bundle):
    rows = np.random.default_rng(0).uniform(0.5, 50, 1_000_000).round(4)
    body = infer_body([[0.0]], shape=[len(rows), 1], data=rows.tolist())  # about 9 MiB of JSON
    want = Predictor(seed_bundle).predict(rows.reshape(-1, 1).astype(np.float32)).ravel()

    def big() -> list:
        answers = []
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for _ in range(3):
            conn.request("POST", "/v2/models/seed/infer", body)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
        conn.close()
        return answers

    with serving(seed_bundle, grpc=True) as server:
        answers, good = _run_beside(server, big)
    for status, answer in answers:
        assert status == 200
        np.testing.assert_allclose(json.loads(answer)["outputs"][0]["data"], want, rtol=1e-6)
    assert good and {status for status, _ in good} == {200}
    worst = max(s for _, s in good)
    assert worst < 0.3, f"worst latency beside three {len(body) / 2**20:.0f} MiB JSON requests: {worst:.3f} s"
    print(f"{len(good)} good requests beside three {len(body) / 2**20:.1f} MiB JSON requests, worst "
          f"{worst * 1000:.1f} ms")
