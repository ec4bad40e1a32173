"""The Node.js example app (examples/node, onnxruntime-node) answers like Python's Predictor to 1e-6 (a float64
bundle: within its parity bound), and its prediction intervals and domain flags (examples/node/intervals.mjs)
like predict_interval to 1e-5 (an exact linear fit's bounds like statsmodels' to 1e-6 of the width)."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import statsmodels.api as sm
import torch

from conftest import ROOT, run_cli
from nist import float64_filip
from torchport.export import write_bundle
from torchport.runtime import Predictor
from torchport.train.datasets import load_dataset
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
    with a row 10x beyond the training range; the reasons read as Python's, large and small numbers in %g's
    exponent form too."""
    rows = [[0.5], [3.0], [44.0], [12345678.9], [-0.000012345]] + \
        np.random.default_rng(0).normal(2, 1, size=(50, 1)).tolist()
    p = Predictor(seed_bundle)
    for level, options in ((0.9, ()), (0.8, ("--mean",))):
        ours = _node_intervals(seed_bundle, rows, "--interval", str(level), *options)
        expected = p.predict_interval(np.array(rows), level, "mean" if options else "prediction")
        for key in ("lower", "upper", "prediction"):
            np.testing.assert_allclose(np.array(ours[key]), getattr(expected, key), atol=1e-5, rtol=0)
        assert ours["out_of_domain"] == expected.out_of_domain.tolist() and ours["out_of_domain"][2]
        assert ours["reasons"] == list(expected.reasons) and "1.23457e+07 above" in ours["reasons"][3]


def test_node_centres_an_exact_fit_on_its_float64_estimates(tmp_path):
    """plant_richness_mlr solved exactly: Node's bounds (centred in JavaScript on the estimates the manifest
    keeps) equal statsmodels' to 1e-6 of the width, both kinds, two levels, and Python's to 1e-12 of it; its
    prediction is the bundle's float32 answer, as Python's is."""
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--no-plots", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = load_dataset("plant_richness_mlr")
    rows = np.vstack([data.X, data.X.max(axis=0) * 10]).astype(np.float32).astype(np.float64)
    fit = sm.OLS(data.y.ravel(), sm.add_constant(data.X)).fit()
    p = Predictor(out)
    for level, options in ((0.95, ()), (0.8, ()), (0.95, ("--mean",)), (0.8, ("--mean",))):
        kind = "mean" if options else "obs"
        frame = fit.get_prediction(sm.add_constant(rows, has_constant="add")).summary_frame(alpha=1 - level)
        low, high = frame[f"{kind}_ci_lower"].to_numpy(), frame[f"{kind}_ci_upper"].to_numpy()
        width = high - low
        ours = _node_intervals(out, rows.tolist(), "--interval", str(level), *options)
        lower, upper = np.array(ours["lower"])[:, 0], np.array(ours["upper"])[:, 0]
        assert max(np.max(np.abs(lower - low) / width), np.max(np.abs(upper - high) / width)) < 1e-6
        expected = p.predict_interval(rows, level, "mean" if options else "prediction")
        assert np.max(np.abs(lower - expected.lower[:, 0]) / width) < 1e-12
        assert np.max(np.abs(upper - expected.upper[:, 0]) / width) < 1e-12
        np.testing.assert_allclose(np.array(ours["prediction"]), expected.prediction, rtol=1e-6)
        assert ours["out_of_domain"] == expected.out_of_domain.tolist() and ours["out_of_domain"][-1]


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


@pytest.mark.parametrize("options, named", [
    (["--interval=0.9"], '"--interval=0.9"'), (["--intreval", "0.9"], '"--intreval"'), (["--verbose"], '"--verbose"'),
    (["--interval", "0.9", "--mean", "extra"], '"extra"'), (["--mean"], "--mean goes with --interval"),
    (["--interval", "0.9", "--interval", "0.8"], "--interval is given twice")])
def test_node_refuses_an_unknown_option_by_name(seed_bundle, options, named):
    """score.mjs takes --interval LEVEL and --mean (with --interval) only: anything else is one usage line and
    exit 2, not plain predictions as if the option had not been given."""
    assert shutil.which("node"), "node is not installed: see README (make setup needs Node.js 18+)"
    proc = subprocess.run(["node", str(APP / "score.mjs"), str(seed_bundle), *options], input="[[3.0]]",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("torchport-score: error: ") and named in proc.stderr
