import numpy as np
import pytest
import torch

from torchport.train import Regressor, exact_least_squares, load_dataset, r2_score
from torchport.train.estimator import TrainingDiverged, resolve_device


@pytest.fixture(scope="module")
def seed_data():
    return load_dataset("plant_richness_lr")


@pytest.fixture(scope="module")
def fitted(seed_data):
    return Regressor(device="cpu").fit(seed_data.X, seed_data.y)


def test_defaults_are_the_tutorials(fitted):
    p = fitted.hyperparameters_
    assert (p["model"], p["optimizer"], p["lr"], p["momentum"], p["epochs"], p["batch_size"], p["loss"]) == \
        ("linear", "sgd", 0.002, 0.0, 6000, "full", "mse")
    assert p["scale"] is False and isinstance(fitted.module_, torch.nn.Linear)


def test_exact_fit_matches_the_published_reference(seed_data):
    ex = exact_least_squares(seed_data.X, seed_data.y)
    assert ex["weight"][0][0] == pytest.approx(0.355739, abs=1e-6)
    assert ex["bias"][0] == pytest.approx(1.336048, abs=1e-6)
    assert ex["r2"] == pytest.approx(0.827786, abs=1e-6)
    assert ex["mse"] == pytest.approx(0.040527, abs=1e-6)
    np.testing.assert_allclose(np.polyfit(seed_data.X[:, 0], seed_data.y[:, 0], 1),
                               [ex["weight"][0][0], ex["bias"][0]], rtol=1e-10)


def test_sgd_reproduces_the_tutorial(fitted, seed_data):
    assert fitted.coef_[0, 0] == pytest.approx(0.35739, abs=0.01)
    assert fitted.intercept_[0] == pytest.approx(1.33122, abs=0.02)
    assert float(fitted.predict([[3.0]])[0, 0]) == pytest.approx(2.40344, abs=0.01)
    assert r2_score(seed_data.y, fitted.predict(seed_data.X)) >= 0.82
    assert fitted.loss_history_.shape == (6000,)
    assert fitted.loss_history_[-1] < fitted.loss_history_[0]
    assert fitted.final_loss_ == pytest.approx(0.0405, abs=1e-3)


def test_same_seed_same_weights_other_seed_close(fitted, seed_data):
    again = Regressor(device="cpu").fit(seed_data.X, seed_data.y)
    assert torch.equal(again.module_.weight, fitted.module_.weight)
    other = Regressor(device="cpu", seed=7).fit(seed_data.X, seed_data.y)
    assert not torch.equal(other.module_.weight, fitted.module_.weight)
    assert other.coef_[0, 0] == pytest.approx(0.357, abs=0.01)


def test_more_epochs_approach_the_exact_fit(seed_data):
    ex = exact_least_squares(seed_data.X, seed_data.y)
    long = Regressor(device="cpu", epochs=60000, lr=0.01).fit(seed_data.X, seed_data.y)
    assert long.coef_[0, 0] == pytest.approx(ex["weight"][0][0], abs=2e-4)
    assert long.intercept_[0] == pytest.approx(ex["bias"][0], abs=5e-4)


def test_divergence_stops_with_advice(seed_data):
    with pytest.raises(TrainingDiverged, match="smaller learning rate"):
        Regressor(device="cpu", lr=5.0).fit(seed_data.X, seed_data.y)


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0}, "lr must be a positive number"),
    ({"lr": float("nan")}, "lr must be a positive number"),
    ({"epochs": 0}, "epochs must be a whole number"),
    ({"model": "forest"}, "model must be one of linear"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, lbfgs"),
    ({"momentum": 0.9, "optimizer": "adam"}, "momentum must be in"),
    ({"optimizer": "lbfgs", "batch_size": 4}, "lbfgs trains on the full batch"),
    ({"patience": 5}, "patience .* needs a validation split"),
    ({"val_fraction": 1.0}, "val_fraction must be in"),
    ({"model": "mlp", "hidden": []}, "an mlp needs hidden layer widths"),
    ({"model": "mlp", "activation": "swish"}, "activation must be one of"),
])
def test_bad_settings_are_named(seed_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Regressor(**kwargs).fit(seed_data.X, seed_data.y)


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match=r"same number of rows; got X \(3, 1\) and y \(2, 1\)"):
        Regressor().fit(np.zeros((3, 1)), np.zeros((2, 1)))


def test_predict_before_fit():
    with pytest.raises(RuntimeError, match="not fitted yet"):
        Regressor().predict([[1.0]])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
