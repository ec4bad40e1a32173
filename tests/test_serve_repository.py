"""`torchport serve REPO` over a Triton-style model repository (two models, two versions each, written by
`torchport export --triton`), driven by the stock tritonclient.http and tritonclient.grpc clients: metadata,
model configuration, inference (one and many rows; sync, asyncio and streaming gRPC), the repository
index, load and unload, and statistics that agree with /metrics."""
from __future__ import annotations

import asyncio
import json
import queue
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import run_cli
from servers import metric, request, serving
from torchport.export.triton import write_triton_repository
from torchport.runtime import Predictor

WIDTH = {"seed": 1, "mlp": 3}


@pytest.fixture(scope="module")
def repo(model_versions, tmp_path_factory):
    """seed 1 by the real command (with --libtorch: seed_libtorch, which torchport cannot serve), the rest
    in-process; both models serve all their versions."""
    root = tmp_path_factory.mktemp("repo") / "models"
    proc = run_cli("export", str(model_versions["seed", "1"]), "--triton", str(root), "--name", "seed",
                   "--max-batch-size", "512", "--libtorch")
    assert proc.returncode == 0, proc.stderr
    for (name, version), bundle in model_versions.items():
        if (name, version) != ("seed", "1"):
            write_triton_repository(bundle, root, name=name, version=int(version), max_batch_size=512)
    for name in WIDTH:
        config = root / name / "config.pbtxt"
        config.write_text(config.read_text() + "version_policy: { all { } }\n")
    return root


@pytest.fixture(scope="module")
def server(repo):
    with serving(repo, "--model-control-mode", "explicit", "--load-model", "*", "--max-queue-delay-us", "1000",
                 grpc=True) as s:
        yield s


@pytest.fixture(scope="module")
def predictors(model_versions):
    return {key: Predictor(bundle) for key, bundle in model_versions.items()}


