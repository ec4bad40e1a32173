"""The bundles checked in under tests/data/current are what `torchport train` writes today: today's format
(their manifests read back unchanged), their golden cases pass here, and training them again by the
commands in tests/data/current/README.md gives the same manifest layout, settings, files and weights. When
one of these fails, make them again as that README says."""
import json

import numpy as np
import pytest
import torch

from conftest import CURRENT, run_cli
from torchport.runtime import Predictor
from torchport.runtime.bundle import FORMAT_VERSION, MANIFEST, Manifest
from torchport.train.record import TrainingRecord

MLP_COMMAND = ["--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "32,32", "--epochs", "100",
               "--no-plots", "--no-progress"]


def manifest(bundle) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def layout(obj):
    """The shape of a JSON value: its keys, nested, and the layout of a list's first item."""
    if isinstance(obj, dict):
        return {k: layout(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [layout(obj[0])] if obj else []
    return None


def without_plots(m: dict) -> dict:
    return {**m, "files": {k: v for k, v in m["files"].items() if not k.endswith(".png")}}


@pytest.mark.parametrize("name", ["seed", "mlr-mlp"])
def test_checked_in_bundles_are_in_todays_format_and_pass_their_golden_cases(name):
    obj = manifest(CURRENT / name)
    assert obj["format_version"] == FORMAT_VERSION
    assert json.loads(json.dumps(Manifest.from_json(obj).to_json())) == obj  # nothing migrated, nothing dropped
    assert TrainingRecord.from_json(obj["training"]).to_json() == obj["training"]
    check = Predictor(CURRENT / name).self_check()
    assert check.checked and check.of_bound <= 1


def assert_same_bundle(checked_in, trained, rtol: float) -> None:
    """The same layout, model, training settings, formats and files, and weights within ``rtol``."""
    old, new = manifest(checked_in), without_plots(manifest(trained))
    assert layout(old) == layout(new)
    assert old["model"] == new["model"] and old["features"] == new["features"] and old["targets"] == new["targets"]
    for key in ("dataset", "settings", "optimizer", "lr", "epochs_run", "plan", "training_rows", "validation_rows"):
        assert old["training"][key] == new["training"][key], key
    for key in ("opset", "ops", "large_batch_graph", "formats", "not_written"):
        assert old["export"][key] == new["export"][key], key
    assert set(old["files"]) == set(new["files"])
    assert old["parity"]["passed"] and new["parity"]["passed"]
    a = torch.load(checked_in / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(trained / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=rtol, atol=rtol, err_msg=key)


def test_the_checked_in_seed_is_what_train_writes_today(seed_bundle, trained_seed_bundle):
    assert_same_bundle(seed_bundle, trained_seed_bundle, rtol=1e-6)


@pytest.mark.full
def test_the_checked_in_mlp_is_what_train_writes_today(mlr_mlp_bundle, tmp_path):
    proc = run_cli("train", *MLP_COMMAND, "--out", str(tmp_path / "mlr-mlp"))
    assert proc.returncode == 0, proc.stderr
    assert_same_bundle(mlr_mlp_bundle, tmp_path / "mlr-mlp", rtol=1e-4)
