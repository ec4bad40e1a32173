"""model.threaded.onnx: the large-batch graph with each hidden layer's bias carried in a column of ones, the
graph ONNX Runtime runs whole batches of on several threads; written by the real exporter, run by real ONNX
Runtime, checked against torch."""
import json
import pickle
import shutil
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from conftest import manifest_pair
from torchport.export.bundle_writer import _failing_variants
from torchport.export.cli_options import graph_lines
from torchport.export.exported import export_program
from torchport.export.formats import export_onnx
from torchport.runtime import Predictor
from torchport.runtime.bundle import LARGE_BATCH_FILE, THREADED_FILE, Bundle, ParityReport
from torchport.benchmarks.under_load import busy_processes
from torchport.runtime.cpus import Neighbours, usable_cpus
from torchport.runtime.hot_path import CALM_THREADS_FROM_FLOP, THREADED_CHUNKS, cache_chunk_rows
from torchport.runtime.plan import Regime


def _export(module: nn.Module, n_features: int, tmp_path, dtype=torch.float32):
    """Export ``module`` with both rewritten graphs asked for; the export record and the graphs' paths."""
    paths = {name: tmp_path / name for name in ("model.onnx", LARGE_BATCH_FILE, THREADED_FILE)}
    n_targets = module(torch.zeros(1, n_features, dtype=dtype)).shape[1]
    record = export_onnx(export_program(module, n_features, dtype=dtype), paths["model.onnx"], 18,
                         [f"x{i}" for i in range(n_features)], [f"y{i}" for i in range(n_targets)],
                         large_batch_path=paths[LARGE_BATCH_FILE], threaded_path=paths[THREADED_FILE])
    return record, paths


def _run(path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]


def test_every_hidden_bias_rides_in_the_ones_column_with_torchs_answers(tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 24), nn.ReLU(), nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 16), nn.ReLU(),
                           nn.Linear(16, 2)).eval()
    record, paths = _export(module, 3, tmp_path)
    assert record.threaded_graph is not None and record.threaded_graph.rewrites == {"fold_hidden_biases": 3}
    graph = onnx.load(str(paths[THREADED_FILE])).graph
    ops = [n.op_type for n in graph.node]
    assert ops == ["Pad", "MatMul", "Relu", "MatMul", "Relu", "MatMul", "Relu", "Gemm"]  # the last keeps its bias
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    # one row more (the bias) in each, one column more (the ones unit) in every layer but the last hidden one
    assert [weights[n.input[1]] for n in matmuls] == [(4, 25), (25, 41), (41, 16)]
    x = np.random.default_rng(1).normal(0, 3, size=(3000, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    for threads in (1, 2):
        np.testing.assert_allclose(_run(paths[THREADED_FILE], x, threads), expected, rtol=1e-5, atol=1e-5)


def test_a_float64_graph_keeps_float64(tmp_path):
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)).double().eval()
    record, paths = _export(module, 2, tmp_path, dtype=torch.float64)
    assert record.threaded_graph.rewrites == {"fold_hidden_biases": 2}
    x = np.random.default_rng(2).normal(0, 5, size=(2000, 2))
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = _run(paths[THREADED_FILE], x, 2)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


class TwoHeads(nn.Module):
    """Two Relu layers that read the same input (each gets its own ones column), then one output layer."""
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 8), nn.Linear(3, 8), nn.Linear(16, 1)

    def forward(self, x):
        return self.out(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1))