def _rows(name: str, n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(0.5, 50, (n, WIDTH[name])).astype(np.float32)


def _http_infer(client, name, rows, version=""):
    tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return client.infer(name, [tensor], model_version=version)


def _grpc_input(rows):
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_metadata_config_and_inference_on_two_models_with_two_versions(server, predictors):
    http = httpclient.InferenceServerClient(server.url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert {"model_repository", "statistics", "model_configuration"} <= set(grpc.get_server_metadata().extensions)
    for name, width in WIDTH.items():
        n_targets = 1 if name == "seed" else 2
        meta = http.get_model_metadata(name)
        assert meta["versions"] == ["1", "2"] and meta["inputs"][0]["shape"] == [-1, width]
        gmeta = grpc.get_model_metadata(name)
        assert list(gmeta.versions) == ["1", "2"] and list(gmeta.outputs[0].shape) == [-1, n_targets]
        config = http.get_model_config(name)  # what perf_analyzer reads
        assert config["max_batch_size"] == 512 and config["input"][0]["dims"] == [width]
        assert config["version_policy"] == {"all": {}}
        assert list(grpc.get_model_config(name).config.output[0].dims) == [n_targets]
        answers = {}
        for version in ("1", "2"):
            assert http.is_model_ready(name, version) and grpc.is_model_ready(name, version)
            for n in (1, 5):
                rows = _rows(name, n)
                want = predictors[name, version].predict(rows)
                got_http = _http_infer(http, name, rows, version)
                got_grpc = grpc.infer(name, [_grpc_input(rows)], model_version=version)
                assert got_http.get_response()["model_version"] == got_grpc.get_response().model_version == version
                np.testing.assert_allclose(got_http.as_numpy("targets"), want, rtol=1e-6)
                np.testing.assert_allclose(got_grpc.as_numpy("targets"), want, rtol=1e-6)
                answers[version] = want
        assert not np.allclose(answers["1"], answers["2"])  # the versions really differ
        latest = grpc.infer(name, [_grpc_input(_rows(name, 1))])  # no version: the highest
        assert latest.get_response().model_version == "2"
    http.close()
    grpc.close()


def test_repository_index_unload_and_load(server, predictors):
    http = httpclient.InferenceServerClient(server.url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    index = {(m["name"], m.get("version", "")): m for m in http.get_model_repository_index()}
    assert all(index[name, v]["state"] == "READY" for name in WIDTH for v in ("1", "2"))
    assert index["seed_libtorch", ""]["state"] == "UNAVAILABLE" and "pytorch" in index["seed_libtorch", ""]["reason"]
    assert {(m.name, m.version, m.state) for m in grpc.get_model_repository_index().models} >= \
        {(n, v, "READY") for n in WIDTH for v in ("1", "2")}
    ready = json.loads(request(server, "POST", "/v2/repository/index", b'{"ready": true}')[2])
    assert {(m["name"], m["version"]) for m in ready} == {(n, v) for n in WIDTH for v in ("1", "2")}

    http.unload_model("mlp")
    assert not http.is_model_ready("mlp") and not grpc.is_model_ready("mlp")
    with pytest.raises(InferenceServerException, match="not served") as err:
        _http_infer(http, "mlp", _rows("mlp", 1))
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:
        grpc.infer("mlp", [_grpc_input(_rows("mlp", 1))])
    assert err.value.status() == "StatusCode.NOT_FOUND"
    states = {m.get("version"): m for m in http.get_model_repository_index() if m["name"] == "mlp"}
    assert states["1"]["state"] == states["2"]["state"] == "UNAVAILABLE" and "unloaded" in states["2"]["reason"]
    seed = _rows("seed", 3)  # the other model is untouched
    np.testing.assert_allclose(_http_infer(http, "seed", seed).as_numpy("targets"), predictors["seed", "2"].predict(seed))

    grpc.load_model("mlp")
    rows = _rows("mlp", 4)
    np.testing.assert_allclose(grpc.infer("mlp", [_grpc_input(rows)], model_version="1").as_numpy("targets"),
                               predictors["mlp", "1"].predict(rows), rtol=1e-6)
    with pytest.raises(InferenceServerException, match="has no model 'nothing'"):
        http.load_model("nothing")
    with pytest.raises(InferenceServerException, match="has no model"):
        grpc.load_model("../models")  # a name that would leave the repository is no model
    http.close()
    grpc.close()


def _duration(stats: dict, key: str) -> int:
    return stats["inference_stats"][key].get("count", 0)


def test_statistics_agree_between_rest_grpc_and_metrics(server):
    http = httpclient.InferenceServerClient(server.url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    before = http.get_inference_statistics("seed", "1")["model_stats"][0]
    for n in range(1, 8):
        _http_infer(http, "seed", _rows("seed", n), "1")
    for n in range(1, 6):
        grpc.infer("seed", [_grpc_input(_rows("seed", n))], model_version="1")
    bad = httpclient.InferInput("features", [1, 2], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceServerException):
        http.infer("seed", [bad], model_version="1")

    after = http.get_inference_statistics("seed", "1")["model_stats"][0]
    assert _duration(after, "success") - _duration(before, "success") == 12
    assert _duration(after, "fail") - _duration(before, "fail") == 1
    assert after["inference_count"] - before["inference_count"] == sum(range(1, 8)) + sum(range(1, 6))
    assert 1 <= after["execution_count"] - before["execution_count"] <= 12
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in after["batch_stats"]) == after["inference_count"]
    assert _duration(after, "queue") == _duration(after, "compute_infer") == _duration(after, "success")
    assert after["inference_stats"]["success"]["ns"] > after["inference_stats"]["compute_infer"]["ns"] / \
        max(1, after["execution_count"])

    via_grpc = grpc.get_inference_statistics("seed", "1").model_stats[0]
    metrics = request(server, "GET", "/metrics")[2].decode()
    labels = {"model": "seed", "version": "1"}
    assert via_grpc.inference_stats.success.count == after["inference_stats"]["success"]["count"] == \
        metric(metrics, "torchport_requests_total", outcome="success", **labels)
    assert via_grpc.inference_stats.fail.count == metric(metrics, "torchport_requests_total", outcome="bad_request",
                                                         **labels)
    assert via_grpc.inference_count == metric(metrics, "torchport_inferences_total", **labels)
    assert via_grpc.execution_count == metric(metrics, "torchport_executions_total", **labels)
    every = {(s["name"], s["version"]) for s in http.get_inference_statistics()["model_stats"]}
    assert {("seed", "1"), ("seed", "2"), ("mlp", "1"), ("mlp", "2")} <= every
    assert {s["version"] for s in http.get_inference_statistics("mlp")["model_stats"]} == {"1", "2"}
    http.close()
    grpc.close()


def test_grpc_asyncio_client_and_streaming(server, predictors):
    rows = [_rows("mlp", n) for n in range(1, 11)]

    async def concurrently():
        client = grpcaio.InferenceServerClient(server.grpc_url)
        try:
            results = await asyncio.gather(*(client.infer("mlp", [_grpc_input(r)], model_version="2") for r in rows))
        finally:
            await client.close()
        return [r.as_numpy("targets") for r in results]

    for got, r in zip(asyncio.run(concurrently()), rows):
        np.testing.assert_allclose(got, predictors["mlp", "2"].predict(r), rtol=1e-6)

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
    for i, r in enumerate(rows):
        client.async_stream_infer("mlp", [_grpc_input(r)], model_version="1", request_id=f"r{i}")
    client.async_stream_infer("nothing", [_grpc_input(rows[0])], request_id="bad")
    got = {}
    for _ in range(len(rows) + 1):
        result, error = answers.get(timeout=30)
        if error is not None:
            got["bad"] = error
        else:
            got[result.get_response().id] = result.as_numpy("targets")
    client.stop_stream()
    client.close()
    assert "not served" in str(got.pop("bad"))
    for i, r in enumerate(rows):
        np.testing.assert_allclose(got[f"r{i}"], predictors["mlp", "1"].predict(r), rtol=1e-6)


def test_grpc_errors_are_statuses(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    wrong = grpcclient.InferInput("features", [1, 2], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 2\].*expected \[rows, 1\]") as err:
        client.infer("seed", [wrong])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nothing")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.infer("seed", [_grpc_input(_rows("seed", 1))], model_version="7")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "serves version(s) 1, 2" in err.value.message()
    client.close()
