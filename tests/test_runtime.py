"""The runtime with real ONNX Runtime sessions: inputs, outputs, providers, the predict command."""
import csv
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import DATA, run_cli
from torchport.runtime import BundleError, Predictor, ProviderFallbackWarning
from torchport.runtime.providers import cuda_driver_present


def test_runtime_never_imports_torch():
    code = ("import sys, torchport.runtime, torchport.runtime.cli, torchport.runtime.cli_predict; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'onnx', "
            "'torchport.train', 'torchport.export') or m.startswith(('torchport.train', 'torchport.export'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_predict_returns_the_kind_it_was_given(seed_bundle):
    p = Predictor(seed_bundle, providers="cpu")
    arr = p.predict(np.array([[3.0], [1.0]]))
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 1) and arr.dtype == np.float32
    rows = p.predict([[3.0], [1.0]])
    assert isinstance(rows, list) and rows == arr.tolist()
    frame = p.predict(pd.DataFrame({"other": ["a", "b"], "area": [3.0, 1.0]}, index=[10, 20]))
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["ntv_rich"]
    assert list(frame.index) == [10, 20] and frame["ntv_rich"].tolist() == arr[:, 0].tolist()


def test_dataframe_columns_matched_by_name(tmp_path):
    """With several features, a reordered DataFrame gives the same answer; a missing column is named."""
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--out", str(out), "--lr", "0.0001",
                   "--epochs", "200", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    p = Predictor(out)
    ref = pd.read_csv(DATA / "plant_richness_mlr.tsv", sep="\t")
    ordered = p.predict(ref[["area", "latitude", "dist_mainland"]].to_numpy())
    shuffled = p.predict(ref[["dist_mainland", "ntv_rich", "latitude", "area"]])
    np.testing.assert_array_equal(shuffled.to_numpy(), ordered)
    with pytest.raises(ValueError, match=r"lacks the feature column\(s\) 'latitude'"):
        p.predict(ref[["area", "dist_mainland"]])


def test_wrong_shapes_are_explained(seed_bundle):
    p = Predictor(seed_bundle)
    with pytest.raises(ValueError, match=r"shape \(rows, 1\).*got shape \(3,\)"):
        p.predict(np.zeros(3))
    with pytest.raises(ValueError, match=r"got shape \(2, 2\)"):
        p.predict(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="expected numbers"):
        p.predict(np.array([["a"]]))


def test_providers_report_what_runs(seed_bundle):
    assert Predictor(seed_bundle, providers="cpu").providers == ["CPUExecutionProvider"]
    assert Predictor(seed_bundle, providers=["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown execution provider 'GPUProvider'"):
        Predictor(seed_bundle, providers=["GPUProvider"])


@pytest.mark.skipif(cuda_driver_present(), reason="this machine has a CUDA driver")
def test_cuda_request_without_gpu_falls_back_with_a_clear_warning(seed_bundle):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = Predictor(seed_bundle, providers="cuda")
        auto = Predictor(seed_bundle)  # auto on a machine without a GPU: CPU, silently
    messages = [str(w.message) for w in caught if issubclass(w.category, ProviderFallbackWarning)]
    assert len(messages) == 1 and "no CUDA driver" in messages[0] and "CPUExecutionProvider" in messages[0]
    assert p.providers == auto.providers == ["CPUExecutionProvider"]
    assert p.predict([[3.0]]) == auto.predict([[3.0]])


def test_bare_onnx_file_reads_names_from_metadata(seed_bundle):
    p = Predictor(seed_bundle / "model.onnx")
    assert p.feature_names == ["area"] and p.target_names == ["ntv_rich"] and p.manifest is None
    assert p.predict([[3.0]]) == Predictor(seed_bundle).predict([[3.0]])


def test_a_bare_float16_onnx_file_is_refused_naming_what_runs(tmp_path):
    """A bare .onnx file has no manifest: the error names the dtypes torchport runs, not a manifest."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph([helper.make_node("Gemm", ["features", "W", "b"], ["targets"])], "g",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT16, ["batch", 2])],
                              [helper.make_tensor_value_info("targets", TensorProto.FLOAT16, ["batch", 1])],
                              [numpy_helper.from_array(np.ones((2, 1), np.float16), "W"),
                               numpy_helper.from_array(np.zeros(1, np.float16), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "half.onnx")
    with pytest.raises(BundleError, match=r"takes tensor\(float16\) .*float32 \(tensor\(float\)\) or float64") as e:
        Predictor(tmp_path / "half.onnx")
    assert "manifest" not in str(e.value)


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "model.onnx").unlink(), r"model\.onnx is missing"),
    (lambda b: (b / "manifest.json").unlink(), r"manifest\.json is missing"),
    (lambda b: (b / "manifest.json").write_text("{not json"), r"manifest\.json is not valid JSON"),
    (lambda b: (b / "manifest.json").write_text(
        (b / "manifest.json").read_text().replace('"format_version": 2', '"format_version": 99')),
     "format version 99, newer than this torchport reads"),
])
def test_damaged_bundles_are_refused(seed_bundle, tmp_path, damage, message):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(seed_bundle, bad)
    damage(bad)
    with pytest.raises(BundleError, match=message):
        Predictor(bad)


def test_missing_path():
    with pytest.raises(BundleError, match="does not exist"):
        Predictor("no/such/bundle")


def test_predict_command_scores_a_file(seed_bundle, tmp_path):
    src = tmp_path / "in.csv"
    pd.read_csv(DATA / "plant_richness_lr.tsv", sep="\t").to_csv(src, index=False)
    dst = tmp_path / "out.csv"
    proc = run_cli("predict", str(seed_bundle), "--input", str(src), "--output", str(dst), "--chunk-rows", "5")
    assert proc.returncode == 0, proc.stderr
    assert "scored 22 rows with CPUExecutionProvider" in proc.stderr
    out = pd.read_csv(dst)
    assert list(out.columns) == ["ntv_rich", "area", "ntv_rich_pred"]
    expected = Predictor(seed_bundle).predict(out[["area"]].to_numpy())[:, 0]
    np.testing.assert_allclose(out["ntv_rich_pred"], expected, rtol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_predict_command_errors_name_row_and_column(seed_bundle, tmp_path):
    src = tmp_path / "in.tsv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["island", "area"])
        w.writerows([["a", "1.5"], ["b", "big"]])
    dst = tmp_path / "out.tsv"
    proc = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(dst))
    assert proc.returncode == 2
    assert "row 2 (data row, 1-based), column 'area': expected a finite number, got 'big'" in proc.stderr
    assert "Traceback" not in proc.stderr and not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv"]
