"""`torchport bench`: the quick run completes and writes a complete JSON, a Markdown table and a PNG
(smoke test: no timing is asserted), bench.json reads back into the same BenchReport (and a malformed one
is refused), MLPs have no numpy floor, and bad invocations exit 2."""
import copy
import json
import re
import struct

import pytest

from conftest import ROOT, run_cli
from torchport.runtime.openvino_runner import bf16_unavailable, unavailable

DEFAULT_SIZES = [1, 8, 64, 512, 4096, 65536, 1 << 20]
# OpenVINO's rows where the openvino extra is installed (bf16 where the CPU has it)
OPENVINO = (set() if unavailable() else {"openvino_latency", "openvino_throughput"}) | \
    ({"openvino_bf16"} if bf16_unavailable() is None else set())
CPU_BACKENDS = {"numpy_copy", "numpy_matmul", "torch_eager", "torchscript", "exported", "ort_plain",
                "ort_plain_threads", "predictor", "predictor_tuned"} | OPENVINO
FIGURES = ("calls", "rounds", "median_s", "p99_s", "mean_s", "min_s", "rows_per_s", "x_fastest", "x_ort_plain")


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def quick_run(seed_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    proc = run_cli("bench", str(seed_bundle), "--quick", "--out", str(out), timeout=240)
    return proc, out


def test_quick_run_prints_the_table_and_exits_0(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    for label in ("numpy copy (floor)", "numpy X@W.T+b", "torch eager", "TorchScript", "ORT session.run",
                  "ORT session.run, threads set", "torchport Predictor", "x fastest", "rows/s", "threads: torch",
                  "FLOP/s", "x peak", "float32 matmul peak in this run"):
        assert label in proc.stdout
    assert "Traceback" not in proc.stderr


def test_quick_run_json_has_every_backend_and_batch_size(quick_run, seed_bundle):
    proc, out = quick_run
    report = json.loads((out / "bench.json").read_text())
    assert report["settings"]["batch_sizes"] == DEFAULT_SIZES and report["settings"]["quick"] is True
    cells = {(r["backend"], r["device"], r["batch_size"]) for r in report["results"]}
    expected = {(b, "cpu", n) for b in CPU_BACKENDS for n in DEFAULT_SIZES}
    assert expected <= cells
    assert len(report["results"]) == len(cells)  # one row per cell
    for r in report["results"]:
        assert r["model"] == "seed" and r["calls"] >= 1 and all(r[k] is not None for k in FIGURES if k != "x_ort_plain")
        assert 0 < r["min_s"] <= r["median_s"] <= r["p99_s"]
        assert r["rows_per_s"] == pytest.approx(r["batch_size"] / r["median_s"])
        # bf16 is asked for, not held to float32's tolerance: its error against float64 is the figure
        assert r["agrees_with_torch"] is (None if r["backend"] in ("numpy_copy", "openvino_bf16") else True)
        assert (r["max_abs_error_vs_float64"] is None) is (r["backend"] == "numpy_copy")
        if r["device"] == "cpu":
            assert r["x_ort_plain"] is not None
        if r["backend"] == "numpy_copy":
            assert r["flops_per_s"] is None and r["x_matmul_peak"] is None
        else:  # the seed's model: one multiply-add a row
            assert r["flops_per_s"] == pytest.approx(2 * r["rows_per_s"])
            assert r["x_matmul_peak"] == pytest.approx(r["flops_per_s"] / report["matmul_peak"]["flops_per_s"])
    peak = report["matmul_peak"]
    assert peak["size"] == 2048 and peak["calls"] >= 2 and peak["flops_per_s"] >= peak["median_flops_per_s"] > 0
    for n in DEFAULT_SIZES:
        model_rows = [r for r in report["results"] if r["batch_size"] == n and r["backend"] != "numpy_copy"]
        assert min(r["x_fastest"] for r in model_rows) == pytest.approx(1.0)
        assert next(r for r in model_rows if r["backend"] == "ort_plain")["x_ort_plain"] == pytest.approx(1.0)
    env = report["environment"]
    assert all(env["versions"][k] for k in ("torch", "onnxruntime", "numpy"))
    assert env["cpu"]["model"] and env["cpu"]["physical_cores"] >= 1 and env["cpu"]["usable_cpus"] >= 1
    assert isinstance(env["gpus"], list) and {"torch", "onnxruntime"} <= set(env["cuda"])
    threads = env["threads"]
    assert threads["torch_num_threads"] == threads["ort_plain_intra_op_num_threads"] == threads["threads"] >= 1
    assert threads["predictor"]
    assert report["models"][0]["bundle"] == str(seed_bundle) and report["models"][0]["model"]["kind"] == "linear"


def test_quick_run_writes_the_markdown_and_the_plot(quick_run):
    _, out = quick_run
    markdown = (out / "bench.md").read_text()
    assert "| torchport Predictor | cpu |" in markdown and "![rows/s against batch size](bench.png)" in markdown
    width, height = _png_size(out / "bench.png")
    assert width >= 400 and height >= 300
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench.png"]


def _strict(text: str):
    """Parse JSON refusing NaN and Infinity, as strict parsers do."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_bench_json_reads_back_into_the_same_report(quick_run):
    from torchport.benchmarks.records import BenchReport, ResultRow
    _, out = quick_run
    written = _strict((out / "bench.json").read_text())
    report = BenchReport.from_json(written, str(out / "bench.json"))
    assert report.to_json() == written
    assert BenchReport.from_json(report.to_json()) == report
    assert all(isinstance(r, ResultRow) for r in report.results) and report.models[0].model.kind == "linear"
    assert report.environment.threads.threads == report.environment.threads.torch_num_threads >= 1


@pytest.mark.parametrize("folder", ["intel-xeon-f6m207-2cpu", "intel-xeon-f6m207-2cpu-threads1"])
def test_reference_runs_read_back(folder):
    """bench.json files written by earlier torchport releases (the saved reference runs) still read."""
    from torchport.benchmarks.records import BenchReport
    path = ROOT / "benchmarks" / "results" / folder / "bench.json"
    report = BenchReport.from_json(_strict(path.read_text()), str(path))
    assert {m.name for m in report.models} == {"seed", "mlr-mlp"} and report.results


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(format="something.else"), "is not a torchport bench report"),
    (lambda r: r.update(format_version=99), "format version 99"),
    (lambda r: r["results"][3].pop("median_s"), "bench.json.results[3] lacks 'median_s'"),
    (lambda r: r["results"][0].update(calls="many"), "bench.json.results[0].calls must be int, got 'many'"),
    (lambda r: r["results"][0].update(agrees_with_torch=1), "agrees_with_torch must be bool or null"),
    (lambda r: r["results"][0].update(model="other"), "of model 'other', which bench.json.models does not list"),
    (lambda r: r["environment"]["cpu"].update(physical_cores=True), "physical_cores must be int, got True"),
    (lambda r: r["environment"]["threads"].pop("predictor"), "bench.json.environment.threads lacks 'predictor'"),
    (lambda r: r["models"][0]["model"].update(kind="forest"), "bench.json.models[0].model is not a model spec"),
    (lambda r: r.update(settings=[]), "bench.json.settings must be dict, got []"),
    (lambda r: r["matmul_peak"].update(flops_per_s="fast"), "bench.json.matmul_peak.flops_per_s must be int or float"),
])
def test_malformed_bench_json_is_refused_naming_the_key(quick_run, change, message):
    from torchport.benchmarks.records import BenchReport
    from torchport.runtime.errors import DataError
    _, out = quick_run
    report = json.loads((out / "bench.json").read_text())
    broken = copy.deepcopy(report)
    change(broken)
    with pytest.raises(DataError, match=re.escape(message)):
        BenchReport.from_json(broken)


@pytest.mark.full
def test_mlp_has_no_numpy_floor_and_takes_chosen_batch_sizes(tmp_path):
    bundle = tmp_path / "mlp"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "8", "--epochs", "20",
                   "--out", str(bundle), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("bench", str(bundle), "--quick", "--batch-sizes", "64,1,1k", "--seconds-per-cell", "0.05",
                   "--threads", "1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert report["settings"]["batch_sizes"] == [1, 64, 1024]
    assert {r["backend"] for r in report["results"]} == CPU_BACKENDS - {"numpy_matmul"}
    assert [s for s in report["models"][0]["skipped"] if s["backend"] != "openvino_bf16"] == [
        {"backend": "numpy_matmul", "device": "cpu", "reason": "the model is mlp, not linear"},
        {"backend": "aoti", "device": "cpu", "reason": "the bundle has no model.aoti.pt2"}]
    assert report["environment"]["threads"]["torch_num_threads"] == 1
    assert report["environment"]["threads"]["predictor"] == "intra_op_num_threads=1"
    assert "not run: numpy_matmul on cpu for mlp" in proc.stdout


@pytest.mark.parametrize("extra, message", [
    (["--batch-sizes", "0,8"], "expected sizes >= 1"),
    (["--batch-sizes", "1,x"], "expected sizes >= 1"),
    (["--threads", "0"], "expected a whole number >= 1"),
    (["--devices", "tpu"], "invalid choice"),
    (["--out", "taken.txt"], "is not a directory"),
])
def test_bad_invocations_exit_2_with_one_line(seed_bundle, tmp_path, extra, message):
    (tmp_path / "taken.txt").write_text("x")
    proc = run_cli("bench", str(seed_bundle), *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("torchport bench: error:") and message in last and "Traceback" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["taken.txt"]


def test_missing_bundle_is_a_user_error(tmp_path):
    proc = run_cli("bench", "no/such/bundle", cwd=tmp_path)
    assert proc.returncode == 2 and "not a bundle directory" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_a_gpu_is_a_user_error(seed_bundle, tmp_path):
    import torch
    from torchport.benchmarks.machine import cuda_status
    if torch.cuda.is_available() or cuda_status().onnxruntime:
        pytest.skip("a GPU is usable here")
    proc = run_cli("bench", str(seed_bundle), "--devices", "cuda", cwd=tmp_path)
    assert proc.returncode == 2 and "no GPU is usable here" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cuda_backends_are_skipped_with_a_reason_where_no_gpu_is_usable(seed_bundle):
    import torch
    from torchport.benchmarks.backends import build_backends
    from torchport.benchmarks.machine import cuda_status
    status = cuda_status()
    if torch.cuda.is_available() and status.onnxruntime:
        pytest.skip("a GPU is usable here: the CUDA rows are measured instead")
    built = build_backends(seed_bundle, ["cpu", "cuda"], threads=1, pin_predictor=False)
    assert {(b.id, b.device) for b in built.backends} == {(b, "cpu") for b in CPU_BACKENDS}
    skipped = {(s.backend, s.device): s.reason for s in built.skipped}
    if not torch.cuda.is_available():
        assert "torch.cuda.is_available() is False" in skipped["torch_eager", "cuda"]
        assert "torch.cuda.is_available() is False" in skipped["torchscript", "cuda"]
    if not status.onnxruntime:
        assert skipped["ort_plain", "cuda"] == skipped["predictor", "cuda"] == status.onnxruntime_reason
