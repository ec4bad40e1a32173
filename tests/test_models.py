"""Beyond the seed's model: MLPs, several features and targets, scaling inside the graph, optimizers."""
import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from torchport.export import load_module
from torchport.runtime import Predictor
from torchport.train import Regressor, exact_least_squares, load_dataset, r2_score
from torchport.train.models import build_model


@pytest.fixture(scope="module")
def mlr():
    return load_dataset("plant_richness_mlr")


def test_mlp_acceptance_command(tmp_path, mlr):
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "32,32",
                   "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "trained mlp 32,32 relu (standardised)" in proc.stdout and "parity: PASSED" in proc.stdout
    assert run_cli("verify", str(out)).returncode == 0
    r2_mlp = r2_score(mlr.y, Predictor(out).predict(mlr.X))
    r2_linear_best = exact_least_squares(mlr.X, mlr.y)["r2"]  # no linear model can do better on these rows
    assert r2_mlp > r2_linear_best
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["hidden"] == [32, 32] and m["training"]["hyperparameters"]["optimizer"] == "adam"
    assert m["model"]["scale_features"] and m["model"]["scale_targets"]


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
    np.testing.assert_allclose(m["weight"], ex["weight"], rtol=1e-3)
    np.testing.assert_allclose(m["bias"], ex["bias"], rtol=1e-3)


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
    assert isinstance(build_model({"kind": "linear", "n_features": 1, "n_targets": 1}), torch.nn.Linear)
    scaled = build_model({"kind": "linear", "n_features": 1, "n_targets": 1, "scale_features": True})
    assert [name for name, _ in scaled.named_children()] == ["scale_in", "core"]
