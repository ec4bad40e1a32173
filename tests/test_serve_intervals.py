"""Prediction intervals over the wire: a real `torchport serve` of the seed on 127.0.0.1, asked for the outputs
lower, upper and out_of_domain by stock tritonclient (HTTP with binary output, gRPC) and plain JSON; the
bounds equal Python's Predictor.predict_interval for the same rows (FP32 or FP64, as sent), at the request's interval_level
and interval_kind (an exact linear fit's: statsmodels' to 1e-6 of the width, centred on its float64 fit); a
request naming no outputs gets targets alone, as before; a model without intervals and a bad level are 400 /
INVALID_ARGUMENT naming the problem."""
from __future__ import annotations

import json

import numpy as np
import pytest
import statsmodels.api as sm
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import run_cli
from servers import request, serving
from torchport.runtime import Predictor
from torchport.train.datasets import load_dataset

ROWS = np.array([[0.5], [3.0], [4.4], [40.0]], np.float32)  # the last is 10x beyond the training range


@pytest.fixture(scope="module")
def server(seed_bundle):
    with serving(seed_bundle, grpc=True) as server:
        yield server


def _outputs(client_module, names, binary=None):
    if binary is None:
        return [client_module.InferRequestedOutput(n) for n in names]
    return [client_module.InferRequestedOutput(n, binary_data=binary) for n in names]


def _python(seed_bundle, level=0.95, kind="prediction"):
    return Predictor(seed_bundle).predict_interval(ROWS.astype(np.float64), level, kind)


def test_metadata_lists_the_interval_outputs(server):
    meta = httpclient.InferenceServerClient(server.url).get_model_metadata("seed")
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("targets", "FP32", [-1, 1]), ("lower", "FP64", [-1, 1]), ("upper", "FP64", [-1, 1]),
        ("out_of_domain", "BOOL", [-1])]
    grpc_meta = grpcclient.InferenceServerClient(server.grpc_url).get_model_metadata("seed")
    assert [o.name for o in grpc_meta.outputs] == ["targets", "lower", "upper", "out_of_domain"]


@pytest.mark.parametrize("binary", [True, False])
def test_rest_tritonclient_bounds_equal_pythons(server, seed_bundle, binary):
    client = httpclient.InferenceServerClient(server.url)
    tensor = httpclient.InferInput("features", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    names = ["targets", "lower", "upper", "out_of_domain"]
    answer = client.infer("seed", [tensor], outputs=_outputs(httpclient, names, binary),
                          parameters={"interval_level": 0.9})
    expected = _python(seed_bundle, 0.9)
    np.testing.assert_array_equal(answer.as_numpy("lower"), expected.lower)
    np.testing.assert_array_equal(answer.as_numpy("upper"), expected.upper)
    np.testing.assert_array_equal(answer.as_numpy("targets"), expected.prediction)
    assert answer.as_numpy("out_of_domain").tolist() == [False, False, False, True]


def test_grpc_bounds_equal_pythons_for_the_mean(server, seed_bundle):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("features", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    answer = client.infer("seed", [tensor], outputs=_outputs(grpcclient, ["lower", "upper", "out_of_domain"]),
                          parameters={"interval_level": 0.8, "interval_kind": "mean"})
    expected = _python(seed_bundle, 0.8, "mean")
    np.testing.assert_array_equal(answer.as_numpy("lower"), expected.lower)
    np.testing.assert_array_equal(answer.as_numpy("upper"), expected.upper)
    assert answer.as_numpy("out_of_domain").tolist() == [False, False, False, True]
    assert answer.as_numpy("targets") is None


def test_plain_json_default_level_and_no_outputs(server, seed_bundle):
    body = {"inputs": [{"name": "features", "shape": [4, 1], "datatype": "FP32", "data": ROWS.ravel().tolist()}],
            "outputs": [{"name": "upper"}, {"name": "out_of_domain"}]}
    status, _, raw = request(server, "POST", "/v2/models/seed/infer", json.dumps(body).encode())
    assert status == 200, raw
    outputs = {o["name"]: o for o in json.loads(raw)["outputs"]}
    assert list(outputs) == ["upper", "out_of_domain"]
    assert outputs["upper"]["datatype"] == "FP64" and outputs["upper"]["shape"] == [4, 1]
    assert outputs["upper"]["data"] == _python(seed_bundle).upper.ravel().tolist()
    assert outputs["out_of_domain"]["data"] == [False, False, False, True]
    plain = {"inputs": body["inputs"]}
    status, _, raw = request(server, "POST", "/v2/models/seed/infer", json.dumps(plain).encode())
    assert status == 200 and [o["name"] for o in json.loads(raw)["outputs"]] == ["targets"]


def test_bad_levels_and_kinds_fail_alone(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("features", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[3.0]], np.float32))
    with pytest.raises(InferenceServerException, match="level must be a number strictly between 0 and 1") as e:
        client.infer("seed", [tensor], outputs=_outputs(grpcclient, ["lower"]), parameters={"interval_level": 1.5})
    assert "INVALID_ARGUMENT" in str(e.value.status())
    body = {"inputs": [{"name": "features", "shape": [1, 1], "datatype": "FP32", "data": [3.0]}],
            "outputs": [{"name": "lower"}], "parameters": {"interval_kind": "median"}}
    status, _, raw = request(server, "POST", "/v2/models/seed/infer", json.dumps(body).encode())
    assert status == 400 and "kind must be 'prediction' or 'mean'" in json.loads(raw)["error"]


def test_a_model_without_intervals_says_so(mlr_mlp_bundle):
    with serving(mlr_mlp_bundle) as server:
        meta = httpclient.InferenceServerClient(server.url).get_model_metadata("mlr-mlp")
        assert [o["name"] for o in meta["outputs"]] == ["targets"]
        body = {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 42.0, 3.0]}],
                "outputs": [{"name": "lower"}]}
        status, _, raw = request(server, "POST", "/v2/models/mlr-mlp/infer", json.dumps(body).encode())
        assert status == 400
        assert "unknown output 'lower'" in json.loads(raw)["error"]
        assert "keeps nothing to make intervals from" in json.loads(raw)["error"]


