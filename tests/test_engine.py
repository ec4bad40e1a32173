"""The Predictor's engine through its public interface: what tuning, verify and the benchmarks take from it
(graphs and their digests, golden cases, the first session, the rules' regimes, runs in any regime) on a real
bundle with real ONNX Runtime sessions."""
import hashlib

import numpy as np
import onnxruntime as ort
import pytest

from torchport.runtime import Predictor
from torchport.runtime.bundle import LARGE_BATCH_FILE, ONNX_FILE
from torchport.runtime.engine import Engine
from torchport.runtime.errors import BundleError, InputError
from torchport.runtime.golden import load_golden
from torchport.runtime.ort_api import bound_run
from torchport.runtime.plan import Plan, Regime, Step
from torchport.runtime.tuning import candidates, measure_plan


def _plain(bundle, graph):
    return ort.InferenceSession(str(bundle / graph), providers=["CPUExecutionProvider"])


def test_the_engine_holds_the_bundles_checked_bytes(seed_bundle):
    engine = Predictor(seed_bundle, providers="cpu").engine
    assert engine.graph_digests() == tuple(
        f"{name}:{hashlib.sha256((seed_bundle / name).read_bytes()).hexdigest()}"
        for name in sorted([ONNX_FILE, LARGE_BATCH_FILE]))
    assert engine.golden == (seed_bundle / "golden.json").read_bytes()
    golden = load_golden(engine.golden, engine.feature_names, engine.target_names)
    assert golden.inputs.shape[1] == engine.n_features == 1 and engine.n_targets == 1
    session = engine.first_session  # what verify checks the names on and the benchmark binds
    assert [i.name for i in session.get_inputs()] == [engine.input_name] == ["features"]
    assert session.get_providers() == engine.providers == ["CPUExecutionProvider"]
    x = golden.inputs[:1].copy()
    out = np.empty((1, 1), np.float32)
    bound_run(session, engine.input_name, engine.output_name, x, out)()
    np.testing.assert_array_equal(out, _plain(seed_bundle, ONNX_FILE).run(None, {"features": x})[0])


def test_every_candidate_regime_runs_like_a_plain_session(seed_bundle):
    p = Predictor(seed_bundle, providers="cpu", intra_op_threads=2)
    engine = p.engine
    assert engine.rules() == p.plan
    plain = _plain(seed_bundle, ONNX_FILE)
    x = np.random.default_rng(4).uniform(-1, 5, size=(5000, 1)).astype(np.float32)
    expected = plain.run(None, {"features": x})[0]
    for rows in (1, 64, 5000):
        regimes = candidates(engine, rows)
        assert regimes[0] == p.plan.regime(rows)  # the rules' regime first
        assert {r.graph for r in regimes} == {ONNX_FILE, LARGE_BATCH_FILE}
        for regime in regimes:  # the seed's Mul+Add graph is bit-identical to its Gemm
            np.testing.assert_array_equal(engine.run(regime, x[:rows], calm=False), expected[:rows],
                                          err_msg=regime.describe())  # as given, whatever the load
    assert {(g, t) for g, t, _ in engine.sessions} == {(ONNX_FILE, 1), (ONNX_FILE, 2), (LARGE_BATCH_FILE, 1),
                                                       (LARGE_BATCH_FILE, 2)}
    bound = Regime(ONNX_FILE, 1, bound=True)
    assert bound in engine.slot_sets and engine.whole(LARGE_BATCH_FILE, 2) in engine.runners
    pools: dict = {}
    out = np.empty((3, 1), np.float32)
    assert engine.run(bound, x[:3], out, pools=pools) is out
    assert list(pools) == [(3, 1)] and pools[3, 1] is engine.slots(bound).pool(3)
    bad = x[:3].copy()
    bad[2, 0] = np.nan
    with pytest.raises(InputError, match="row 2"):
        engine.run(bound, bad)
    assert np.isnan(engine.run(bound, bad, check=False)[2, 0])


def test_a_plan_measured_on_the_engine_is_taken_by_the_predictor(seed_bundle):
    engine = Predictor(seed_bundle, providers="cpu").engine
    plan = measure_plan(engine, max_rows=64, seconds=0.1)
    assert plan.source == "measured" and plan.models == engine.graph_digests()
    assert {t.rows for t in plan.timings} == {1, 8, 64}
    p = Predictor(seed_bundle, providers="cpu", plan=Plan.from_json(plan.to_json()))
    assert p.plan == plan
    with pytest.raises(InputError, match="cannot run here"):
        p.engine.check_plan(Plan((Step(1, Regime("other.onnx")),)))


def test_a_large_batch_graph_needs_the_manifest(seed_bundle):
    graphs = {name: (seed_bundle / name).read_bytes() for name in (ONNX_FILE, LARGE_BATCH_FILE)}
    with pytest.raises(BundleError, match="give its manifest"):
        Engine(graphs, seed_bundle / ONNX_FILE, ["CPUExecutionProvider"])
    bare = Engine({ONNX_FILE: graphs[ONNX_FILE]}, seed_bundle / ONNX_FILE, ["CPUExecutionProvider"])
    assert (bare.feature_names, bare.target_names) == (["area"], ["ntv_rich"]) and bare.golden is None
