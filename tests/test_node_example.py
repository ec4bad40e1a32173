"""The Node.js example app (examples/node, onnxruntime-node) answers like Python's Predictor to 1e-6 (a float64
bundle: within its parity bound), and its prediction intervals and domain flags (examples/node/intervals.mjs)
like predict_interval to 1e-5."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from conftest import ROOT
from nist import float64_filip
from torchport.export import write_bundle
from torchport.runtime import Predictor
from torchport.train.models import ModelSpec, build_model

APP = ROOT / "examples" / "node"


def score_with_node(bundle, rows):
    assert shutil.which("node"), "node is not installed: see README (make setup needs Node.js 18+)"
    assert (APP / "node_modules" / "onnxruntime-node").is_dir(), "run `make setup` (npm ci in examples/node)"
    proc = subprocess.run(["node", str(APP / "score.mjs"), str(bundle)], input=json.dumps(rows),
                          capture_output=True, text=True, timeout=120)
    return proc


def test_node_matches_python_on_the_seed(seed_bundle):
    rows = [[3.0], [0.0], [1.0]] + np.random.default_rng(0).normal(2, 1, size=(100, 1)).tolist()
    proc = score_with_node(seed_bundle, rows)
    assert proc.returncode == 0, proc.stderr
    ours = np.array(json.loads(proc.stdout))
    np.testing.assert_allclose(ours, Predictor(seed_bundle).predict(np.array(rows)), atol=1e-6, rtol=0)
    assert ours[0, 0] == pytest.approx(2.403, abs=0.01)


def test_node_matches_python_on_an_mlp_with_names(tmp_path):
    torch.manual_seed(3)
    spec = ModelSpec("mlp", 3, 2, hidden=(16, 8), activation="gelu", scale_features=True, scale_targets=True)
    module = build_model(spec)
    write_bundle(module, spec, ["a", "b", "c"], ["p", "q"], tmp_path / "mlp")
    x = np.random.default_rng(1).normal(size=(64, 3))
    as_objects = [{"c": float(r[2]), "a": float(r[0]), "b": float(r[1])} for r in x]  # by name, any order
    proc = score_with_node(tmp_path / "mlp", as_objects)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.array(json.loads(proc.stdout)), Predictor(tmp_path / "mlp").predict(x),
                               atol=1e-6, rtol=0)


def test_node_refuses_a_tampered_model(seed_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(seed_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-1] ^= 1
    (bad / "model.onnx").write_bytes(bytes(data))
    proc = score_with_node(bad, [[3.0]])
    assert proc.returncode == 2 and "does not match the manifest" in proc.stderr


def test_node_scores_a_float64_bundle_in_float64(tmp_path):
    """NIST's Filip, which float32 cannot hold: the bundle takes and answers float64, and so does Node."""
    t, out, manifest = float64_filip(tmp_path)
    proc = score_with_node(out, t.X.tolist())  # its golden cases are checked in float64 too, else exit 2
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.array(json.loads(proc.stdout)), Predictor(out).predict(t.X),
                               atol=manifest["golden"]["bound"][0], rtol=0)
def _node_intervals(bundle, rows, *options):
    proc = subprocess.run(["node", str(APP / "score.mjs"), str(bundle), *options], input=json.dumps(rows),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_node_intervals_equal_pythons(seed_bundle):
    """examples/node/intervals.mjs (the t quantile computed in JavaScript) against predict_interval, both kinds,
    with a row 10x beyond the training range."""
    rows = [[0.5], [3.0], [44.0]] + np.random.default_rng(0).normal(2, 1, size=(50, 1)).tolist()
    p = Predictor(seed_bundle)
    for level, options in ((0.9, ()), (0.8, ("--mean",))):
        ours = _node_intervals(seed_bundle, rows, "--interval", str(level), *options)
        expected = p.predict_interval(np.array(rows), level, "mean" if options else "prediction")
        for key in ("lower", "upper", "prediction"):
            np.testing.assert_allclose(np.array(ours[key]), getattr(expected, key), atol=1e-5, rtol=0)
        assert ours["out_of_domain"] == expected.out_of_domain.tolist() and ours["out_of_domain"][2]


def test_node_conformal_intervals_equal_pythons(tmp_path):
    from sklearn.datasets import load_diabetes
    from torchport.export.bundle_writer import write_from_regressor
    from torchport.train.datasets import Dataset
    from torchport.train.estimator import Regressor
    X, y = load_diabetes(return_X_y=True)
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    reg = Regressor(model="mlp", hidden=(8,), epochs=40, val_fraction=0.3).fit(X, y.reshape(-1, 1))
    write_from_regressor(reg, Dataset("diabetes", "sklearn", X, y.reshape(-1, 1), names, ["y"]), tmp_path / "b",
                         plots=False)
    rows = [dict(zip(names, map(float, r))) for r in X[:20]] + [dict(zip(names, map(float, X[0] * 10)))]
    ours = _node_intervals(tmp_path / "b", rows, "--interval", "0.9")
    expected = Predictor(tmp_path / "b").predict_interval(np.vstack([X[:20], X[0] * 10]), 0.9)
    # bounds to 1e-5 of their size (targets of about 25-350: the two runtimes' float32 answers may differ by an
    # ulp, as Python runs model.large_batch.onnx), the half-widths computed the same to 1e-12
    np.testing.assert_allclose(np.array(ours["lower"]), expected.lower, rtol=1e-5)
    np.testing.assert_allclose(np.array(ours["upper"]), expected.upper, rtol=1e-5)
    np.testing.assert_allclose(np.array(ours["upper"]) - np.array(ours["prediction"]),
                               expected.upper - np.asarray(expected.prediction, np.float64), rtol=1e-12)
    assert ours["out_of_domain"] == expected.out_of_domain.tolist() and ours["out_of_domain"][-1]
