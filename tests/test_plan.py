"""The Predictor's plan: the default rules, a plan measured on this machine (Predictor.tune, `torchport tune`)
that answers like the rules within the parity bound, saved plans refused elsewhere, bounded slot pools."""
import json
import pickle
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from conftest import DATA, run_cli
from torchport.runtime import Predictor
from torchport.runtime.errors import InputError
from torchport.runtime.hot_path import MAX_POOLS, SLOT_ROWS, slot_rows
from torchport.runtime.plan import Plan, Regime, machine_key, steps_from_winners
from torchport.runtime.sessions import session_options


@pytest.fixture(scope="module")
def mlp_bundle(mlr_mlp_bundle):
    return mlr_mlp_bundle


def test_the_seeds_rules(seed_bundle):
    p = Predictor(seed_bundle, providers="cpu", intra_op_threads=2)
    assert p.plan.source == "rules" and p.plan.timings == ()
    assert p.plan.regime(1) == p.plan.regime(SLOT_ROWS) == Regime("model.onnx", 1, bound=True)
    # past 64 rows the Mul+Add graph, still through bound buffers while a slot holds 16 KiB
    assert p.plan.regime(SLOT_ROWS + 1) == p.plan.regime(slot_rows(1, 1)) == Regime("model.large_batch.onnx", 1, bound=True)
    assert slot_rows(1, 1) == 2048
    whole = p.plan.regime(slot_rows(1, 1) + 1)
    assert (whole.graph, whole.threads, whole.bound) == ("model.large_batch.onnx", 1, False)
    assert p.plan.regime(32768).threads == 2 and p.plan.regime(32768).chunk_rows == (1 << 20) // 4
    assert p.plan.regime(32768).spin  # its threads spin: each of Mul and Add would wake a sleeping thread
    plain = ort.InferenceSession(str(seed_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).uniform(-1, 5, size=(5000, 1)).astype(np.float32)
    for n in (1, 64, 65, 512, 2048, 2049, 5000):  # the Mul+Add rewrite is bit-identical for the seed
        np.testing.assert_array_equal(p.predict(x[:n]), plain.run(None, {"features": x[:n]})[0])
        np.testing.assert_array_equal(p.predict(x[:n].astype(np.float64)), plain.run(None, {"features": x[:n]})[0])


def test_a_measured_plan_answers_within_the_bound_and_checks_every_regime(mlp_bundle):
    p = Predictor(mlp_bundle, providers="cpu", intra_op_threads=2)
    rules = p.plan
    # the rules: bound buffers while a slot holds 16 KiB, then one thread whole, the threaded graph on both
    # threads from 4 MFLOP a call (1,737 rows of 2,304 FLOP), shared cache-sized chunks past four chunks
    assert rules.regime(slot_rows(3, 1)) == Regime("model.large_batch.onnx", 1, bound=True)
    assert rules.regime(slot_rows(3, 1) + 1) == rules.regime(1736) == Regime("model.large_batch.onnx", 1)
    assert rules.regime(1737) == rules.regime(16384) == Regime("model.threaded.onnx", 2, spin=True)
    assert rules.regime(16385) == Regime("model.large_batch.onnx", 1, chunk_rows=4096, chunk_from=8191, workers=2)
    x = np.random.default_rng(0).normal([2, 0, 500], [1, 20, 300], size=(9000, 3)).astype(np.float32)
    before = {n: p.predict(x[:n]) for n in (1, 64, 300, 1500, 9000)}
    plan = p.tune(max_rows=4096, seconds=0.5)
    assert p.plan is plan and plan.source == "measured" and plan.machine == machine_key() and plan.measured_s > 0
    measured = sorted({t.rows for t in plan.timings})
    assert measured == [1, 8, 64, 256, 512, 1024, 2048, 4096]
    before_n = None
    for n in measured:
        here = {t.regime: t.median_s for t in plan.timings if t.rows == n and not t.again}
        assert rules.regime(n) in here and len(here) >= 2  # the rules' regime and at least one other
        chosen = plan.regime(n)
        # the fastest, unless it was not 10% quicker (measured twice) than the rules' or the size below's
        assert chosen in (min(here, key=here.get), rules.regime(n), before_n)
        assert here[chosen] <= here[rules.regime(n)]
        before_n = chosen
    graphs = {r.graph for t in plan.timings for r in [t.regime]}
    assert graphs == {"model.onnx", "model.large_batch.onnx", "model.threaded.onnx"}  # every graph file was measured
    assert {t.regime.threads for t in plan.timings if t.regime.graph == "model.threaded.onnx"} == {2}
    for n, old in before.items():  # another graph rounds differently: float32 rounding apart
        np.testing.assert_allclose(p.predict(x[:n]), old, rtol=1e-5, atol=1e-5)
    check = p.self_check()  # the golden cases through every regime of the plan
    assert check.checked and check.rows > 0 and check.of_bound <= 1


def test_a_saved_plan_is_taken_here_and_refused_elsewhere(mlp_bundle, tmp_path):
    p = Predictor(mlp_bundle, providers="cpu")
    plan = p.tune(max_rows=256, seconds=0.2)
    path = plan.save(tmp_path / "plan.json")
    again = Predictor(mlp_bundle, providers="cpu", plan=path)
    assert again.plan == plan and pickle.loads(pickle.dumps(again)).plan == plan
    doc = json.loads(path.read_text())
    for edit, message in ((lambda d: d.update(machine="another CPU; 64 CPUs; onnxruntime 0.1"), "measured on 'another CPU"),
                          (lambda d: d["models"].__setitem__(0, "model.onnx:" + "0" * 64), "for other graph files"),
                          (lambda d: d.update(format="torchport.bench"), "is not a torchport plan"),
                          (lambda d: d["steps"][0].__setitem__("from_rows", 2), "first step must start at 1 row")):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            Predictor(mlp_bundle, providers="cpu", plan=tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="is not a plan written by torchport tune"):
        Predictor(mlp_bundle, plan=tmp_path / "broken.json")
    with pytest.raises(InputError, match="torchport tune BUNDLE --out"):
        Predictor(mlp_bundle, plan=tmp_path / "missing.json")
    with pytest.raises(InputError, match="cannot be combined with sess_options"):
        Predictor(mlp_bundle, sess_options=session_options(1), plan=path)


def test_torchport_tune_prints_and_saves_the_plan(seed_bundle, tmp_path):
    out = tmp_path / "seed.plan.json"
    proc = run_cli("tune", str(seed_bundle), "--max-rows", "4096", "--seconds", "0.3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "median time per call" in proc.stdout and "plan (* above" in proc.stdout and f"wrote {out}" in proc.stdout
    plan = Plan.load(out)
    assert plan.source == "measured" and plan.steps[0].from_rows == 1
    assert [line for line in proc.stdout.splitlines() if line.startswith("  1-")][0].strip() == plan.describe()[0]
    x = np.linspace(0, 4, 3000, dtype=np.float32).reshape(-1, 1)
    plain = ort.InferenceSession(str(seed_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(Predictor(seed_bundle, providers="cpu", plan=out).predict(x),
                                  plain.run(None, {"features": x})[0])
    (tmp_path / "in.csv").write_text("area\n" + "\n".join(f"{v:.6g}" for v in x[:100, 0]) + "\n")
    proc = run_cli("predict", str(seed_bundle), "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                   "--plan", str(out))
    assert proc.returncode == 0, proc.stderr
    scored = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(scored[:, 1], plain.run(None, {"features": scored[:, :1].astype(np.float32)})[0][:, 0],
                               rtol=1e-6)
    proc = run_cli("predict", str(seed_bundle), "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o2.csv"),
                   "--plan", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and "torchport tune BUNDLE --out" in proc.stderr and "Traceback" not in proc.stderr
    for args, message in ((["--out", str(tmp_path)], "is a directory"), (["--seconds", "-1"], "positive number"),
                          (["--max-rows", "0"], "--max-rows")):
        proc = run_cli("tune", str(seed_bundle), *args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_slot_pools_stay_bounded(seed_bundle):
    p = Predictor(seed_bundle, providers="cpu")
    plain = ort.InferenceSession(str(seed_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(0, 4, size=(SLOT_ROWS + MAX_POOLS + 20, 1)).astype(np.float32)
    for n in range(SLOT_ROWS + 1, len(x) + 1):
        np.testing.assert_array_equal(p.predict(x[:n]), plain.run(None, {"features": x[:n]})[0])
    assert sum(len(s.pools) for s in p.engine.slot_sets.values()) <= MAX_POOLS + SLOT_ROWS
    assert len(p.engine.slot_sets[p.plan.regime(SLOT_ROWS + 1)].pools) == MAX_POOLS


def test_steps_hold_bound_regimes_only_as_far_as_a_slot_does():
    bound, whole = Regime("g", 1, bound=True), Regime("g", 2)
    steps = steps_from_winners([(64, bound, Regime("g", 1)), (1024, bound, whole), (4096, whole, whole)], 300)
    assert [(s.from_rows, s.regime) for s in steps] == [(1, bound), (301, whole)]
    steps = steps_from_winners([(1, bound, whole), (4096, whole, whole), (65536, Regime("h", 2), Regime("h", 2))], 8)
    assert [s.from_rows for s in steps] == [1, 9, 16385]


@pytest.mark.full
def test_the_under_load_benchmark_records_every_condition(seed_bundle, tmp_path):
    """Its smoke run: every condition, backend and size has a figure (no timing is asserted)."""
    out = tmp_path / "under_load.json"
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.under_load", "--bundle", str(seed_bundle),
                           "--sizes", "64,5000", "--seconds", "0.2", "--tune-seconds", "0.2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["plan"] and report["environment"]["cpu"]["usable_cpus"] >= 1
    assert set(report["sizes"]) == {"64", "5000"}
    for by_condition in report["sizes"].values():
        assert list(by_condition) == ["alone", "two callers", "one busy process", "busy process per CPU"]
        for rate in by_condition.values():
            assert set(rate) == {"ort_plain", "predictor", "predictor_tuned"} and min(rate.values()) > 0
    assert "busy process per CPU" in proc.stdout and "held:" in proc.stdout
    # the busy-neighbour figure per size: time over plain ORT's beside one busy process, from the rates above
    for n, figure in report["busy_neighbour"].items():
        rate = report["sizes"][n]["one busy process"]
        assert figure["predictor"] == pytest.approx(rate["ort_plain"] / rate["predictor"])
    assert "beside one busy process, time over plain ORT's" in proc.stdout


@pytest.mark.full
@pytest.mark.parametrize("table", ["diabetes", "longley"])
def test_plans_on_real_tables_answer_within_the_parity_bound(tmp_path, table):
    """scikit-learn's diabetes (10 raw features, a 64-64 MLP: the width at which the rules use both threads) and
    NIST StRD Longley in raw units (the folded graph keeps its Sub there): rules and a measured plan both answer
    like a plain session on model.onnx within the bundle's parity bound, on rows from the table itself."""
    from sklearn.datasets import load_diabetes
    from torchport.benchmarks.hot_path import agrees
    from torchport.export import write_from_regressor
    from torchport.train import load_dataset
    from torchport.train import Regressor
    if table == "diabetes":
        path = tmp_path / "diabetes.csv"
        load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "y"}).to_csv(path, index=False)
        hidden = (64, 64)
    else:
        path, hidden = DATA / "nist" / "longley.csv", (32, 32)
    data = load_dataset(str(path), ["y"])
    reg = Regressor(model="mlp", hidden=hidden, optimizer="adam", epochs=200, device="cpu").fit(data.X, data.y)
    manifest = write_from_regressor(reg, data, tmp_path / "b", plots=False)
    assert manifest.parity.passed
    p = Predictor(tmp_path / "b", providers="cpu", intra_op_threads=2)
    n_features = len(data.feature_names)
    if table == "diabetes":  # 2 x (10x64 + 64x64 + 64) = 9,600 FLOP a row: both threads from 417 rows
        assert p.plan.regime(slot_rows(n_features, 1)).bound
        assert p.plan.regime(417).threads == 2 and p.plan.regime(416).threads == 1
    rows = np.asarray(data.X, dtype=np.float64)
    x = (np.resize(rows, (9000, n_features)) * np.random.default_rng(2).uniform(0.98, 1.02, (9000, n_features)))
    x = x.astype(np.float32)
    plain = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    sizes = (1, 7, 64, 300, 1000, 5000, 9000)
    expected = {n: plain.run(None, {"features": x[:n]})[0] for n in sizes}
    for n in sizes:
        assert agrees(p, p.predict(x[:n]), expected[n]), (table, "rules", n)
    p.tune(max_rows=4096, seconds=0.5)
    for n in sizes:
        assert agrees(p, p.predict(x[:n]), expected[n]), (table, "measured", n, p.plan.regime(n))
    assert p.self_check().of_bound <= 1
