"""The main job end to end through the real CLI: train -> export -> verify -> predict."""
import json
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli
from torchport.runtime import BundleError, Predictor
from torchport.runtime.bundle import sha256_file


def test_train_prints_the_summary(trained_seed_bundle):
    out = (trained_seed_bundle.parent / "train_stdout.txt").read_text()
    assert "tutorial (published)" in out and "exact least squares" in out
    assert "parity: PASSED" in out
    m = re.search(r"prediction at area = 3 through ONNX Runtime \(CPUExecutionProvider\): ([\d.]+)", out)
    assert m and float(m.group(1)) == pytest.approx(2.403, abs=0.01)


def test_acceptance_through_the_runtime(seed_bundle):
    p = Predictor(seed_bundle)
    pred = p.predict(np.array([[0.0], [1.0], [3.0]], dtype=np.float32))[:, 0]
    assert pred[2] == pytest.approx(2.403, abs=0.01)
    assert pred[1] - pred[0] == pytest.approx(0.357, abs=0.01)
    assert pred[0] == pytest.approx(1.331, abs=0.02)
    from torchport.train import load_dataset, r2_score
    d = load_dataset("plant_richness_lr")
    assert r2_score(d.y, p.predict(d.X)) >= 0.82


def test_manifest_records_everything(seed_bundle):
    m = json.loads((seed_bundle / "manifest.json").read_text())
    assert m["format_version"] == 2 and m["features"] == ["area"] and m["targets"] == ["ntv_rich"]
    assert m["inputs"][0] == {"name": "features", "dtype": "float32", "shape": ["batch", 1]}
    for name in ("model.onnx", "model.large_batch.onnx", "model.torchscript.pt", "model.pt2", "checkpoint.pt"):
        assert m["files"][name]["sha256"] == sha256_file(seed_bundle / name)
        assert m["files"][name]["writer"]["versions"]["torch"]
    assert m["export"]["formats"] == ["onnx", "torchscript", "exported"] and m["export"]["not_written"] == {}
    t = m["training"]
    assert t["lr"] == 0.002 and t["optimizer"] == "sgd" and t["epochs_run"] == 6000 and t["settings"]["seed"] == 0
    assert "model" not in t and m["model"] == {"kind": "linear", "n_features": 1, "n_targets": 1,
                                                "scale_features": False, "scale_targets": False}
    assert t["device"] == "cpu" and len(t["dataset"]["fingerprint_sha256"]) == 64
    assert 0.04 < t["final_loss"] < 0.041 and t["metrics"]["r2"] >= 0.82
    assert m["export"]["opset"] == 18 and m["export"]["versions"]["torch"]
    assert m["parity"]["passed"] and m["parity"]["cases"][0] == {"name": "training data", "rows": 22}
    assert [c["rows"] for c in m["parity"]["cases"][1:]] == [1, 2, 7, 1001, 4096, 40000]


def test_onnx_has_dynamic_batch_and_names(seed_bundle):
    import onnx
    model = onnx.load(str(seed_bundle / "model.onnx"))
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["torchport.features"]) == ["area"]
    assert json.loads(meta["torchport.targets"]) == ["ntv_rich"]


def test_verify_command(seed_bundle):
    proc = run_cli("verify", str(seed_bundle))
    assert proc.returncode == 0, proc.stderr
    diffs = {m.group(1): float(m.group(2))
             for m in re.finditer(r"max \|(\w+) - float64\| = (\S+)", proc.stdout)}
    assert set(diffs) == {"torch", "torchscript", "exported", "onnxruntime", "onnxruntime_model", "onnxruntime_large_batch"}
    assert all(v <= 1e-5 for v in diffs.values()) and diffs["torch"] > 0  # float32 rounding, the scale
    assert "training rows: bundled dataset plant_richness_lr (22 rows)" in proc.stdout


def test_verify_fails_beyond_tolerance(seed_bundle, tmp_path):
    """A bundle whose ONNX file answers differently from its checkpoint must fail verification (exit 1)."""
    from torchport.export import write_bundle
    from torchport.train.models import ModelSpec, build_model
    torch.manual_seed(1)
    spec = ModelSpec("linear", 1, 1)
    b = write_bundle(build_model(spec), spec, ["area"], ["ntv_rich"], tmp_path / "other")
    assert b.parity.passed
    # Swap in the seed bundle's checkpoint (and its hash), so torch now disagrees with the ONNX graph.
    shutil.copy(seed_bundle / "checkpoint.pt", tmp_path / "other" / "checkpoint.pt")
    m = json.loads((tmp_path / "other" / "manifest.json").read_text())
    m["files"]["checkpoint.pt"]["sha256"] = sha256_file(tmp_path / "other" / "checkpoint.pt")
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(m))
    proc = run_cli("verify", str(tmp_path / "other"))
    assert proc.returncode == 1
    assert "FAIL: onnxruntime: worst element at row" in proc.stdout and "parity: FAILED" in proc.stdout
    assert "FAIL: torch:" not in proc.stdout  # the float64 reference is the checkpoint's module: torch agrees
    assert json.loads((tmp_path / "other" / "manifest.json").read_text())["parity"]["passed"] is False


