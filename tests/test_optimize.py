"""The large-batch graph: a Gemm with inner dimension 1 becomes Mul+Add, with the same answers as torch."""
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from conftest import manifest_pair, run_cli
from torchport.export.exported import export_program
from torchport.export.formats import export_onnx


def _export(module: nn.Module, n_features: int, tmp_path, large: bool) -> tuple[list[str], dict, np.ndarray]:
    """Export ``module``; return the op types, export info and answers of model.onnx, or (``large``) of the
    large-batch graph, which must then have been written."""
    path, large_path = tmp_path / "model.onnx", tmp_path / "model.large_batch.onnx"
    large_path.unlink(missing_ok=True)
    n_targets = module(torch.zeros(1, n_features)).shape[1]
    info = export_onnx(export_program(module, n_features), path, 18, [f"x{i}" for i in range(n_features)],
                       [f"y{i}" for i in range(n_targets)], large_batch_path=large_path if large else None)
    assert large_path.is_file() == bool(info.large_batch_graph)
    chosen = large_path if large else path
    x = np.random.default_rng(1).normal(0, 3, size=(5000, n_features)).astype(np.float32)
    got = ort.InferenceSession(str(chosen), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    return [n.op_type for n in onnx.load(str(chosen)).graph.node], info, got


@pytest.mark.parametrize("targets", [1, 3])
def test_one_feature_linear_becomes_mul_add_with_torchs_answers(tmp_path, targets):
    torch.manual_seed(targets)
    module = nn.Linear(1, targets)
    ops_default, info_default, y_gemm = _export(module, 1, tmp_path, large=False)
    ops, info, y = _export(module, 1, tmp_path, large=True)
    assert ops_default == ["Gemm"] and info_default.large_batch_graph is None
    assert info.ops == ("Gemm",)  # model.onnx stays as torch exported it
    assert ops == ["Mul", "Add"] and info.large_batch_graph.to_json() == {
        "file": "model.large_batch.onnx", "rewrites": {"gemm_k1_to_mul_add": 1}, "ops": ["Add", "Mul"]}
    np.testing.assert_array_equal(y, y_gemm)  # one multiply and one add per element either way


def test_only_inner_dimension_one_is_rewritten(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    ops, info, _ = _export(mlp, 1, tmp_path, large=True)
    assert ops == ["Mul", "Add", "Tanh", "Gemm"] and info.large_batch_graph.rewrites == {"gemm_k1_to_mul_add": 1}
    info = export_onnx(export_program(nn.Linear(3, 1), 3), tmp_path / "k3.onnx", 18, ["a", "b", "c"], ["y"],
                       large_batch_path=tmp_path / "k3.large.onnx")
    assert info.ops == ("Gemm",) and info.large_batch_graph is None
    assert not (tmp_path / "k3.large.onnx").exists()


def test_bundle_holds_both_graphs_and_verify_checks_both(trained_seed_bundle, tmp_path):
    """`torchport train` writes model.large_batch.onnx by default; verify runs it against torch."""
    manifest = json.loads((trained_seed_bundle / "manifest.json").read_text())
    assert manifest["export"]["ops"] == ["Gemm"]
    assert manifest["export"]["large_batch_graph"]["ops"] == ["Add", "Mul"]
    assert "model.large_batch.onnx" in manifest["files"]
    assert manifest_pair(manifest, "float64", "onnxruntime_large_batch")["passed"]
    assert "large-batch graph: model.large_batch.onnx (ops Add, Mul)" in \
        (trained_seed_bundle.parent / "train_stdout.txt").read_text()
    x = np.linspace(-2, 6, 1001, dtype=np.float32).reshape(-1, 1)
    run = lambda f: ort.InferenceSession(str(trained_seed_bundle / f), providers=["CPUExecutionProvider"]).run(
        None, {"features": x})[0]
    np.testing.assert_array_equal(run("model.large_batch.onnx"), run("model.onnx"))
    proc = run_cli("verify", str(trained_seed_bundle), "--no-record")
    assert proc.returncode == 0, proc.stderr
    torch_line = re.search(r"max \|torch - float64\| = (\S+)", proc.stdout).group(1)
    assert f"max |onnxruntime_large_batch - float64| = {torch_line} (1x torch's)" in proc.stdout


def test_export_without_the_large_batch_graph(seed_bundle, tmp_path):
    out = tmp_path / "seed-gemm"
    proc = run_cli("export", str(seed_bundle), "--out", str(out), "--no-large-batch-graph")
    assert proc.returncode == 0, proc.stderr
    assert "large-batch graph: none (--no-large-batch-graph)" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["large_batch_graph"] is None and "model.large_batch.onnx" not in manifest["files"]
    assert not (out / "model.large_batch.onnx").exists() and manifest["parity"]["passed"]
    assert manifest_pair(manifest, "float64", "onnxruntime_large_batch") is None


def test_cli_says_when_there_is_no_large_batch_graph(tmp_path):
    """A model without a single-input linear layer or scaling gets no large-batch graph, and the user is told
    why."""
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "4", "--epochs", "50",
                   "--scale", "off", "--no-progress", "--no-plots", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "large-batch graph: none (the model has no linear layer with a single input and no scaling" in proc.stdout
    assert json.loads((out / "manifest.json").read_text())["export"]["large_batch_graph"] is None


def test_one_feature_mlp_runs_its_large_batch_graph_in_chunks(tmp_path):
    """An MLP over one feature gets a large-batch graph (first layer Mul+Add); the Predictor's chunked runs of
    it answer like a plain session on model.onnx."""
    from torchport.runtime import Predictor
    from torchport.runtime.hot_path import CHUNK_BYTES, CHUNK_FROM_BYTES, cache_chunk_rows

    out = tmp_path / "mlp1"
    proc = run_cli("train", "--model", "mlp", "--hidden", "8,4", "--epochs", "50", "--no-progress", "--no-plots",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    graph = json.loads((out / "manifest.json").read_text())["export"]["large_batch_graph"]
    assert graph["rewrites"]["gemm_k1_to_mul_add"] == 1 and "Gemm" in graph["ops"] and "Mul" in graph["ops"]
    p = Predictor(out, providers="cpu")
    x = np.random.default_rng(2).uniform(-1, 4, size=(CHUNK_FROM_BYTES // 4 + CHUNK_BYTES // 3, 1)).astype(np.float32)
    plain = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(p.predict(x), plain.run(None, {"features": x})[0], rtol=1e-5, atol=1e-5)
    assert p.plan.regime(len(x)).chunk_rows == cache_chunk_rows(8)  # it ran in cache-sized chunks
    assert p.plan.regime(len(x)) in p.engine.runners
