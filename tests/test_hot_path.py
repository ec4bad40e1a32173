"""The Predictor's hot path with real ONNX Runtime sessions: answers, buffer ownership, threads, cold start."""
import json
import pickle
import shutil
import subprocess
import sys
import threading

import numpy as np
import onnxruntime as ort
import pytest

from torchport.runtime import BundleError, Predictor
from torchport.runtime.hot_path import CHUNK_BYTES, CHUNK_FROM_BYTES, SLOT_ROWS, Answers

# One feature: more rows than run whole, ending in a partial chunk.
CHUNKED_ROWS = CHUNK_FROM_BYTES // 4 + CHUNK_BYTES // 4 + 3


@pytest.fixture(scope="module")
def reference(seed_bundle):
    """A plain ONNX Runtime session on the same model: the answers the Predictor must give."""
    session = ort.InferenceSession(str(seed_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"features": np.asarray(x, dtype=np.float32)})[0]


@pytest.mark.parametrize("rows", [0, 1, 2, SLOT_ROWS, SLOT_ROWS + 1, 1000, 40000])
def test_every_batch_size_and_layout_answers_like_a_plain_session(seed_bundle, reference, rows):
    p = Predictor(seed_bundle, providers="cpu", large_batch_rows=32768)
    x = np.random.default_rng(rows).uniform(-2, 5, size=(rows, 1)).astype(np.float32)
    expected = reference(x)
    for variant in (x, x.astype(np.float64), np.asfortranarray(x), np.repeat(x, 2, axis=0)[::2],
                    x.astype(np.float16).astype(np.float32)):
        got = p.predict(variant)
        assert got.dtype == np.float32 and got.shape == (rows, 1)
        np.testing.assert_array_equal(got, reference(variant))
    np.testing.assert_array_equal(p.predict(x), expected)


def test_results_are_never_overwritten_by_later_calls(seed_bundle, reference):
    """Small batches run through reused per-thread buffers; what a caller holds must not change."""
    p = Predictor(seed_bundle, providers="cpu")
    first = p.predict(np.array([[1.0]], dtype=np.float32))
    second = p.predict(np.array([[2.0]], dtype=np.float32))
    listed = p.predict([[3.0]])
    assert first[0, 0] == reference([[1.0]])[0, 0] and second[0, 0] == reference([[2.0]])[0, 0]
    assert listed == reference([[3.0]]).tolist()
    assert not np.shares_memory(first, second)


def test_out_is_filled_and_returned(seed_bundle, reference):
    p = Predictor(seed_bundle, providers="cpu")
    for rows in (1, 5, 40000):
        x = np.linspace(0, 4, rows, dtype=np.float32).reshape(rows, 1)
        out = np.full((rows, 1), np.nan, dtype=np.float32)
        assert p.predict(x, out=out) is out
        np.testing.assert_array_equal(out, reference(x))
    with pytest.raises(ValueError, match=r"out must be a writeable C-contiguous float32 array of shape \(2, 1\)"):
        p.predict(np.zeros((2, 1)), out=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="out is only accepted with numpy input"):
        p.predict([[1.0]], out=np.zeros((1, 1), dtype=np.float32))


def test_bad_input_still_explained_on_the_fast_path(seed_bundle):
    p = Predictor(seed_bundle, providers="cpu")
    p.predict(np.zeros((1, 1)))  # makes the one-row slot
    with pytest.raises(TypeError, match="expected numbers"):
        p.predict(np.array([["1.5"]]))
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)"):
        p.predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="intra_op_threads must be a whole number"):
        Predictor(seed_bundle, intra_op_threads=0)
    with pytest.raises(ValueError, match="large_batch_rows must be a whole number"):
        Predictor(seed_bundle, large_batch_rows=0)


