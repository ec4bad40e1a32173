"""OpenVINO as an optional way for the Predictor to run float32 graphs: its regimes answer the golden cases,
tune measures them, a plan that names them still runs (on ONNX Runtime, saying so) where openvino is
missing, bf16 runs only when asked for with its error measured against float64 and recorded in the plan,
multi-threaded regimes run on one thread while other processes hold the CPUs, and the bench's OpenVINO
rows; the full tier runs the `fastest` benchmark's quick mode and renders the README table from its JSON."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest

from conftest import DATA, run_cli
from torchport.benchmarks.under_load import busy_processes
from torchport.runtime import Predictor
from torchport.runtime.bundle import Bundle
from torchport.runtime.cpus import Neighbours, usable_cpus
from torchport.runtime.errors import InputError
from torchport.runtime.plan import Plan, Regime, Step
from torchport.runtime.tuning import candidates

pytest.importorskip("openvino", reason="the openvino extra (pip install 'torchport[openvino]') is not installed")

LB = "model.large_batch.onnx"


def openvino_plan(hint: str = "LATENCY") -> Plan:
    return Plan((Step(1, Regime(LB, 1, bound=True)), Step(65, Regime(LB, 2, runtime="openvino", hint=hint))))


def rows(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal([2, 0, 500], [1, 20, 300], size=(n, 3)).astype(np.float32)


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_an_openvino_regime_gives_the_golden_answers(mlr_mlp_bundle, hint):
    rules = Predictor(mlr_mlp_bundle, providers="cpu")
    p = Predictor(mlr_mlp_bundle, providers="cpu", plan=openvino_plan(hint))
    regime = p.plan.regime(65)
    assert regime.openvino and regime.precision == "f32" and p.plan.notes == ()
    assert "OpenVINO" in p.plan.describe()[1]
    check = p.self_check()  # the golden cases through every regime of the plan, OpenVINO's included
    assert check.checked and check.rows > 0 and check.of_bound <= 1
    x = rows(3000)
    got = p.engine.run(regime, x, calm=False)  # in OpenVINO itself, whatever other processes do
    assert type(p.engine.runners[regime]).__name__ == "OpenVinoRunner"
    bound = 2 * np.asarray(Bundle.open(mlr_mlp_bundle).manifest.parity.bound)
    assert np.all(np.abs(got - rules.predict(x)) <= bound)
    with pytest.raises(InputError, match="row 7"):  # NaN/inf are refused before OpenVINO runs
        bad = x.copy()
        bad[7, 1] = np.nan
        p.engine.run(regime, bad, calm=False)


def test_tune_measures_openvino_and_the_rules_keep_float32(mlr_mlp_bundle, seed_bundle):
    p = Predictor(mlr_mlp_bundle, providers="cpu", intra_op_threads=2)
    offered = candidates(p.engine, 4096)
    assert {(r.hint, r.precision) for r in offered if r.openvino} == {("LATENCY", "f32"), ("THROUGHPUT", "f32")}
    assert not any(r.openvino for r in candidates(p.engine, 64))  # small batches stay on bound buffers
    plan = p.tune(max_rows=4096, seconds=0.5)
    assert any(t.regime.openvino for t in plan.timings)
    for predictor in (p, Predictor(seed_bundle, providers="cpu")):
        assert all(r.precision == "f32" for r in predictor.plan.regimes())  # bf16 is never chosen unasked
        assert predictor.plan.precision == "f32" and predictor.plan.error == ()
    assert p.self_check().checked
    saved = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert saved == plan


def test_a_plan_saved_before_openvino_loads():
    regime = Regime(LB, 2, chunk_rows=1024, chunk_from=2047, workers=2).to_json()
    for key in ("runtime", "hint", "precision"):
        del regime[key]
    old = {"format": "torchport.plan", "format_version": 1, "source": "rules", "machine": "", "models": [],
           "measured_s": 0.0, "steps": [{"from_rows": 1, "regime": regime}], "timings": []}
    plan = Plan.from_json(old)
    assert plan.steps[0].regime == Regime(LB, 2, chunk_rows=1024, chunk_from=2047, workers=2)
    assert plan.precision == "f32" and plan.notes == ()


HIDDEN = "import sys\nsys.modules['openvino'] = None  # as if the extra were not installed\n"


def test_without_openvino_its_steps_run_on_onnxruntime_and_say_so(mlr_mlp_bundle, tmp_path):
    path = openvino_plan().save(tmp_path / "ov.plan.json")
    script = HIDDEN + f"""
