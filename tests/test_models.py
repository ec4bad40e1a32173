"""Beyond the seed's model: MLPs, several features and targets, scaling inside the graph, optimizers."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import DATA, run_cli
from torchport.export import load_module
from torchport.runtime import Predictor
from torchport.runtime.hot_path import cache_chunk_rows
from torchport.train import ModelSpec, Regressor, SettingsError, exact_least_squares, load_dataset, r2_score
from torchport.train.models import build_model


@pytest.fixture(scope="module")
def mlr():
    return load_dataset("plant_richness_mlr")


@pytest.mark.full
def test_mlp_acceptance_command(tmp_path, mlr):
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "32,32",
                   "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "trained mlp 32,32 relu (standardised inside the model)" in proc.stdout and "parity: PASSED" in proc.stdout
    assert run_cli("verify", str(out)).returncode == 0
    r2_mlp = r2_score(mlr.y, Predictor(out).predict(mlr.X))
    r2_linear_best = exact_least_squares(mlr.X, mlr.y).r2  # no linear model can do better on these rows
    assert r2_mlp > r2_linear_best
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["hidden"] == [32, 32] and m["training"]["optimizer"] == "adam"
    assert m["model"]["scale_features"] and m["model"]["scale_targets"]
    # it nearly interpolates its 22 rows, beyond float32 (issue 26's bound): a float64 bundle, whose cache-sized
    # chunks hold half a float32 graph's rows
    assert m["precision"]["dtype"] == "float64"
    p = Predictor(out, intra_op_threads=2)
    x = np.resize(mlr.X, (5 * cache_chunk_rows(32, 8) + 3, 3))
    regime = p.plan.regime(len(x))
    assert regime.chunk_rows == cache_chunk_rows(32) // 2 and regime.workers == 2
    plain = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(p.predict(x), plain.run(None, {plain.get_inputs()[0].name: x})[0],
                               rtol=1e-10, atol=1e-10)


def test_scaling_is_inside_the_exported_graph(tmp_path, mlr):
    """The ONNX graph takes raw features: it agrees with the torch module on raw rows, and its scaling
    constants are the training data's statistics."""
    out = tmp_path / "scaled"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--scale", "on", "--optimizer", "lbfgs",
                   "--epochs", "30", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    module = load_module(out)
    np.testing.assert_allclose(module.scale_in.mean.numpy(), mlr.X.mean(axis=0), rtol=1e-6)
    with torch.no_grad():
        expected = module(torch.tensor(mlr.X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(Predictor(out).predict(mlr.X), expected, atol=1e-5)
    # a standardised linear model fitted by L-BFGS lands on the exact least-squares fit, in raw units
    ex = exact_least_squares(mlr.X, mlr.y)
    m = json.loads((out / "manifest.json").read_text())["training"]["metrics"]
    np.testing.assert_allclose(m["weight"], ex.weight, rtol=1e-3)
    np.testing.assert_allclose(m["bias"], ex.bias, rtol=1e-3)


def test_several_targets(tmp_path):
    import pandas as pd
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y1"] = 2 * frame.a - frame.b + 0.5
    frame["y2"] = np.sin(frame.c) * 10
    path = tmp_path / "two.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "two"
    proc = run_cli("train", "--data", str(path), "--target", "y1,y2", "--model", "mlp", "--hidden", "32",
                   "--activation", "silu", "--epochs", "800", "--lr", "0.01", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    p = Predictor(out)
    assert p.target_names == ["y1", "y2"]
    pred = p.predict(frame)
    assert list(pred.columns) == ["y1", "y2"]
    assert r2_score(frame[["y1", "y2"]].to_numpy(), pred.to_numpy()) > 0.95


@pytest.mark.parametrize("kwargs", [
    {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01},
    {"optimizer": "adam", "batch_size": 5, "lr_schedule": "cosine", "lr": 0.01},
    {"optimizer": "lbfgs", "epochs": 40},
])
def test_optimizers_learn_and_reproduce(mlr, kwargs):
    kwargs = {"model": "mlp", "hidden": (8,), "epochs": 300, "device": "cpu", **kwargs}
    a = Regressor(**kwargs).fit(mlr.X, mlr.y)
    b = Regressor(**kwargs).fit(mlr.X, mlr.y)
    assert r2_score(mlr.y, a.predict(mlr.X)) > 0.85
    np.testing.assert_array_equal(a.predict(mlr.X), b.predict(mlr.X))


def test_early_stopping_keeps_the_best_weights(mlr):
    r = Regressor(model="mlp", hidden=(64, 64), epochs=5000, lr=0.01, val_fraction=0.3, patience=50,
                  device="cpu").fit(mlr.X, mlr.y)
    assert r.n_epochs_ < 5000
    assert r.n_epochs_ == r.best_epoch_ + 50
    assert r.val_loss_history_.min() == pytest.approx(r.val_loss_history_[r.best_epoch_ - 1])
    assert len(r.loss_history_) == r.n_epochs_


def test_dropout_is_off_at_inference(mlr):
    r = Regressor(model="mlp", hidden=(16,), dropout=0.5, epochs=50, device="cpu").fit(mlr.X, mlr.y)
    np.testing.assert_array_equal(r.predict(mlr.X), r.predict(mlr.X))


def test_unscaled_linear_is_the_tutorials_bare_module():
    assert isinstance(build_model(ModelSpec("linear", 1, 1)), torch.nn.Linear)
    scaled = build_model(ModelSpec("linear", 1, 1, scale_features=True))
    assert [name for name, _ in scaled.named_children()] == ["scale_in", "core"]


def test_module_structure_and_state_dict_keys_are_unchanged():
    """Checkpoints written before ModelSpec must load: the same modules, the same state_dict keys."""
    mlp = build_model(ModelSpec("mlp", 3, 2, hidden=[16, 8], activation="tanh", dropout=0.1,
                                scale_features=True, scale_targets=True))
    assert list(mlp.state_dict()) == [
        "scale_in.mean", "scale_in.std", "core.0.weight", "core.0.bias", "core.3.weight", "core.3.bias",
        "core.6.weight", "core.6.bias", "scale_out.mean", "scale_out.std"]
    assert [type(m).__name__ for m in mlp.core] == ["Linear", "Tanh", "Dropout"] * 2 + ["Linear"]
    plain = build_model(ModelSpec("mlp", 1, 1, hidden=(4,), scale_features=False, scale_targets=False))
    assert list(plain.state_dict()) == ["core.0.weight", "core.0.bias", "core.2.weight", "core.2.bias"]
    assert list(build_model(ModelSpec("linear", 2, 1)).state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("bundle", ["seed", "mlp"])
def test_checkpoints_of_format_1_bundles_load(bundle):
    state = torch.load(DATA / "v1" / bundle / "checkpoint.pt", weights_only=True)
    module = build_model(ModelSpec.from_json(state["spec"]))
    module.load_state_dict(state["state_dict"])  # strict: every key, every shape
    assert ModelSpec.from_json(state["spec"]).to_json() == state["spec"]


def test_spec_json_has_exact_keys_and_round_trips():
    linear = ModelSpec("linear", 1, 1)
    assert linear.to_json() == {"kind": "linear", "n_features": 1, "n_targets": 1, "scale_features": False,
                                "scale_targets": False}
    mlp = ModelSpec("mlp", 3, 2, hidden=[32, 32], scale_features=True, scale_targets=True)
    assert mlp.hidden == (32, 32)
    assert mlp.to_json() == {"kind": "mlp", "n_features": 3, "n_targets": 2, "scale_features": True,
                             "scale_targets": True, "hidden": [32, 32], "activation": "relu", "dropout": 0.0}
    for spec in (linear, mlp):
        assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    # missing scale_* keys: on for an mlp, off for linear
    assert ModelSpec.from_json({"kind": "mlp", "n_features": 1, "n_targets": 1, "hidden": [4]}).scale_targets
    assert not ModelSpec.from_json({"kind": "linear", "n_features": 1, "n_targets": 1}).scale_features


@pytest.mark.parametrize("kwargs, parameter", [
    ({"kind": "forest"}, "kind"),
    ({"n_features": 0}, "n_features"),
    ({"n_targets": 1.0}, "n_targets"),
    ({"kind": "mlp", "hidden": ()}, "hidden"),
    ({"kind": "mlp", "hidden": (4, True)}, "hidden"),
    ({"kind": "mlp", "hidden": (4,), "activation": "swish"}, "activation"),
    ({"kind": "mlp", "hidden": (4,), "dropout": -0.1}, "dropout"),
    ({"activation": "swish"}, "activation"),
    ({"scale_features": 1}, "scale_features"),
])
def test_a_bad_spec_cannot_be_made(kwargs, parameter):
    with pytest.raises(SettingsError) as e:
        ModelSpec(**{"kind": "linear", "n_features": 1, "n_targets": 1, **kwargs})
    assert e.value.parameter == parameter and parameter in str(e.value)


@pytest.mark.parametrize("obj, parameter", [
    ([1, 2], None),
    ({"n_features": 1, "n_targets": 1}, "kind"),
    ({"kind": "linear", "n_features": "1", "n_targets": 1}, "n_features"),
    ({"kind": "mlp", "n_features": 1, "n_targets": 1}, "hidden"),
    ({"kind": "linear", "n_features": 1, "n_targets": 1, "scale_targets": "yes"}, "scale_targets"),
])
def test_bad_spec_json_is_refused_naming_the_key(obj, parameter):
    with pytest.raises(SettingsError) as e:
        ModelSpec.from_json(obj)
    assert e.value.parameter == parameter


def test_a_linear_spec_ignores_the_mlp_only_fields():
    spec = ModelSpec("linear", 2, 1, hidden=[4], activation="tanh", dropout=0.5)
    assert spec == ModelSpec("linear", 2, 1) and (spec.hidden, spec.activation, spec.dropout) == ((), "relu", 0.0)


def test_build_model_takes_a_spec():
    with pytest.raises(TypeError, match="build_model takes a ModelSpec"):
        build_model({"kind": "linear", "n_features": 1, "n_targets": 1})