def test_nonfinite_refused_on_every_path_and_overflowing_sums_are_not(seed_bundle, reference):
    """NaN/inf (also float64 values that overflow float32) are refused on first and pooled calls, small and
    large; finite values whose one-pass check overflows are answered; refusals leave the pools usable."""
    p = Predictor(seed_bundle, providers="cpu", large_batch_rows=32768)
    large, larger = np.ones((40000, 1), dtype=np.float32), np.ones((100000, 1), dtype=np.float32)
    large[12345, 0], larger[99999, 0] = np.inf, np.nan
    for bad in (np.array([[np.nan]], dtype=np.float32), np.array([[1e300]]), np.array([[1.0], [-np.inf]]), large,
                larger):
        for _ in range(2):  # the first call makes the slot, the second takes the fast path
            with pytest.raises(ValueError, match=r"row \d+ \(0-based\), column 'area' .*NaN and infinite inputs"):
                p.predict(bad)
    for big in (np.full((3, 1), 3e38, dtype=np.float32), np.full((40000, 1), 3e38, dtype=np.float32),
                np.full((100000, 1), 2e19, dtype=np.float32)):  # float64 sum, then a sum of squares overflows
        np.testing.assert_array_equal(p.predict(big), reference(big))
    np.testing.assert_array_equal(p.predict(np.array([[3.0]])), reference([[3.0]]))
    assert np.isnan(Predictor(seed_bundle, providers="cpu", allow_nonfinite=True).predict(
        np.array([[np.nan]], dtype=np.float32))[0, 0])


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_chunked_large_batches_answer_like_a_plain_session(seed_bundle, reference):
    """Above CHUNK_FROM_BYTES the large-batch graph runs chunk by chunk: same answers, into out= too, and a
    NaN/inf in any chunk is named by its row in the whole batch."""
    p = Predictor(seed_bundle, providers="cpu")
    assert p.large_batch_graph
    x = np.random.default_rng(5).uniform(-2, 5, size=(CHUNKED_ROWS, 1)).astype(np.float32)
    expected = reference(x)
    got = p.predict(x)
    assert got.shape == (CHUNKED_ROWS, 1) and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, expected)
    assert p.plan.regime(CHUNKED_ROWS).chunk_rows == CHUNK_BYTES // 4  # this batch really ran in chunks
    assert p.engine.runners[p.plan.regime(CHUNKED_ROWS)].answers is not None
    out = np.full_like(x, np.nan)
    assert p.predict(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    for row in (0, CHUNK_BYTES // 4 + 1, CHUNKED_ROWS - 1):
        bad = x.copy()
        bad[row, 0] = np.nan if row else -np.inf
        with pytest.raises(ValueError, match=rf"row {row} \(0-based\), column 'area'"):
            p.predict(bad)
    huge = np.full((CHUNKED_ROWS, 1), 2e19, dtype=np.float32)  # finite: every chunk's sum of squares overflows
    np.testing.assert_array_equal(p.predict(huge), reference(huge))


def test_large_answers_reuse_memory_only_once_nothing_refers_to_it(seed_bundle, reference):
    """A chunked answer's memory is reused for a later answer only when no array, view, slice or memoryview
    of it is alive: what a caller holds never changes."""
    p = Predictor(seed_bundle, providers="cpu")
    x = np.random.default_rng(6).uniform(0, 5, size=(CHUNKED_ROWS, 1)).astype(np.float32)
    first = p.predict(x)
    address = _address(first)
    tail, window = first[-10:], memoryview(first[5:8])
    kept_tail, kept_window = tail.copy(), bytes(window)
    del first
    second = p.predict(x + 1)
    assert _address(second) != address
    del second, tail
    third = p.predict(x + 2)  # the memoryview still holds the first block
    assert _address(third) != address
    assert bytes(window) == kept_window and kept_tail[0, 0] == reference(x[-10:-9])[0, 0]
    del window
    fourth = p.predict(x + 3)
    assert _address(fourth) == address  # now free: reused
    np.testing.assert_array_equal(fourth, reference(x + 3))
    np.testing.assert_array_equal(third, reference(x + 2))


def test_answers_pool_rules():
    answers = Answers(keep=2)
    a = answers.new(1000, 2)
    address = _address(a)
    assert a.shape == (1000, 2) and a.dtype == np.float32 and a.flags.writeable
    view = a[::3].T
    del a
    other = answers.new(1000, 2)
    other_address = _address(other)
    assert other_address != address  # a view of a view still holds the first block
    del other, view
    b = answers.new(600, 2)  # both blocks free: the first that fits is reused
    assert _address(b) == address and b.shape == (600, 2)
    small = answers.new(250, 1)  # under half of any block: new memory, and a free block makes room
    assert _address(small) not in (address, other_address)
    assert len(answers._blocks) == 2


def test_large_batch_graph_is_checked_pickled_and_optional(seed_bundle, reference, tmp_path):
    p = Predictor(seed_bundle, providers="cpu")
    q = pickle.loads(pickle.dumps(p))
    x = np.linspace(0, 5, 5000, dtype=np.float32).reshape(-1, 1)
    assert q.large_batch_graph and np.array_equal(q.predict(x), reference(x))
    tampered = tmp_path / "tampered"
    shutil.copytree(seed_bundle, tampered)
    graph = tampered / "model.large_batch.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="model.large_batch.onnx does not match the manifest"):
        Predictor(tampered)
    assert not Predictor(seed_bundle / "model.onnx").large_batch_graph  # a bare .onnx file: one graph


def test_eight_threads_share_one_predictor(seed_bundle, reference):
    """8 threads x 10,000 calls on one Predictor, batches of 1 to 3 rows: every answer is checked."""
    p = Predictor(seed_bundle, providers="cpu")
    calls, n_threads = 10_000, 8
    inputs = [np.random.default_rng(t).uniform(-3, 8, size=(calls, 3)).astype(np.float32) for t in range(n_threads)]
    wrong: list[tuple[int, int]] = []
    done = [0] * n_threads
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        start.wait()
        rows = inputs[t]
        for i in range(calls):
            x = rows[i, : 1 + i % 3].reshape(-1, 1)
            got = p.predict(x)
            if not np.array_equal(got, expected[t][i]):
                wrong.append((t, i))
            done[t] += 1

    expected = [[reference(inputs[t][i, : 1 + i % 3].reshape(-1, 1)) for i in range(calls)] for t in range(n_threads)]
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert done == [calls] * n_threads
    assert wrong == []


def test_cold_start_needs_no_torch(seed_bundle):
    code = ("import sys, json, torchport.runtime as rt; p = rt.Predictor(sys.argv[1]); y = p.predict([[3.0]]); "
            "print(json.dumps({'y': y, 'mods': sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'pandas', 'onnx'))}))")
    proc = subprocess.run([sys.executable, "-c", code, str(seed_bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mods"] == [] and abs(result["y"][0][0] - 2.40342) < 1e-4


@pytest.mark.full
def test_benchmark_quick_run_writes_complete_json(seed_bundle, tmp_path):
    """The benchmark's smoke run: it completes and records every figure (no timing is asserted)."""
    out = tmp_path / "hot_path.json"
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.hot_path", "--bundle", str(seed_bundle),
                           "--quick", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert report["quick"] is True
    env = report["environment"]
    assert env["versions"]["onnxruntime"] and env["versions"]["numpy"] and "torch" in env["versions"]
    assert env["cpu"]["model"] and env["cpu"]["usable_cpus"] >= 1
    assert env["cuda"]["torch"] is None  # the benchmark does not load torch beside what it measures
    assert {"predictor_small", "predictor_large", "plain_session"} <= set(env["threads"])
    single = report["single_row"]
    assert single["predictor_us"]["median"] > 0 and single["plain_us"]["median"] > 0 and single["ratio"] > 0
    assert len(report["throughput"]) == 2
    assert report["graph_ops"] == {"model.onnx": ["Gemm"], "model.large_batch.onnx": ["Add", "Mul"]}
    for row in report["throughput"]:
        assert row["rows"] > 0 and row["ratio_to_plain"] > 0 and row["predictor_to_floor"] > 0
        assert row["ratio_to_plain_lb"] > 0 and row["plain_lb_to_floor"] > 0  # the same-graph reference
        assert row["flops_per_s"]["predictor"] == pytest.approx(2 * row["rows_per_s"]["predictor"])
        assert row["bit_identical_to_plain"] is True  # the seed's Mul+Add answers as its Gemm does
    assert report["flops_per_row"] == 2 and report["matmul_peak"]["flops_per_s"] > 0
    assert "x peak" in proc.stdout
    cold = report["cold_start"]
    assert cold["predictor_s"] > 0 and cold["ort_s"] > 0 and cold["torchscript_s"] > 0
    assert cold["ratio_to_ort"] > 0 and cold["torchscript_over_predictor"] > 0
    assert "single row" in proc.stdout and "cold start" in proc.stdout
    assert list(tmp_path.iterdir()) == [out]  # nothing written beside the file asked for


def test_benchmark_refuses_a_missing_bundle_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.hot_path", "--bundle", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hot_path: error:") and "torchport train" in proc.stderr


def test_graph_variants_script_runs(seed_bundle, tmp_path):
    """The investigation script rebuilds the seed's affine map as other graphs; each must answer like Gemm."""
    out = tmp_path / "variants.json"
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.graph_variants", "--bundle", str(seed_bundle),
                           "--rows", "20000", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())["of_floor"]
    assert {"Gemm (as exported)", "Mul+Add, [1,1] constants", "Mul+Add, rank-0 constants"} <= set(figures)
