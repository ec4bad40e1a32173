"""--large-batch-graph: a Gemm over one input feature becomes Mul+Add, with the same answers as torch."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from conftest import run_cli
from torchport.export.formats import export_onnx


def _export(module: nn.Module, n_features: int, tmp_path, large: bool) -> tuple[list[str], dict, np.ndarray]:
    path = tmp_path / f"m{int(large)}.onnx"
    n_targets = module(torch.zeros(1, n_features)).shape[1]
    info = export_onnx(module, n_features, path, 18, [f"x{i}" for i in range(n_features)],
                       [f"y{i}" for i in range(n_targets)], large_batch_graph=large)
    x = np.random.default_rng(1).normal(0, 3, size=(5000, n_features)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    return [n.op_type for n in onnx.load(str(path)).graph.node], info, got


@pytest.mark.parametrize("targets", [1, 3])
def test_one_feature_linear_becomes_mul_add_with_torchs_answers(tmp_path, targets):
    torch.manual_seed(targets)
    module = nn.Linear(1, targets)
    ops_default, info_default, y_gemm = _export(module, 1, tmp_path, large=False)
    ops, info, y = _export(module, 1, tmp_path, large=True)
    assert ops_default == ["Gemm"] and info_default["rewrites"] == {}
    assert ops == ["Mul", "Add"] and info["rewrites"] == {"gemm_k1_to_mul_add": 1}
    np.testing.assert_array_equal(y, y_gemm)  # one multiply and one add per element either way


def test_only_inner_dimension_one_is_rewritten(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    ops, info, _ = _export(mlp, 1, tmp_path, large=True)
    assert ops == ["Mul", "Add", "Tanh", "Gemm"] and info["rewrites"] == {"gemm_k1_to_mul_add": 1}
    ops, info, _ = _export(nn.Linear(3, 1), 3, tmp_path, large=True)
    assert ops == ["Gemm"] and info["rewrites"] == {}


def test_export_cli_writes_the_large_batch_graph_and_verifies_it(seed_bundle, tmp_path):
    out = tmp_path / "seed-lb"
    proc = run_cli("export", str(seed_bundle), "--out", str(out), "--large-batch-graph")
    assert proc.returncode == 0, proc.stderr
    assert "parity: PASSED" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["ops"] == ["Add", "Mul"] and manifest["parity"]["passed"]
    x = np.linspace(-2, 6, 1001, dtype=np.float32).reshape(-1, 1)
    run = lambda b: ort.InferenceSession(str(b / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"features": x})[0]
    np.testing.assert_array_equal(run(out), run(seed_bundle))


def test_cli_says_when_the_large_batch_graph_changes_nothing(tmp_path):
    """A model without a one-feature linear layer keeps its graph, and the user is told so."""
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "4", "--epochs", "50",
                   "--no-progress", "--no-plots",
                   "--out", str(out), "--large-batch-graph")
    assert proc.returncode == 0, proc.stderr
    assert "--large-batch-graph changed nothing" in proc.stderr
    assert json.loads((out / "manifest.json").read_text())["export"]["rewrites"] == {}
