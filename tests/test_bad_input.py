"""Bad input, faults and tampering: every bad invocation is one line and exit 2; the runtime and the
server, fuzzed with hypothesis, answer correctly or refuse clearly, and never crash or return a wrong shape."""
import json
import shutil
import socket

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import ROOT, run_cli, without_status
from servers import serving
from test_serve import _request
from torchport.runtime import Predictor


@pytest.fixture(scope="module")
def files(tmp_path_factory, seed_bundle):
    d = tmp_path_factory.mktemp("bad")
    (d / "ok.csv").write_text("area,y\n1,2\n2,3\n")
    (d / "letters.csv").write_text("y,a\n1,2\n3,oops\n")
    (d / "nan.csv").write_text("y,a\n1,2\n,3\n")
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    (d / "empty.csv").write_text("")
    (d / "noarea.csv").write_text("size\n1\n")
    (d / "data.json").write_text("{}")
    tampered = d / "tampered"
    shutil.copytree(seed_bundle, tampered)
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes()[:-1] + b"\x00")
    newer = d / "newer"
    shutil.copytree(seed_bundle, newer)
    m = json.loads((newer / "manifest.json").read_text())
    m["format_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(m))
    return d


BAD_INVOCATIONS = [
    (["train", "--data", "nope"], "unknown dataset 'nope'"),
    (["train", "--data", "missing.csv", "--target", "y"], "does not exist"),
    (["train", "--data", "binary.csv", "--target", "y"], "binary.csv"),
    (["train", "--data", "empty.csv", "--target", "y"], "empty.csv"),
    (["train", "--data", "data.json", "--target", "y"], "data.json: unsupported file type '.json'; use .csv"),
    (["train", "--data", "ok.csv"], "no target column given"),
    (["train", "--data", "ok.csv", "--target", "z"], "'z' not found"),
    (["train", "--data", "letters.csv", "--target", "y"], "row 2 (data row, 1-based), column 'a': expected a finite number, got 'oops'"),
    (["train", "--data", "nan.csv", "--target", "y"], "row 2 (data row, 1-based), column 'y': expected a finite number, got ''"),
    (["train", "--lr", "abc"], "argument --lr: expected a number, got 'abc'"),
    (["train", "--lr", "-1"], "lr must be a positive number; got -1.0 (--lr)"),
    (["train", "--epochs", "1.5"], "argument --epochs: expected a whole number, got '1.5'"),
    (["train", "--hidden", "32,x", "--model", "mlp"], "expected widths"),
    (["train", "--val-fraction", "1.5"], "val_fraction must be a number in [0, 1); got 1.5 (--val-fraction)"),
    (["train", "--patience", "5"], "needs a validation split"),
    (["train", "--opset", "99"], "opset 99 is out of range"),
    (["train", "--device", "tpu"], "invalid choice"),
    (["train", "--optimizer", "rmsprop"], "invalid choice"),
    (["verify", "no/such/bundle"], "not a bundle directory"),
    (["verify", "newer"], "newer than this torchport reads"),
    (["export", "no/such/bundle"], "not a bundle directory"),
    (["export", "tampered", "--triton", "repo"], "does not match the manifest"),
    (["predict", "tampered", "-i", "ok.csv", "-o", "o.csv"], "does not match the manifest"),
    (["predict", "SEED", "-i", "missing.csv", "-o", "o.csv"], "does not exist"),
    (["predict", "SEED", "-i", "noarea.csv", "-o", "o.csv"], "missing feature column(s) 'area'"),
    (["predict", "SEED", "-i", "ok.csv", "-o", "o.xlsx"], "unsupported file type '.xlsx'"),
    (["predict", "SEED", "-i", "ok.csv", "-o", "ok.csv"], "exists; use --force"),
    (["predict", "SEED", "-i", "ok.csv", "-o", "o.csv", "--chunk-rows", "0"], "expected a whole number >= 1"),
    (["predict", "SEED", "-i", "ok.csv", "-o", "o.csv", "--providers", "TPUExecutionProvider"],
     "unknown execution provider"),
    (["serve", "no/such/bundle"], "does not exist"),
    (["serve", "SEED", "--port", "70000"], "70000"),
    (["serve", "SEED", "--port", "PORT_IN_USE"], "PORT_IN_USE"),
    (["bench", "SEED", "--batch-sizes", "x"], "batch"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("args, message", BAD_INVOCATIONS, ids=[" ".join(a)[:60] for a, _ in BAD_INVOCATIONS])
def test_bad_invocation_is_one_line_and_exit_2(files, seed_bundle, args, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [str(seed_bundle) if a == "SEED" else port if a == "PORT_IN_USE" else a for a in args]
        message = message.replace("PORT_IN_USE", port)
        before = sorted(p.name for p in files.iterdir())
        proc = run_cli(*args, cwd=files, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(without_status(proc.stderr)) == 1, proc.stderr
    assert sorted(p.name for p in files.iterdir()) == before  # nothing written, nothing half-written


def test_at_least_twenty_kinds():
    assert len(BAD_INVOCATIONS) >= 20


# ---- runtime fuzzing -----------------------------------------------------------------------------------

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, ">f4", ">f8", np.int8, np.int32, np.int64,
                          np.uint16, np.bool_, np.complex64, np.object_, "U3"])


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    if draw(st.booleans()) and ndim == 2:
        shape = (shape[0], 1)
    if dtype.kind in "fc":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=16 if dtype.itemsize == 2 else 32)
    elif dtype.kind in "iu":
        elements = st.integers(0 if dtype.kind == "u" else -100, 100)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        elements = st.just("1.5")
    a = draw(hnp.arrays(dtype, shape, elements=elements)) if dtype.kind != "O" else \
        np.full(shape, 1.5, dtype=object)
    if draw(st.booleans()) and a.ndim == 2 and a.shape[0] > 1:
        a = a[::2]  # non-contiguous rows
    return a


@pytest.fixture(scope="module")
def seed_session(seed_bundle):
    return Predictor(seed_bundle, providers="cpu"), ort.InferenceSession(str(seed_bundle / "model.onnx"))


@pytest.mark.full
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=arrays())
def test_predict_never_crashes_or_answers_a_wrong_shape(seed_session, x):
    predictor, plain = seed_session
    try:
        y = predictor.predict(x)
    except (ValueError, TypeError) as e:
        message = str(e)
        assert message and "\n" not in message
        if x.dtype.kind in "fiu" and x.ndim == 2 and x.shape[1] == 1:
            assert "NaN and infinite inputs are refused" in message  # the only reason to refuse this input
        return
    assert x.dtype.kind in "fiu" and x.ndim == 2 and x.shape[1] == 1
    assert isinstance(y, np.ndarray) and y.shape == (x.shape[0], 1) and y.dtype == np.float32
    if len(x):
        reference = plain.run(None, {"features": np.ascontiguousarray(x, dtype=np.float32)})[0]
        np.testing.assert_array_equal(y, reference)


@pytest.mark.full
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.integers(-5, 5), st.text(max_size=2),
                                        st.none()), min_size=0, max_size=3), max_size=6))
