"""The manifest as a contract: format-1 bundles (written by torchport before the typed manifest, kept in
tests/data/v1) still load, verify and re-export; from_json refuses what is malformed, naming it; and what
torchport writes is strict JSON, a constant target included (R^2 is null, with the reason beside it)."""
import json
import shutil

import numpy as np
import pytest

from conftest import DATA, manifest_pair, run_cli, strict_json_problems
from torchport.runtime import BundleError, Predictor
from torchport.runtime.bundle import FORMAT_VERSION, Bundle, Manifest

V1 = DATA / "v1"


@pytest.mark.parametrize("name", ["seed", "mlp"])
def test_a_format_1_manifest_migrates_and_round_trips(name):
    raw = json.loads((V1 / name / "manifest.json").read_text())
    assert raw["format_version"] == 1
    manifest = Manifest.from_json(raw)
    assert manifest.format_version == FORMAT_VERSION and manifest.features == tuple(raw["features"])
    assert manifest.model == raw["model"] and "model" not in manifest.training
    assert manifest.training["settings"]["seed"] == 0 and manifest.training["epochs_run"] == raw["training"]["epochs"]
    assert manifest.parity.passed and {(p.reference, p.candidate) for p in manifest.parity.pairs} == \
        {tuple(k.split("~")) for k in raw["parity"]["pairs"]}
    again = Manifest.from_json(json.loads(json.dumps(manifest.to_json(), allow_nan=False)))
    assert again == manifest


@pytest.mark.parametrize("name", ["seed", "mlp"])
def test_a_format_1_bundle_predicts_verifies_and_is_upgraded(name, tmp_path):
    bundle = tmp_path / name
    shutil.copytree(V1 / name, bundle)
    x = np.random.default_rng(0).uniform(0, 5, size=(100, len(Predictor(bundle).feature_names)))
    before = Predictor(bundle).predict(x)
    proc = run_cli("verify", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "parity: PASSED" in proc.stdout and "training rows: bundled dataset" in proc.stdout
    upgraded = json.loads((bundle / "manifest.json").read_text())
    assert upgraded["format_version"] == FORMAT_VERSION and manifest_pair(upgraded, "torch", "onnxruntime")["passed"]
    assert not strict_json_problems([bundle / "manifest.json"])
    assert np.array_equal(Predictor(bundle).predict(x), before)


def test_a_format_1_bundle_re_exports(tmp_path):
    proc = run_cli("export", str(V1 / "seed"), "--out", str(tmp_path / "new"), "--opset", "20")
    assert proc.returncode == 0, proc.stderr
    new = Bundle.open(tmp_path / "new").manifest
    assert new.export.opset == 20 and new.parity.passed and new.training["dataset"]["name"] == "plant_richness_lr"
    assert sorted(n for n in new.files if n.startswith("report/")) == ["report/index.html", "report/inference.txt"]


def _broken(edit) -> dict:
    raw = json.loads((V1 / "seed" / "manifest.json").read_text())
    manifest = Manifest.from_json(raw).to_json()
    edit(manifest)
    return manifest


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=99), "format version 99, newer than this torchport reads"),
    (lambda m: m.update(format="something else"), "is not a torchport manifest"),
    (lambda m: m.pop("files"), "lacks 'files'"),
    (lambda m: m["inputs"][0].update(shape=["batch", 2]), "disagree with the 1 features"),
    (lambda m: m["files"].update({"../outside": {"sha256": "0" * 64, "bytes": 1}}), "not a file inside the bundle"),
    (lambda m: m["files"]["model.onnx"].update(bytes="many"), "files['model.onnx'].bytes must be int"),
    (lambda m: m["parity"].update(passed="yes"), "parity.passed must be bool"),
    (lambda m: m["export"].update(opset=True), "export.opset must be int"),
])
def test_from_json_refuses_a_malformed_manifest_naming_the_field(edit, message):
    with pytest.raises(BundleError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        Manifest.from_json(_broken(edit))


def test_a_constant_target_writes_strict_json_with_the_reason(tmp_path):
    data = tmp_path / "flat.csv"
    data.write_text("x,y\n" + "".join(f"{i},5\n" for i in range(12)))
    proc = run_cli("train", "--data", str(data), "--target", "y", "--epochs", "50", "--no-progress",
                   "--out", str(tmp_path / "flat"))
    assert proc.returncode == 0, proc.stderr
    assert not strict_json_problems([tmp_path / "flat" / "manifest.json"])
    metrics = json.loads((tmp_path / "flat" / "manifest.json").read_text())["training"]["metrics"]
    assert metrics["r2"] is None and "constant" in metrics["undefined"]["r2"]
    assert "Infinity" not in (tmp_path / "flat" / "manifest.json").read_text()