import json, numpy as np
from torchport.runtime import Predictor
from torchport.runtime.errors import InputError
p = Predictor({str(mlr_mlp_bundle)!r}, providers="cpu", plan={str(path)!r})
x = np.random.default_rng(0).normal([2, 0, 500], [1, 20, 300], size=(3000, 3)).astype(np.float32)
try:
    Predictor({str(mlr_mlp_bundle)!r}, precision="bf16")
    refused = ""
except InputError as e:
    refused = str(e)
print(json.dumps({{"plan": p.plan.describe(), "openvino": [r.openvino for r in p.plan.regimes()],
                  "check": str(p.self_check()), "answer": p.predict(x).tolist(), "refused": refused,
                  "rules": Predictor({str(mlr_mlp_bundle)!r}).plan.describe()}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["openvino"] == [False, False]
    assert out["plan"][-1] == ("its OpenVINO steps run on ONNX Runtime: openvino is not installed "
                               "(pip install 'torchport[openvino]')")
    assert "golden rows on CPUExecutionProvider within the parity bound" in out["check"]
    assert out["rules"] == Predictor(mlr_mlp_bundle, providers="cpu").plan.describe()
    assert "openvino is not installed" in out["refused"]
    here = Predictor(mlr_mlp_bundle, providers="cpu", plan=openvino_plan()).predict(rows(3000))
    bound = 2 * np.asarray(Bundle.open(mlr_mlp_bundle).manifest.parity.bound)
    assert np.all(np.abs(np.asarray(out["answer"]) - here) <= bound)


def test_bf16_only_when_asked_and_its_recorded_bound_holds(mlr_mlp_bundle, seed_bundle, tmp_path):
    p = Predictor(mlr_mlp_bundle, providers="cpu", precision="bf16")
    plan = p.plan
    assert plan.precision == "bf16" and len(plan.error) == len(plan.bound) == 1
    assert [r.precision for r in plan.regimes()] == ["f32", "bf16"]  # small batches stay on float32 slots
    assert plan.error[0] > 0 and plan.bound[0] >= 2 * plan.error[0]
    assert any("reduced precision (bf16), asked for" in line for line in plan.describe())
    assert p.self_check().checked  # the golden cases held to the recorded bound
    # the bound holds on the training table's rows too, against the module in float64
    import pandas as pd
    import torch
    from torchport.export.formats import load_module
    table = pd.read_csv(DATA / "plant_richness_mlr.tsv", sep="\t")
    x = table[p.feature_names].to_numpy(np.float64)
    with torch.no_grad():
        exact = load_module(Bundle.open(mlr_mlp_bundle)).double()(torch.from_numpy(x)).numpy()
    assert np.abs(p.predict(x.astype(np.float32)) - exact).max() <= plan.bound[0]
    # a bf16 plan is taken only by a Predictor asked for bf16
    path = plan.save(tmp_path / "bf16.plan.json")
    assert Plan.load(path).bound == plan.bound
    with pytest.raises(InputError, match="precision='bf16'"):
        Predictor(mlr_mlp_bundle, providers="cpu", plan=path)
    assert Predictor(mlr_mlp_bundle, providers="cpu", plan=path, precision="bf16").plan.bound == plan.bound
    # what a saved plan says of its error is measured again on load, not trusted
    told = json.loads(path.read_text())
    path.write_text(json.dumps({**told, "bound": [1.0], "error": [0.0]}))
    again = Predictor(mlr_mlp_bundle, providers="cpu", plan=path, precision="bf16").plan
    assert again.error == plan.error and again.bound == plan.bound
    # a float32 plan with a bf16 step is refused, naming the step
    (tmp_path / "mixed.plan.json").write_text(json.dumps(Plan(plan.steps).to_json()))  # precision f32
    with pytest.raises(InputError, match=r"does not agree with the plan's precision \(f32\)"):
        Predictor(mlr_mlp_bundle, providers="cpu", plan=tmp_path / "mixed.plan.json")
    # under load a bf16 step stays bf16 (on one thread): the answers do not change with the load
    bf16 = next(r for r in plan.regimes() if r.precision == "bf16")
    assert p.engine.calm(bf16).precision == "bf16" and p.engine.calm(bf16).threads == 1
    with pytest.raises(InputError, match="has none"):
        Predictor(seed_bundle, precision="bf16")
    with pytest.raises(InputError, match="'f32' or 'bf16'"):
        Predictor(mlr_mlp_bundle, precision="fp8")


def test_torchport_tune_precision_bf16(mlr_mlp_bundle, tmp_path):
    proc = run_cli("tune", str(mlr_mlp_bundle), "--max-rows", "512", "--seconds", "0.3", "--precision", "bf16",
                   "--out", str(tmp_path / "plan.json"))
    assert proc.returncode == 0, proc.stderr
    assert "reduced precision (bf16), asked for" in proc.stdout
    assert Plan.load(tmp_path / "plan.json").precision == "bf16"
    rows = tmp_path / "rows.csv"
    rows.write_text("area,latitude,dist_mainland\n" + "\n".join(f"{i},{i * 10},{i * 3}" for i in range(1, 200)) + "\n")
    scored = run_cli("predict", str(mlr_mlp_bundle), "-i", str(rows), "-o", str(tmp_path / "out.csv"), "--plan",
                     str(tmp_path / "plan.json"))  # the plan's precision is taken from it
    assert scored.returncode == 0, scored.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 200


def test_multi_threaded_regimes_run_on_one_thread_while_the_cpus_are_taken(mlr_mlp_bundle):
    p = Predictor(mlr_mlp_bundle, providers="cpu", intra_op_threads=2)
    threaded = Regime(LB, 2, spin=True)
    procs = busy_processes(usable_cpus())
    try:
        neighbours = Neighbours(every_s=1.0)
        neighbours.free()  # the first look: where the interval measured starts
        time.sleep(1.1)
        assert neighbours.crowded(2) and neighbours.busy_cpus > 0.5  # read now, kept for the next second
        p.engine.neighbours = neighbours
        x = rows(3000)
        answer = p.engine.run(threaded, x)
        assert p.engine.calm(threaded) in p.engine.runners and threaded not in p.engine.runners
        assert p.engine.calm(threaded) == Regime(LB, 1)
        np.testing.assert_array_equal(answer, p.engine.run(Regime(LB, 1), x))
        p.engine.run(threaded, x, calm=False)  # as given: what tune measures and self_check checks
        assert threaded in p.engine.runners
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_neighbours_count_only_the_cpus_this_process_may_use(tmp_path):
    """A busy process on another CPU than this one's affinity mask leaves this one uncrowded; asking for more
    threads than there are CPUs is judged by the CPUs there are."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and two usable CPUs")
    first, other = sorted(os.sched_getaffinity(0))[:2]
    script = ("import os, time\nfrom torchport.runtime.cpus import Neighbours\n"
              f"os.sched_setaffinity(0, {{{first}}})\n"
              "n = Neighbours(every_s=0.5)\nn.free()\ntime.sleep(1.0)\nprint(n.cpus, n.crowded(1), n.crowded(4), round(n.busy_cpus, 2))")
    busy = subprocess.Popen(["taskset", "-c", str(other), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        busy.kill()
        busy.wait()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["1", "False", "False"], out.stdout


def test_the_bench_openvino_rows(mlr_mlp_bundle):
    from torchport.benchmarks.backends import BundleBackends, openvino_backends
    bundle = Bundle.open(mlr_mlp_bundle)
    out = BundleBackends(bundle)
    openvino_backends(bundle, 2, out)
    assert [b.id for b in out.backends] == ["openvino_latency", "openvino_throughput", "openvino_bf16"]
    assert [b.reduced for b in out.backends] == [False, False, True]
    plain = ort.InferenceSession(str(mlr_mlp_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = rows(512)
    expected = plain.run(None, {bundle.manifest.input.name: x})[0]
    for b in out.backends[:2]:
        np.testing.assert_allclose(b.call(x), expected, rtol=1e-4, atol=1e-4)
    assert "PERFORMANCE_HINT=LATENCY" in out.backends[0].threads


@pytest.mark.full
def test_the_fastest_benchmark_quick_mode_writes_json_and_the_readme_table(seed_bundle, mlr_mlp_bundle, tmp_path):
    from torchport.benchmarks.fastest import README_BEGIN, README_END, FastestReport
    out = tmp_path / "fastest.json"
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.fastest", "--quick", "--bundles",
                           str(seed_bundle), str(mlr_mlp_bundle), "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = FastestReport.from_json(json.loads(out.read_text()))
    assert [m.name for m in report.models] == [seed_bundle.name, mlr_mlp_bundle.name] and report.quick
    assert {(c.model, c.rows) for c in report.cells} == {(m, n) for m in ("seed", "mlr-mlp") for n in (1, 4096)}
    for c in report.cells:
        assert set(c.peers_s) >= {"ort_plain", "openvino_latency", "openvino_throughput"}
        assert c.fastest in c.peers_s and c.ratio == pytest.approx(c.predictor_s / min(c.peers_s.values()))
    assert {(c.model, c.rows) for c in report.busy} == {(m, n) for m in ("seed", "mlr-mlp") for n in (1, 64, 4096)}
    assert all(set(c.peers_s) == {"ort_plain"} for c in report.busy)
    assert all(len(m.load_before) == 3 and m.plan for m in report.models)
    assert any("aoti: the bundle has no model.aoti.pt2" in s for s in report.models[0].skipped)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.fastest", "--render", str(out), "--readme",
                           str(readme)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{README_END}\n\nafter\n")
    assert "| seed | " in text and "| mlr-mlp | " in text and "Beside one busy process" in text


def test_the_fastest_benchmark_refuses_a_tampered_bundle_in_one_line(seed_bundle, tmp_path):
    """A bundle the Predictor refuses (model.onnx not what the manifest hashed) ends the run with one error
    line and exit 2, not a traceback."""
    bad = tmp_path / "bad"
    shutil.copytree(seed_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-1] ^= 1
    (bad / "model.onnx").write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "torchport.benchmarks.fastest", "--quick", "--bundles", str(bad),
                           "--json", str(tmp_path / "fastest.json")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("fastest: error: ") and "model.onnx" in errors[0], proc.stderr
    assert not (tmp_path / "fastest.json").exists()


def test_the_bench_openvino_rows_are_skipped_with_the_reason_where_it_cannot_compile(seed_bundle, tmp_path):
    """A model.onnx OpenVINO cannot convert (here an op of a domain it has no rule for, the manifest's sha256
    and size made to match) gives Skipped rows naming why, not an exception out of the benchmark."""
    import hashlib
    from onnx import TensorProto, helper
    from torchport.benchmarks.backends import BundleBackends, openvino_backends
    copy = tmp_path / "unconvertible"
    shutil.copytree(seed_bundle, copy)
    node = helper.make_node("Frobnicate", ["features"], ["targets"], domain="com.torchport.test")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 1])],
                              [helper.make_tensor_value_info("targets", TensorProto.FLOAT, ["n", 1])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.torchport.test", 1)]).SerializeToString()
    (copy / "model.onnx").write_bytes(data)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    bundle = Bundle.open(copy)
    out = BundleBackends(bundle)
    openvino_backends(bundle, 2, out)
    assert out.backends == []
    reasons = {s.backend: s.reason for s in out.skipped}
    assert set(reasons) == {"openvino_latency", "openvino_throughput", "openvino_bf16"}
    for backend in ("openvino_latency", "openvino_throughput"):
        assert reasons[backend].startswith("openvino could not compile model.onnx: ")
        assert "Frobnicate" in reasons[backend] and "\n" not in reasons[backend]