def test_lists_of_rows_are_answered_or_refused(seed_session, rows):
    predictor, _ = seed_session
    try:
        y = predictor.predict(rows)
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    assert isinstance(y, list) and len(y) == len(rows) and all(len(r) == 1 for r in y)


# ---- server fuzzing ------------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=4), max_leaves=12)
tensor = st.fixed_dictionaries({
    "name": st.sampled_from(["features", "x", ""]) | st.integers(),
    "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
    "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "fp32", "BOOL"]) | json_values,
    "data": st.lists(st.floats(allow_nan=False) | st.integers() | st.text(max_size=2), max_size=6) | json_values,
})
payloads = st.one_of(json_values, st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2)}),
                     st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2), "outputs": json_values,
                                            "parameters": json_values}))


@pytest.fixture(scope="module")
def fuzz_server(seed_bundle):
    with serving(seed_bundle) as server:
        yield server.proc, server.port


@pytest.mark.full
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
def test_infer_endpoint_never_answers_5xx(fuzz_server, payload):
    proc, port = fuzz_server
    status, _, body = _request(port, "POST", "/v2/models/seed/infer", json.dumps(payload).encode(),
                               {"Content-Type": "application/json"})
    assert status < 500, body
    if status != 200:
        assert "error" in json.loads(body)
    assert proc.poll() is None