def test_an_exact_fits_bounds_over_rest_and_grpc_equal_statsmodels(tmp_path):
    """plant_richness_mlr solved exactly: REST (JSON) and gRPC bounds are centred on the float64 estimates the
    bundle keeps, equal to Python's and to statsmodels' get_prediction to 1e-6 of the width (both kinds, two
    levels); ``targets`` stays the model's float32 answer."""
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--no-plots", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = load_dataset("plant_richness_mlr")
    rows = data.X.astype(np.float32)
    fit = sm.OLS(data.y.ravel(), sm.add_constant(data.X)).fit()
    p = Predictor(out)
    with serving(out, grpc=True) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for level, kind in ((0.95, "prediction"), (0.8, "prediction"), (0.95, "mean"), (0.8, "mean")):
            parameters = {"interval_level": level, "interval_kind": kind}
            tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            got = client.infer("mlr", [tensor], outputs=_outputs(grpcclient, ["targets", "lower", "upper"]),
                               parameters=parameters)
            body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                                "data": rows.ravel().tolist()}],
                    "outputs": [{"name": "lower"}, {"name": "upper"}], "parameters": parameters}
            status, _, raw = request(server, "POST", "/v2/models/mlr/infer", json.dumps(body).encode())
            assert status == 200, raw
            rest = {o["name"]: np.array(o["data"]) for o in json.loads(raw)["outputs"]}
            expected = p.predict_interval(rows.astype(np.float64), level, kind)
            frame = fit.get_prediction(sm.add_constant(rows.astype(np.float64), has_constant="add")).summary_frame(
                alpha=1 - level)
            prefix = "obs" if kind == "prediction" else "mean"
            low, high = frame[f"{prefix}_ci_lower"].to_numpy(), frame[f"{prefix}_ci_upper"].to_numpy()
            for lower, upper in ((got.as_numpy("lower")[:, 0], got.as_numpy("upper")[:, 0]),
                                 (rest["lower"], rest["upper"])):
                np.testing.assert_array_equal(lower, expected.lower[:, 0])
                np.testing.assert_array_equal(upper, expected.upper[:, 0])
                assert max(np.max(np.abs(lower - low) / (high - low)), np.max(np.abs(upper - high) / (high - low))) \
                    < 1e-6
            np.testing.assert_array_equal(got.as_numpy("targets"), expected.prediction)
        # FP64 rows (values float32 cannot hold): every encoding of the request gives Python's bounds on them
        exact = p.predict_interval(data.X, 0.9)
        tensor = grpcclient.InferInput("features", list(data.X.shape), "FP64")
        tensor.set_data_from_numpy(data.X)
        got = client.infer("mlr", [tensor], outputs=_outputs(grpcclient, ["lower", "upper"]),
                           parameters={"interval_level": 0.9})
        np.testing.assert_array_equal(got.as_numpy("lower")[:, 0], exact.lower[:, 0])
        np.testing.assert_array_equal(got.as_numpy("upper")[:, 0], exact.upper[:, 0])
        for data_field in (data.X.ravel().tolist(), data.X.tolist()):  # flat and nested JSON
            body = {"inputs": [{"name": "features", "shape": list(data.X.shape), "datatype": "FP64",
                                "data": data_field}],
                    "outputs": [{"name": "lower"}, {"name": "upper"}], "parameters": {"interval_level": 0.9}}
            status, _, raw = request(server, "POST", "/v2/models/mlr/infer", json.dumps(body).encode())
            assert status == 200, raw
            rest = {o["name"]: np.array(o["data"]) for o in json.loads(raw)["outputs"]}
            np.testing.assert_array_equal(rest["lower"], exact.lower[:, 0])
            np.testing.assert_array_equal(rest["upper"], exact.upper[:, 0])
