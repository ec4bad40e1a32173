"""One data plane under both transports: a NaN, an infinity or an FP64 value beyond float32 sent over gRPC
fails alone (INVALID_ARGUMENT) while the REST requests that arrive with it, batched together, are all
answered; an empty batch is answered alike over REST and gRPC; the statistics and /metrics count requests
from both transports the same way. Real server on 127.0.0.1, stock clients (tritonclient.grpc, the
protocol's own gRPC stub, plain HTTP)."""
from __future__ import annotations

import http.client
import json
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from servers import infer_body, metric, request, serving
from torchport.runtime import Predictor

REST_CALLS, ROUNDS = 12, 16
# (datatype, value, sent as raw_input_contents or as typed contents) of the bad gRPC request, per round
BAD = [("FP32", np.nan, "raw"), ("FP64", np.inf, "raw"), ("FP64", 1e300, "raw"), ("FP64", -3.5e38, "contents"),
       ("FP64", np.nan, "contents"), ("FP32", -np.inf, "contents"), ("FP64", 1e39, "raw"), ("FP32", np.inf, "raw")]


def _grpc_bad(stub, datatype: str, value: float, how: str) -> tuple[grpc.StatusCode, str]:
    """Send one two-row request whose second row holds ``value`` through the protocol's own stub; its status
    code and message."""
    values = np.array([2.0, value], dtype="<f4" if datatype == "FP32" else "<f8")
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="features", datatype=datatype, shape=[2, 1])
    if how == "contents":
        field = tensor.contents.fp32_contents if datatype == "FP32" else tensor.contents.fp64_contents
        field.extend(values.tolist())
    message = service_pb2.ModelInferRequest(model_name="seed", inputs=[tensor])
    if how == "raw":
        message.raw_input_contents.append(values.tobytes())
    try:
        stub.ModelInfer(message, timeout=30)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_a_bad_grpc_request_fails_alone_among_concurrent_rest_requests(seed_bundle):
    predictor = Predictor(seed_bundle)
    with serving(seed_bundle, "--max-batch-size", "64", "--max-queue-delay-us", "20000", grpc=True) as server:
        channel = grpc.insecure_channel(server.grpc_url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(REST_CALLS)]
        rest, bad = [], []
        for round_ in range(ROUNDS):
            barrier = threading.Barrier(REST_CALLS + 1)
            values = [0.5 + round_ + i / 10 for i in range(REST_CALLS)]

            def call_rest(i: int) -> None:
                barrier.wait()
                conn = connections[i]
                conn.request("POST", "/v2/models/seed/infer", infer_body([[values[i]]]),
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                rest.append((values[i], response.status, json.loads(response.read())))

            def call_grpc() -> None:
                barrier.wait()
                bad.append((BAD[round_ % len(BAD)], *_grpc_bad(stub, *BAD[round_ % len(BAD)])))

            threads = [threading.Thread(target=call_rest, args=(i,)) for i in range(REST_CALLS)]
            threads.append(threading.Thread(target=call_grpc))
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        text = request(server, "GET", "/metrics")[2].decode()
        stats = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            service_pb2.ModelStatisticsRequest(name="seed", version="1"), timeout=30).model_stats[0]
        for conn in connections:
            conn.close()
        channel.close()
    assert len(rest) == REST_CALLS * ROUNDS and len(bad) == ROUNDS
    failed = [r for r in rest if r[1] != 200]
    assert not failed, failed[:5]
    for value, _, answer in rest:
        assert answer["outputs"][0]["data"] == pytest.approx(predictor.predict([[value]])[0], rel=1e-6)
    for (datatype, value, how), code, details in bad:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (datatype, value, how, code, details)
        why = "beyond float32's range" if np.isfinite(value) else "NaN and infinite inputs are refused"
        assert "row 1 (0-based), column 0 ('area')" in details and why in details, details
    labels = {"model": "seed", "version": "1"}
    assert metric(text, "torchport_requests_total", outcome="success", **labels) == REST_CALLS * ROUNDS
    assert metric(text, "torchport_requests_total", outcome="bad_request", **labels) == ROUNDS
    assert stats.inference_stats.fail.count == ROUNDS and stats.inference_stats.success.count == REST_CALLS * ROUNDS
    # the good requests of a round were merged into few model calls: the bad one arrived among them
    assert metric(text, "torchport_executions_total", **labels) < REST_CALLS * ROUNDS / 2


def test_empty_batches_and_errors_are_answered_alike_on_both_transports(seed_bundle):
    with serving(seed_bundle, grpc=True) as server:
        status, _, body = request(server, "POST", "/v2/models/seed/infer", infer_body([[]], shape=[0, 1], data=[]))
        client = grpcclient.InferenceServerClient(server.grpc_url)
        empty = grpcclient.InferInput("features", [0, 1], "FP32")
        empty.set_data_from_numpy(np.empty((0, 1), np.float32))
        answer = client.infer("seed", [empty])
        wide = grpcclient.InferInput("features", [1, 2], "FP64")
        wide.set_data_from_numpy(np.zeros((1, 2)))
        with pytest.raises(InferenceServerException) as grpc_error:
            client.infer("seed", [wide])
        rest_error = request(server, "POST", "/v2/models/seed/infer", infer_body([[0.0, 0.0]], datatype="FP64"))
        text = request(server, "GET", "/metrics")[2].decode()
        client.close()
    assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [0, 1]
    assert answer.as_numpy("targets").shape == (0, 1) and answer.get_response().outputs[0].shape == [0, 1]
    message = json.loads(rest_error[2])["error"]
    assert rest_error[0] == 400 and grpc_error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert grpc_error.value.message() == message  # the same check, in the same words
    labels = {"model": "seed", "version": "1"}
    assert metric(text, "torchport_requests_total", outcome="success", **labels) == 2
    assert metric(text, "torchport_requests_total", outcome="bad_request", **labels) == 2
