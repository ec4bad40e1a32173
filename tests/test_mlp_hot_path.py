"""MLPs: the scaling folded into the first and last layers' weights (verified, and not where float32 would lose
digits), and the Predictor's cache-sized chunks shared out between threads, answering like a plain session."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import run_cli
from torchport.runtime import Predictor
from torchport.runtime.errors import InputError
from torchport.runtime.hot_path import THREADED_CHUNKS, cache_chunk_rows
from torchport.runtime.plan import Regime


@pytest.fixture(scope="module")
def mlp_bundle(mlr_mlp_bundle):
    return mlr_mlp_bundle


def _plain(bundle, name="model.onnx"):
    return ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"])


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 4, n), rng.uniform(-30, 30, n), rng.uniform(0, 1000, n)]).astype(np.float32)


def test_scaling_is_folded_into_the_gemms_and_verified(mlp_bundle):
    manifest = json.loads((mlp_bundle / "manifest.json").read_text())
    graph = manifest["export"]["large_batch_graph"]
    assert graph["rewrites"] == {"fold_scaling": 4} and graph["ops"] == ["Gemm", "Relu"]
    assert [n.op_type for n in onnx.load(str(mlp_bundle / "model.large_batch.onnx")).graph.node] == \
        ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert {"Sub", "Div", "Mul", "Add"} <= set(manifest["export"]["ops"])  # model.onnx stays as torch wrote it
    pairs = {(p["reference"], p["candidate"]): p for p in manifest["parity"]["pairs"]}
    assert pairs["float64", "onnxruntime_large_batch"]["passed"] and manifest["parity"]["passed"]


@pytest.mark.parametrize("rows", [1, 7, 64, 65, 2 * cache_chunk_rows(32) - 1, 2 * cache_chunk_rows(32),
                                  10 * cache_chunk_rows(32) + 3])
def test_every_size_answers_like_a_plain_session_on_model_onnx(mlp_bundle, rows):
    p = Predictor(mlp_bundle, providers="cpu")
    x = _rows(rows, rows)
    expected = _plain(mlp_bundle).run(None, {"features": x})[0]
    np.testing.assert_allclose(p.predict(x), expected, rtol=1e-5, atol=1e-5)
    out = np.full((rows, 1), np.nan, dtype=np.float32)
    assert p.predict(x, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    same_graph = _plain(mlp_bundle, "model.large_batch.onnx").run(None, {"features": x})[0]
    np.testing.assert_allclose(p.predict(np.asfortranarray(x.astype(np.float64))), same_graph, rtol=1e-6, atol=1e-6)


def test_shared_chunks_run_on_helper_threads_and_refuse_the_first_bad_row(mlp_bundle):
    p = Predictor(mlp_bundle, providers="cpu", intra_op_threads=2)
    chunk = cache_chunk_rows(32, p.engine.dtype.itemsize)
    x = _rows(16 * chunk)
    p.predict(x)
    regime = p.plan.regime(len(x))
    # chunks past THREADED_CHUNKS of them (below, the threaded graph runs the batch whole on both threads)
    assert regime == p.plan.regime(THREADED_CHUNKS * chunk + 1) and regime.chunk_rows == chunk and regime.workers == 2
    assert p.plan.regime(THREADED_CHUNKS * chunk) == Regime("model.threaded.onnx", 2, spin=True)
    assert p.engine.runners[regime]._helpers is not None  # the helper threads took part
    for bad in ([15 * chunk + 5], [3 * chunk + 1, 12 * chunk]):
        y = x.copy()
        y[bad, 1] = np.nan
        with pytest.raises(InputError, match=f"row {bad[0]} "):
            p.predict(y)
    y = x.copy()
    y[9 * chunk, 2] = np.inf
    with pytest.raises(InputError, match=f"row {9 * chunk} .*'dist_mainland'"):
        p.predict(y)
    assert np.isfinite(Predictor(mlp_bundle, providers="cpu", allow_nonfinite=True).predict(x)).all()


def test_raw_unit_scale_keeps_its_subtraction_and_passes_parity(tmp_path):
    """Longley's raw columns (the year's mean is 400 of its stds from zero): folding the mean into the first
    bias would lose float32 digits, so only the division is folded."""
    import statsmodels.api as sm
    data = tmp_path / "longley.csv"
    sm.datasets.longley.load_pandas().data.to_csv(data, index=False)
    out = tmp_path / "longley"
    proc = run_cli("train", "--data", str(data), "--target", "TOTEMP", "--model", "mlp", "--hidden", "16",
                   "--epochs", "200", "--optimizer", "adam", "--no-progress", "--no-plots", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    graph = manifest["export"]["large_batch_graph"]
    assert graph["rewrites"] == {"fold_scaling": 3} and "Sub" in graph["ops"] and "Div" not in graph["ops"]
    assert manifest["parity"]["passed"]