@pytest.mark.full
def test_server_still_answers_after_the_fuzzing(fuzz_server):
    proc, port = fuzz_server
    request = {"inputs": [{"name": "features", "shape": [1, 1], "datatype": "FP32", "data": [3.0]}]}
    status, _, body = _request(port, "POST", "/v2/models/seed/infer", json.dumps(request).encode(),
                               {"Content-Type": "application/json"})
    assert status == 200 and abs(json.loads(body)["outputs"][0]["data"][0] - 2.403) < 0.01


# ---- KServe manifest -----------------------------------------------------------------------------------

def test_kserve_manifest_has_what_kserve_requires_and_runs_a_real_command():
    doc = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    name = doc["metadata"]["name"]
    assert name and len(name) <= 63 and name.replace("-", "").isalnum() and name[0].isalpha() and name.islower()
    container = doc["spec"]["predictor"]["containers"][0]
    assert container["name"] == "kserve-container" and container["image"]
    assert {"containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert any(e["name"] == "STORAGE_URI" for e in container["env"])
    # the container's command line must parse with the real `torchport serve` options
    import argparse

    from torchport.runtime import cli_serve
    assert container["command"] == ["torchport"] and container["args"][0] == "serve"
    parser = argparse.ArgumentParser(exit_on_error=False)
    cli_serve.add_arguments(parser)
    args = parser.parse_args(container["args"][1:])
    assert str(args.path) == "/mnt/models" and args.port == 8080 and args.host == "0.0.0.0"


# ---- tampered bundles ----------------------------------------------------------------------------------

class Evil:
    """Pickles into a call of os.system: what a hostile checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def _rehash(bundle, name):
    from torchport.runtime.bundle import sha256_file
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][name]["sha256"] = sha256_file(bundle / name)
    m["files"][name]["bytes"] = (bundle / name).stat().st_size  # the loaders read no more than the size recorded
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_a_pickle_in_the_checkpoint_is_never_run(seed_bundle, tmp_path):
    import torch

    from torchport.export import load_module
    from torchport.runtime import BundleError
    evil = tmp_path / "evil"
    shutil.copytree(seed_bundle, evil)
    marker = tmp_path / "pwned"
    torch.save({"spec": {"kind": "linear", "n_features": 1, "n_targets": 1}, "state_dict": Evil(marker)},
               evil / "checkpoint.pt")
    _rehash(evil, "checkpoint.pt")  # even with a matching hash (a tampered manifest), nothing runs
    with pytest.raises(BundleError, match="holds more than weights and was refused without running it"):
        load_module(evil)
    proc = run_cli("verify", str(evil))
    assert proc.returncode == 2 and "refused without running it" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_onnx_inputs_that_disagree_with_the_manifest_are_refused(seed_bundle, tmp_path):
    from torchport.export import write_bundle
    from torchport.runtime import BundleError
    from torchport.train.models import ModelSpec, build_model
    spec = ModelSpec("linear", 3, 1)
    write_bundle(build_model(spec), spec, ["a", "b", "c"], ["y"], tmp_path / "three")
    swapped = tmp_path / "swapped"
    shutil.copytree(seed_bundle, swapped)
    shutil.copy(tmp_path / "three" / "model.onnx", swapped / "model.onnx")
    _rehash(swapped, "model.onnx")
    with pytest.raises(BundleError, match=r"model\.onnx: the graph's inputs .* disagree with the manifest"):
        Predictor(swapped)