def test_two_layers_on_one_input_each_get_their_own_ones(tmp_path):
    torch.manual_seed(2)
    module = TwoHeads().eval()
    record, paths = _export(module, 3, tmp_path)
    assert record.threaded_graph.rewrites == {"fold_hidden_biases": 2}
    assert [n.op_type for n in onnx.load(str(paths[THREADED_FILE])).graph.node].count("Pad") == 2
    x = np.random.default_rng(3).normal(0, 2, size=(500, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(paths[THREADED_FILE], x, 2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [
    [nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)],  # tanh(1) is not 1: no ones column can pass through it
    [nn.Linear(3, 1)],  # no hidden layer
])
def test_no_threaded_graph_without_relu_layers(tmp_path, layers):
    record, paths = _export(nn.Sequential(*layers).eval(), 3, tmp_path)
    assert record.threaded_graph is None and not paths[THREADED_FILE].exists()


def test_the_checked_in_mlp_holds_it_verified_and_runs_it_on_two_threads(mlr_mlp_bundle):
    manifest = json.loads((mlr_mlp_bundle / "manifest.json").read_text())
    assert THREADED_FILE in manifest["files"]
    export = manifest["export"]
    assert export["threaded_graph"]["rewrites"] == {**export["large_batch_graph"]["rewrites"], "fold_hidden_biases": 2}
    assert manifest_pair(manifest, "float64", "onnxruntime_threaded")["passed"]  # verified on its own
    assert any(line.startswith(f"threaded graph: {THREADED_FILE}") for line in
               graph_lines(Bundle.open(mlr_mlp_bundle).manifest, True))
    p = Predictor(mlr_mlp_bundle, providers="cpu", intra_op_threads=2)
    chunk = cache_chunk_rows(32, 4)
    regime = p.plan.regime(4096)
    assert regime == Regime(THREADED_FILE, 2, spin=True)
    assert p.plan.regime(THREADED_CHUNKS * chunk + 1).chunk_rows == chunk  # larger batches: shared chunks
    x = np.random.default_rng(0).normal([2, 0, 500], [1, 20, 300], size=(4096, 3)).astype(np.float32)
    large = p.engine.run(Regime(LARGE_BATCH_FILE, 1), x, calm=False)
    threaded = p.engine.run(regime, x, calm=False)
    assert (THREADED_FILE, 2, True) in p.engine.sessions  # the threaded graph's own two-thread session ran it
    np.testing.assert_allclose(threaded, large, rtol=1e-5, atol=1e-5)  # float32 rounding apart
    np.testing.assert_allclose(p.predict(x), threaded, rtol=0, atol=0)
    # beside busy neighbours a small step runs on one thread, on the large-batch graph (unfused Relus cost there)
    assert p.engine.calm(regime, 4096) == Regime(LARGE_BATCH_FILE, 1)
    check = p.self_check()
    assert check.checked and check.of_bound <= 1
    again = pickle.loads(pickle.dumps(p))
    assert set(again.engine.graphs) == set(p.engine.graphs) and again.plan == p.plan


def test_one_thread_never_runs_it(mlr_mlp_bundle):
    p = Predictor(mlr_mlp_bundle, providers="cpu", intra_op_threads=1)
    assert all(r.graph != THREADED_FILE for r in p.plan.regimes())


def test_a_bundle_from_before_runs_without_it(mlr_mlp_bundle, tmp_path):
    """A bundle written before the threaded graph (no file, no record) loads and keeps the rules it had."""
    old = tmp_path / "old"
    shutil.copytree(mlr_mlp_bundle, old)
    (old / THREADED_FILE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"][THREADED_FILE], manifest["export"]["threaded_graph"]
    manifest["parity"]["pairs"] = [q for q in manifest["parity"]["pairs"] if q["candidate"] != "onnxruntime_threaded"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    p = Predictor(old, providers="cpu", intra_op_threads=2)
    assert THREADED_FILE not in p.engine.graphs
    assert {r.graph for r in p.plan.regimes()} == {LARGE_BATCH_FILE}  # 32 units: no threads without it
    x = np.random.default_rng(0).normal([2, 0, 500], [1, 20, 300], size=(5000, 3)).astype(np.float32)
    np.testing.assert_allclose(p.predict(x), Predictor(mlr_mlp_bundle, providers="cpu").predict(x), rtol=1e-5, atol=1e-5)


def test_beside_busy_processes_large_batches_keep_the_threads_without_spinning(mlr_mlp_bundle):
    p = Predictor(mlr_mlp_bundle, providers="cpu", intra_op_threads=2)
    regime = p.plan.regime(16000)
    assert regime == Regime(THREADED_FILE, 2, spin=True)
    big = -(-CALM_THREADS_FROM_FLOP // p.engine.flops_per_row())  # 13,889 rows of 2,304 FLOP
    procs = busy_processes(usable_cpus())
    try:
        neighbours = Neighbours(every_s=1.0)
        neighbours.free()
        time.sleep(1.1)
        assert neighbours.crowded(2)
        p.engine.neighbours = neighbours
        x = np.random.default_rng(0).normal([2, 0, 500], [1, 20, 300], size=(big, 3)).astype(np.float32)
        answer = p.predict(x)
        assert Regime(THREADED_FILE, 2) in p.engine.runners and regime not in p.engine.runners
        np.testing.assert_array_equal(answer, p.engine.run(regime, x, calm=False))  # the same graph's answers
        p.predict(x[:big - 1])  # less arithmetic: one thread, on the large-batch graph
        assert Regime(LARGE_BATCH_FILE, 1) in p.engine.runners
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_graph_failing_parity_is_left_out_alone(mlr_mlp_bundle):
    """Which rewritten graphs the exporter leaves out of a bundle (then verifies it again without them)."""
    manifest = json.loads((mlr_mlp_bundle / "manifest.json").read_text())
    present = {name: {} for name in ("model.onnx", LARGE_BATCH_FILE, THREADED_FILE)}

    def failing(*candidates: str, files=present) -> list[str]:
        obj = json.loads(json.dumps(manifest["parity"]))
        for p in obj["pairs"]:
            if p["candidate"] in candidates:
                p["passed"] = False
        return _failing_variants(ParityReport.from_json(obj, "parity"), files)

    assert failing() == []
    assert failing("onnxruntime_threaded", "onnxruntime") == [THREADED_FILE]  # the large-batch graph passed: kept
    assert failing("onnxruntime_large_batch") == [LARGE_BATCH_FILE]
    assert failing("onnxruntime") == [LARGE_BATCH_FILE, THREADED_FILE]  # only the Predictor: every variant
    assert failing("onnxruntime", files={"model.onnx": {}, LARGE_BATCH_FILE: {}}) == [LARGE_BATCH_FILE]
    assert failing("onnxruntime", files={"model.onnx": {}}) == []  # nothing left to leave out
    assert failing("onnxruntime_threaded", "onnxruntime_model") == []  # model.onnx fails too: not the rewrite


def test_shared_chunks_start_where_they_did_when_no_threaded_step_comes_first(mlr_mlp_bundle, tmp_path):
    """A 3-32-1 MLP (256 FLOP a row) reaches 4 MFLOP only at 15,625 rows, past its two 4,096-row chunks:
    its chunks start at two chunks, as without the threaded graph."""
    small = tmp_path / "small"
    shutil.copytree(mlr_mlp_bundle, small)
    manifest = json.loads((small / "manifest.json").read_text())
    manifest["model"]["hidden"] = [32]  # the rules read the model's shape from the manifest
    (small / "manifest.json").write_text(json.dumps(manifest))
    plan = Predictor(small, providers="cpu", intra_op_threads=2).plan
    assert plan.regime(8192) == Regime(LARGE_BATCH_FILE, 1, chunk_rows=4096, chunk_from=8191, workers=2)
    assert all(r.graph != THREADED_FILE for r in plan.regimes())


def test_an_mlp_on_diabetes_answers_like_torch_on_the_threaded_graph(tmp_path):
    """scikit-learn's diabetes table (442 rows, 10 features), a 64-64 MLP: the bundle holds the threaded graph,
    verified, and the Predictor's two-thread step on it answers like the fitted torch model and like the
    large-batch graph on one thread."""
    from sklearn.datasets import load_diabetes
    from torchport.export.bundle_writer import write_from_regressor
    from torchport.train.datasets import Dataset
    from torchport.train.estimator import Regressor
    X, y = load_diabetes(return_X_y=True)
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    reg = Regressor(model="mlp", hidden=(64, 64), epochs=30, seed=0).fit(X, y.reshape(-1, 1))
    manifest = write_from_regressor(reg, Dataset("diabetes", "sklearn", X, y.reshape(-1, 1), names, ["progression"]),
                                    tmp_path / "diabetes", plots=False)
    assert manifest.export.threaded_graph.rewrites["fold_hidden_biases"] == 2
    assert {p.candidate for p in manifest.parity.pairs if p.passed} >= {"onnxruntime_threaded", "onnxruntime"}
    p = Predictor(tmp_path / "diabetes", providers="cpu", intra_op_threads=2)
    rows = np.tile(X, (10, 1))  # 4,420 rows: the threaded step's range (from 417 rows of 9,600 FLOP)
    assert p.plan.regime(len(rows)) == Regime(THREADED_FILE, 2, spin=True)
    got = p.engine.run(p.plan.regime(len(rows)), rows, calm=False)
    scale = np.abs(y).max()
    np.testing.assert_allclose(got, reg.predict(rows), rtol=0, atol=1e-5 * scale)
    one_thread = p.engine.run(Regime(LARGE_BATCH_FILE, 1), rows, calm=False)
    np.testing.assert_allclose(got, one_thread, rtol=0, atol=1e-5 * scale)
