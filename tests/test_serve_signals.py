"""Signals and health on a real server: gRPC's grpc.health.v1.Health (the stub grpcio-health-checking ships)
answers SERVING when ready and NOT_SERVING from SIGTERM on, while the REST requests in flight are still being
finished; SIGHUP reads the repository again (poll mode without waiting for the next poll, explicit mode for
the loaded models) or is ignored with a log line (mode none), and the requests in flight are answered."""
from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from servers import infer_json, metric, request, serving
from torchport.export.triton import write_triton_repository

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _held(server, values: list[float]) -> tuple[list, list[threading.Thread]]:
    """One REST request per value, each in its thread; returns once all of them wait in the batcher."""
    results: list = []
    threads = [threading.Thread(target=lambda v=v: results.append(infer_json(server, [[v]]))) for v in values]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while metric(request(server, "GET", "/metrics")[2].decode(), "torchport_queued_requests") < len(values):
        assert time.monotonic() < deadline, "the requests did not reach the batcher"
        time.sleep(0.02)
    return results, threads


def test_grpc_health_is_serving_when_ready_and_not_serving_while_draining(seed_bundle):
    with serving(seed_bundle, "--max-queue-delay-us", "3000000", grpc=True) as server:
        channel = grpc.insecure_channel(server.grpc_url)
        checks = health_pb2_grpc.HealthStub(channel)
        inference = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        before = {name: checks.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                  for name in ("", "inference.GRPCInferenceService")}
        with pytest.raises(grpc.RpcError) as unknown:
            checks.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        results, threads = _held(server, [1.0, 2.0, 3.0, 4.0])
        server.proc.send_signal(signal.SIGTERM)
        deadline, during = time.monotonic() + 2, None
        while during != NOT_SERVING and time.monotonic() < deadline:
            during = checks.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        ready = inference.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
        answered_while_draining = len(results)
        for t in threads:
            t.join(30)
        code = server.proc.wait(timeout=30)
        channel.close()
    assert before == {"": SERVING, "inference.GRPCInferenceService": SERVING}
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert during == NOT_SERVING and ready is False and answered_while_draining == 0
    assert [status for status, _ in results] == [200] * 4 and code == 0


def test_sighup_reloads_the_repository_and_drops_no_request(model_versions, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repository(model_versions["seed", "1"], repo, name="seed", version=1)
    with serving(repo, "--model-control-mode", "poll", "--repository-poll-secs", "3600",
                 "--max-queue-delay-us", "1000000") as server:
        write_triton_repository(model_versions["seed", "2"], repo, name="seed", version=2)
        results, threads = _held(server, [1.0, 2.0, 3.0])
        server.proc.send_signal(signal.SIGHUP)  # no poll for an hour: only SIGHUP can load version 2
        server.wait_for_log("loaded seed version 2", timeout=30)
        for t in threads:
            t.join(30)
        after = infer_json(server, [[3.0]])
        alive, log = server.proc.poll() is None, server.log
    assert [status for status, _ in results] == [200] * 3 and alive
    assert after[0] == 200 and after[1]["model_version"] == "2"
    assert "SIGHUP: reading the repository" in log


@pytest.mark.parametrize("mode", ["explicit", "none"])
def test_sighup_in_explicit_and_none_modes(model_versions, tmp_path, mode):
    repo = tmp_path / "repo"
    write_triton_repository(model_versions["seed", "1"], repo, name="seed", version=1)
    options = ("--model-control-mode", "explicit", "--load-model", "seed") if mode == "explicit" else ()
    with serving(repo, *options, "--max-queue-delay-us", "500000") as server:
        write_triton_repository(model_versions["seed", "2"], repo, name="seed", version=2)
        results, threads = _held(server, [1.0, 2.0])
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("loaded seed version 2" if mode == "explicit" else "SIGHUP ignored", timeout=30)
        for t in threads:
            t.join(30)
        after = infer_json(server, [[3.0]])
        alive = server.proc.poll() is None
    assert [status for status, _ in results] == [200] * 2 and alive
    assert after[0] == 200 and after[1]["model_version"] == ("2" if mode == "explicit" else "1")