def test_corrupted_onnx_is_refused_naming_the_file(seed_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(seed_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx does not match the manifest"):
        Predictor(bad)
    proc = run_cli("predict", str(bad), "--input", "x.csv", "--output", str(tmp_path / "o.csv"), cwd=tmp_path)
    assert proc.returncode == 2


def test_existing_output_needs_force(seed_bundle):
    before = sha256_file(seed_bundle / "model.onnx")
    proc = run_cli("train", "--out", str(seed_bundle), "--epochs", "10", "--no-progress")
    assert proc.returncode == 2
    assert "exists; use --force" in proc.stderr and "Traceback" not in proc.stderr
    assert sha256_file(seed_bundle / "model.onnx") == before


def test_force_replaces_atomically(tmp_path):
    out = tmp_path / "b"
    assert run_cli("train", "--out", str(out), "--epochs", "5", "--no-progress").returncode == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    proc = run_cli("train", "--out", str(out), "--epochs", "7", "--no-progress", "--force")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["training"]["epochs_run"] == 7
    assert first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_bad_opset_is_refused_before_training(tmp_path):
    proc = run_cli("train", "--out", str(tmp_path / "b"), "--no-progress", "--opset", "99")
    assert proc.returncode == 2
    assert "opset 99 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


class Unexportable(torch.nn.Module):
    """Has weights to checkpoint, but its forward cannot be traced by torch.export."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, x):
        if x.sum().item() > 0:  # data-dependent control flow: torch.export refuses it
            return self.lin(x)
        return -self.lin(x)


def test_failed_export_leaves_nothing(seed_bundle, tmp_path):
    from torchport.export import write_bundle
    from torchport.export.formats import ExportError
    from torchport.train.models import ModelSpec
    spec = ModelSpec("linear", 1, 1)
    with pytest.raises(ExportError, match="could not export the module"):
        write_bundle(Unexportable(), spec, ["area"], ["ntv_rich"], tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    # and an existing bundle survives a failed --force replacement untouched
    shutil.copytree(seed_bundle, tmp_path / "old")
    before = {p: sha256_file(p) for p in (tmp_path / "old").rglob("*") if p.is_file()}
    with pytest.raises(ExportError):
        write_bundle(Unexportable(), spec, ["area"], ["ntv_rich"], tmp_path / "old", force=True)
    assert {p: sha256_file(p) for p in (tmp_path / "old").rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_divergence_exits_1_without_a_bundle(tmp_path):
    out = tmp_path / "b"
    proc = run_cli("train", "--out", str(out), "--lr", "5", "--no-progress")
    assert proc.returncode == 1
    assert "is stable only for lr below 0.127" in proc.stderr and "Traceback" not in proc.stderr
    assert "use --optimizer exact without --lr (the exact least-squares solution), or --lr 0.1" in proc.stderr
    assert not out.exists()


def test_reexport_at_another_opset(seed_bundle, tmp_path):
    proc = run_cli("export", str(seed_bundle), "--out", str(tmp_path / "o20"), "--opset", "20")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "o20" / "manifest.json").read_text())
    assert m["export"]["opset"] == 20 and m["parity"]["passed"]
    x = np.array([[3.0]], dtype=np.float32)
    assert Predictor(tmp_path / "o20").predict(x)[0, 0] == Predictor(seed_bundle).predict(x)[0, 0]


def test_multi_feature_dataset(tmp_path):
    proc = run_cli("train", "--data", "plant_richness_mlr", "--out", str(tmp_path / "mlr"), "--lr", "0.0001",
                   "--epochs", "3000", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "parity: PASSED" in proc.stdout and "latitude" in proc.stdout
    p = Predictor(tmp_path / "mlr")
    assert p.feature_names == ["area", "latitude", "dist_mainland"]
    import pandas as pd
    frame = pd.DataFrame({"dist_mainland": [10.0], "area": [3.0], "latitude": [42.0]})
    assert p.predict(frame).shape == (1, 1)
