"""Golden cases in the bundle: golden.json holds a few hundred rows with their float64 answers and the bound
float32 rounding may account for, so that parity can be checked where the model runs, without torch:
Predictor.self_check(), `torchport serve` on loading, and the Node.js example. (The base install's
self-check, without torch, is in test_cli.py.)"""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import DATA, run_cli
from test_node_example import score_with_node
from test_parity import _add_to_output, _rehash
from torchport.export import load_module
from torchport.runtime import BundleError, ParityError, Predictor
from torchport.train import load_dataset
from torchport.runtime.bundle import Bundle


def test_a_bundle_keeps_golden_cases_with_their_float64_answers(seed_bundle):
    manifest = Bundle.open(seed_bundle).manifest
    golden = json.loads((seed_bundle / "golden.json").read_text())
    assert manifest.golden.file == "golden.json" and "golden.json" in manifest.files
    assert manifest.golden.rows == len(golden["inputs"]) == len(golden["answers"]) and 128 < manifest.golden.rows <= 256
    assert golden["features"] == ["area"] and golden["targets"] == ["ntv_rich"]
    assert list(manifest.golden.bound) == golden["bound"] == list(manifest.parity.bound)
    x = np.array(golden["inputs"], np.float64)
    assert np.array_equal(x, x.astype(np.float32))  # float32 rows, written exactly
    module = load_module(seed_bundle).double()
    with torch.no_grad():
        np.testing.assert_allclose(golden["answers"], module(torch.from_numpy(x)).numpy(), rtol=1e-15, atol=0)
    training = load_dataset("plant_richness_lr").X.astype(np.float32)[:, 0]
    assert set(x[:22, 0]) == set(training.astype(np.float64))  # the training rows first, then random rows
    check = Predictor(seed_bundle).self_check()
    assert check.checked and check.rows == manifest.golden.rows and check.of_bound <= 1
    assert str(check).startswith(f"self-check: {check.rows} golden rows on CPUExecutionProvider within the parity bound")


@pytest.fixture()
def drifted(seed_bundle, tmp_path):
    """A bundle whose model.onnx no longer computes what was exported (+1e-3 on the output), its manifest
    consistent with it: only the golden cases can tell."""
    bundle = tmp_path / "drifted"
    shutil.copytree(seed_bundle, bundle)
    _add_to_output(bundle / "model.onnx", 1e-3)
    _rehash(bundle, "model.onnx")
    return bundle


def test_self_check_finds_a_model_that_computes_something_else(drifted):
    with pytest.raises(ParityError) as e:
        Predictor(drifted).self_check()
    message = str(e.value)
    assert message.startswith("self-check failed on CPUExecutionProvider: golden row ")
    assert "target 'ntv_rich' (run as one batch)" in message or "target 'ntv_rich' (run in batches" in message
    assert "off by 0.001, beyond the " in message and "that float32 rounding may account for" in message


def test_serve_runs_the_self_check_on_loading(seed_bundle, drifted):
    proc = run_cli("serve", str(drifted), "--port", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "torchport serve: error: self-check failed on CPUExecutionProvider" in proc.stderr


def test_the_node_example_runs_the_golden_cases(seed_bundle, drifted):
    ok = score_with_node(seed_bundle, [[3.0]])
    assert ok.returncode == 0, ok.stderr
    bad = score_with_node(drifted, [[3.0]])
    assert bad.returncode == 2 and "self-check failed: golden row " in bad.stderr
    assert "that float32 rounding may account for" in bad.stderr


def test_bundles_without_golden_cases_still_load(tmp_path):
    check = Predictor(DATA / "v1" / "seed").self_check()
    assert not check.checked and "no golden cases" in str(check)
    assert score_with_node(DATA / "v1" / "seed", [[3.0]]).returncode == 0


def test_a_malformed_golden_file_is_named(seed_bundle, tmp_path):
    bundle = tmp_path / "bad"
    shutil.copytree(seed_bundle, bundle)
    golden = json.loads((bundle / "golden.json").read_text())
    golden["targets"] = ["other"]
    (bundle / "golden.json").write_text(json.dumps(golden))
    _rehash(bundle, "golden.json")
    with pytest.raises(BundleError, match=r"golden.json is malformed \(it is for features \['area'\] and targets "
                                          r"\['other'\], not \['area'\] and \['ntv_rich'\]\); re-export the bundle"):
        Predictor(bundle).self_check()
