"""Models that change while the server runs: poll mode swaps a new version in while clients keep calling
(no request fails) and refuses versions that do not check (unsigned, tampered; the old one keeps answering),
an unloaded model answers 404 at once and still answers what it had queued, and with several workers a
load or unload reaches every worker and the statistics add them all up."""
from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from servers import infer_body, infer_json, metric, request, serving
from torchport.export.triton import write_triton_repository
from torchport.runtime import Predictor
from torchport.runtime.signing import load_private_key, new_key, sign_bundle

X = 3.0


class Caller(threading.Thread):
    """Calls /v2/models/seed/infer (no version: the highest served) over one keep-alive connection, or over
    gRPC, until stopped; keeps every (status or code, version, value)."""

    def __init__(self, port: int, grpc_port: int | None = None):
        super().__init__(daemon=True)
        self.port, self.grpc_port, self.results, self.stop = port, grpc_port, [], threading.Event()

    def run(self) -> None:
        if self.grpc_port is not None:
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
            tensor = grpcclient.InferInput("features", [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[X]], np.float32))
            while not self.stop.is_set():
                try:
                    r = client.infer("seed", [tensor])
                    self.results.append((200, r.get_response().model_version, float(r.as_numpy("targets")[0, 0])))
                except Exception as e:
                    self.results.append((repr(e), None, None))
            client.close()
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = infer_body([[X]])
        while not self.stop.is_set():
            try:
                conn.request("POST", "/v2/models/seed/infer", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = json.loads(response.read())
                self.results.append((response.status, answer.get("model_version"),
                                     answer["outputs"][0]["data"][0] if response.status == 200 else answer))
            except Exception as e:
                self.results.append((repr(e), None, None))
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()


def _wait(condition, what: str, timeout: float = 30) -> float:
    """Wait for ``condition()``; returns the seconds it took (the test fails after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def signed(model_versions, tmp_path_factory):
    """seed 1 and 2 signed by a new key; (bundles by version, public key file)."""
    folder = tmp_path_factory.mktemp("signed")
    private, public = new_key(folder / "key.pem")
    bundles = {}
    for version in ("1", "2"):
        bundles[version] = folder / f"seed-{version}"
        shutil.copytree(model_versions["seed", version], bundles[version])
        sign_bundle(bundles[version], load_private_key(private))
    return bundles, public


def test_poll_mode_swaps_in_a_new_version_and_refuses_bad_ones(signed, model_versions, tmp_path):
    bundles, public = signed
    want = {v: float(Predictor(b).predict(np.array([[X]], np.float32))[0, 0]) for v, b in bundles.items()}
    repo = tmp_path / "repo"
    write_triton_repository(bundles["1"], repo, name="seed", version=1)
    poll = 0.25
    with serving(repo, "--model-control-mode", "poll", "--repository-poll-secs", str(poll), "--trusted-keys",
                 str(public), grpc=True) as server:
        callers = [Caller(server.port), Caller(server.port), Caller(server.port, server.grpc_port)]
        for c in callers:
            c.start()
        _wait(lambda: all(len(c.results) > 20 for c in callers), "answers from version 1")

        write_triton_repository(bundles["2"], repo, name="seed", version=2)  # published by a rename
        took = _wait(lambda: all(c.results[-1][1] == "2" for c in callers), "version 2 answering")
        server.wait_for_log("unloaded seed version 1")
        assert infer_json(server, [[X]], version="1")[0] == 404  # latest 1: version 1 is gone

        # version 2 changed in place on disk: refused, the copy loaded before keeps answering
        onnx = repo / "seed" / "2" / "model.onnx"
        good = onnx.read_bytes()
        onnx.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        server.wait_for_log("refused seed version 2")
        assert "the copy loaded before keeps serving" in server.log
        onnx.write_bytes(good)

        # a new version that is not signed, then one whose file was tampered with: both refused
        write_triton_repository(model_versions["seed", "1"], repo, name="seed", version=3)
        server.wait_for_log("refused seed version 3")
        shutil.copytree(repo / "seed" / "2", tmp_path / "stage")
        staged = tmp_path / "stage" / "model.onnx"
        staged.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        (tmp_path / "stage").rename(repo / "seed" / "4")
        server.wait_for_log("refused seed version 4")
        time.sleep(4 * poll)  # a few more polls: nothing changes, nothing is logged again
        index = {m.get("version"): m for m in json.loads(request(server, "POST", "/v2/repository/index")[2])}
        status, _, body = request(server, "POST", "/v2/repository/models/seed/unload")
        for c in callers:
            c.stop.set()
        for c in callers:
            c.join(30)
        log = server.log
    assert index["2"]["state"] == "READY" and index["1"]["state"] == "UNAVAILABLE"
    assert index["3"]["state"] == "UNAVAILABLE" and "is not signed" in index["3"]["reason"]
    assert "does not match the manifest" in index["4"]["reason"]
    assert status == 400 and "model control mode is 'poll'" in json.loads(body)["error"]
    assert log.count("refused seed version 4") == 1  # refused once, not again on every poll
    results = [r for c in callers for r in c.results]
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    wrong = [r for r in results if abs(r[2] - want[r[1]]) > 1e-6 * (1 + abs(want[r[1]]))]
    assert not wrong, wrong[:5]
    seen = [r[1] for r in results]
    assert seen.count("1") > 0 and seen.count("2") > 0 and set(seen) == {"1", "2"}
    print(f"version 2 answered every caller {took:.2f} s after it was published (poll interval {poll} s); "
          f"{len(results)} requests, none failed")


def test_unloaded_model_answers_404_at_once_and_finishes_its_queue(seed_bundle):
    values = [float(v) for v in np.linspace(1.0, 50.0, 8)]
    with serving(seed_bundle, "--model-control-mode", "explicit", "--load-model", "seed",
                 "--max-queue-delay-us", "2000000") as server:
        results: list = []
        threads = [threading.Thread(target=lambda v=v: results.append((v, infer_json(server, [[v]])))) for v in values]
        for t in threads:
            t.start()
        _wait(lambda: metric(request(server, "GET", "/metrics")[2].decode(), "torchport_queued_requests")
              == len(values), "the requests reaching the batcher")
        assert request(server, "POST", "/v2/repository/models/seed/unload")[0] == 200
        status, answer = infer_json(server, [[3.0]])
        answered_before_the_queue = len(results)
        for t in threads:
            t.join(30)
        assert request(server, "POST", "/v2/repository/models/seed/load")[0] == 200
        again = infer_json(server, [[3.0]])
    assert status == 404 and "not served" in answer["error"] and answered_before_the_queue == 0
    predictor = Predictor(seed_bundle)
    for v, (code, body) in results:
        assert code == 200 and body["outputs"][0]["data"][0] == pytest.approx(float(predictor.predict([[v]])[0][0]))
    assert again[0] == 200


def test_workers_all_load_unload_and_count(seed_bundle):
    with serving(seed_bundle, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "seed",
                 grpc=True) as server:
        _wait(lambda: len(set(re.findall(r"\[worker (\d+)\]: loaded seed", server.log))) == 2, "both workers loading")
        # a worker loads its models before its event loop starts its control socket: on a loaded machine the
        # other's /metrics could gather before that (one worker reporting, nothing to log); wait for both
        _wait(lambda: metric(request(server, "GET", "/metrics")[2].decode(), "torchport_workers_reporting") == 2,
              "both workers answering each other")
        assert all(infer_json(server, [[float(i)]])[0] == 200 for i in range(1, 20))  # a new connection each
        client = grpcclient.InferenceServerClient(server.grpc_url)  # gRPC in every worker, on one port
        tensor = grpcclient.InferInput("features", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[3.0]], np.float32))
        assert client.infer("seed", [tensor]).get_response().model_version == "1"
        client.close()
        stats = json.loads(request(server, "GET", "/v2/models/seed/stats")[2])["model_stats"][0]
        text = request(server, "GET", "/metrics")[2].decode()
        assert request(server, "POST", "/v2/repository/models/seed/unload")[0] == 200
        unloaded = [infer_json(server, [[1.0]])[0] for _ in range(20)]
        assert request(server, "POST", "/v2/repository/models/seed/load")[0] == 200
        loaded = [infer_json(server, [[1.0]])[0] for _ in range(20)]
        log = server.log
    assert stats["inference_stats"]["success"]["count"] == 20
    assert metric(text, "torchport_workers_reporting") == 2, log  # the log says why a worker was left out
    assert metric(text, "torchport_requests_total", model="seed", version="1", outcome="success") == 20
    assert unloaded == [404] * 20 and loaded == [200] * 20
    assert len(set(re.findall(r"\[worker (\d+)\]: unloaded seed version 1", log))) == 2  # every worker unloaded
    loads = Counter(re.findall(r"\[worker (\d+)\]: loaded seed version 1", log))
    assert len(loads) == 2 and set(loads.values()) == {2}  # every worker: at start, and on the load request
