"""The Node.js example app (examples/node, onnxruntime-node) answers like Python's Predictor to 1e-6 (a float64
bundle: within its parity bound)."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from nist import table
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
    t = table("filip")
    out = tmp_path / "filip"
    proc = run_cli("train", "--data", str(t.csv(tmp_path / "filip.csv")), "--target", "y", "--out", str(out),
                   "--no-progress", "--no-plots", "--formats", "onnx")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["dtype"] == "float64"
    proc = score_with_node(out, t.X.tolist())  # its golden cases are checked in float64 too, else exit 2
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.array(json.loads(proc.stdout)), Predictor(out).predict(t.X),
                               atol=manifest["golden"]["bound"][0], rtol=0)
