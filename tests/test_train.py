import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from torchport.train import (
    DataError, ModelSpec, Regressor, SettingsError, TrainError, TrainingDiverged, exact_least_squares, load_dataset,
    r2_score,
)
from torchport.train.estimator import resolve_device

TRAIN_DIR = Path(__file__).resolve().parent.parent / "train"


@pytest.fixture(scope="module")
def seed_data():
    return load_dataset("plant_richness_lr")


@pytest.fixture(scope="module")
def fitted(seed_data):
    return Regressor(device="cpu").fit(seed_data.X, seed_data.y)


def test_defaults_are_the_tutorials(fitted):
    p = fitted.get_params()
    assert (p["model"], p["optimizer"], p["lr"], p["momentum"], p["epochs"], p["batch_size"], p["scale"]) == \
        ("linear", None, None, 0.0, 6000, None, "auto")
    assert (fitted.optimizer_, fitted.lr_, fitted.n_epochs_, fitted.device_) == ("sgd", 0.002, 6000, "cpu")
    assert fitted.spec_ == ModelSpec("linear", 1, 1) and isinstance(fitted.module_, torch.nn.Linear)
    assert fitted.n_features_in_ == 1 and fitted.best_epoch_ is None and len(fitted.val_loss_history_) == 0


def test_default_fit_is_bit_for_bit_todays(fitted):
    """The refactored fit lands on the figures the README prints for the tutorial's run."""
    assert round(float(fitted.coef_[0, 0]), 5) == 0.35761 and round(float(fitted.intercept_[0]), 5) == 1.33058
    assert fitted.final_loss_ == pytest.approx(0.040533, abs=5e-7)


def test_exact_fit_matches_the_published_reference(seed_data):
    ex = exact_least_squares(seed_data.X, seed_data.y)
    assert ex.weight[0][0] == pytest.approx(0.355739, abs=1e-6)
    assert ex.bias[0] == pytest.approx(1.336048, abs=1e-6)
    assert ex.r2 == pytest.approx(0.827786, abs=1e-6)
    assert ex.mse == pytest.approx(0.040527, abs=1e-6)
    assert ex.undefined == {}
    np.testing.assert_allclose(np.polyfit(seed_data.X[:, 0], seed_data.y[:, 0], 1),
                               [ex.weight[0][0], ex.bias[0]], rtol=1e-10)


def test_r2_of_a_constant_target_is_undefined_not_inf():
    X, y = np.arange(6.0).reshape(-1, 1), np.full(6, 2.0)
    assert np.isnan(r2_score(y, y + 0.1))
    ex = exact_least_squares(X, y)
    assert ex.r2 is None and ex.undefined == {"r2": "the target is constant, so R^2 is undefined"}
    one = exact_least_squares(X[:1], y[:1])
    assert one.r2 is None and "at least two rows" in one.undefined["r2"] and one.mse == 0.0


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
    assert long.coef_[0, 0] == pytest.approx(ex.weight[0][0], abs=2e-4)
    assert long.intercept_[0] == pytest.approx(ex.bias[0], abs=5e-4)


def test_divergence_stops_with_advice(seed_data):
    with pytest.raises(TrainingDiverged, match=r"lr 5 is too large for this data: use a smaller learning rate, "
                                               r"for example lr=0\.5$") as e:
        Regressor(device="cpu", lr=5.0).fit(seed_data.X, seed_data.y)
    assert e.value.parameter == "lr" and e.value.exit_code == 1 and isinstance(e.value, RuntimeError)


@pytest.mark.parametrize("kwargs, parameter, message", [
    ({"lr": 0}, "lr", "lr must be a positive number"),
    ({"lr": float("nan")}, "lr", "lr must be a positive number"),
    ({"lr": True}, "lr", "lr must be a positive number"),
    ({"epochs": 0}, "epochs", "epochs must be a whole number"),
    ({"epochs": 10.5}, "epochs", "epochs must be a whole number"),
    ({"model": "forest"}, "model", "model must be one of linear"),
    ({"optimizer": "rmsprop"}, "optimizer", "optimizer must be one of sgd, adam, lbfgs"),
    ({"momentum": 0.9, "optimizer": "adam"}, "momentum", "momentum is for optimizer='sgd' only; got momentum=0.9 with optimizer 'adam'"),
    ({"momentum": 1.0}, "momentum", r"momentum must be a number in \[0, 1\)"),
    ({"optimizer": "lbfgs", "batch_size": 4}, "batch_size", "lbfgs trains on the full batch; leave batch_size=None"),
    ({"batch_size": 0}, "batch_size", "batch_size must be a whole number >= 1"),
    ({"patience": 5}, "patience", "patience .* needs a validation split"),
    ({"patience": 0, "val_fraction": 0.2}, "patience", "patience must be a whole number >= 1"),
    ({"val_fraction": 1.0}, "val_fraction", r"val_fraction must be a number in \[0, 1\)"),
    ({"lr_schedule": "step"}, "lr_schedule", "lr_schedule must be one of none, cosine"),
    ({"scale": "yes"}, "scale", "scale must be one of auto, on, off"),
    ({"seed": -1}, "seed", "seed must be a whole number >= 0"),
    ({"device": "tpu"}, "device", "unknown device 'tpu'"),
    ({"model": "mlp", "hidden": []}, "hidden", "an mlp needs hidden layer widths"),
    ({"model": "mlp", "hidden": (8, 0)}, "hidden", "an mlp needs hidden layer widths >= 1"),
    ({"model": "mlp", "dropout": 1.0}, "dropout", r"dropout must be a number in \[0, 1\)"),
    ({"model": "mlp", "activation": "swish"}, "activation", "activation must be one of"),
    ({"checkpoint": 3}, "checkpoint", "checkpoint must be a file path or None"),
])
def test_bad_settings_are_named(seed_data, kwargs, parameter, message):
    reg = Regressor(**kwargs)  # kept as given: checked when fit starts, or by check_params
    assert reg.get_params()[next(iter(kwargs))] is kwargs[next(iter(kwargs))]
    for call in (reg.check_params, lambda: reg.fit(seed_data.X, seed_data.y)):
        with pytest.raises(SettingsError, match=message) as e:
            call()
        assert e.value.parameter == parameter and e.value.exit_code == 2 and isinstance(e.value, ValueError)
        assert "--" not in str(e.value)  # written for Python callers; the CLI adds its flags


def test_settings_that_depend_on_the_data_are_named(seed_data):
    with pytest.raises(SettingsError, match="val_fraction 0.99 leaves no training rows out of 22") as e:
        Regressor(val_fraction=0.99).fit(seed_data.X, seed_data.y)
    assert e.value.parameter == "val_fraction"
    with pytest.raises(SettingsError, match="resume=True needs checkpoint=") as e:
        Regressor(epochs=5).fit(seed_data.X, seed_data.y, resume=True)
    assert e.value.parameter == "checkpoint"


def test_shape_mismatch_is_explained():
    with pytest.raises(DataError, match=r"same number of rows; got X \(3, 1\) and y \(2, 1\)"):
        Regressor().fit(np.zeros((3, 1)), np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"X must have shape \(rows, features\); got shape \(3,\)"):
        Regressor().fit(np.zeros(3), np.zeros(3))


def test_non_finite_data_is_named_not_trained_on():
    X = np.ones((4, 2))
    X[2, 1] = np.nan
    with pytest.raises(DataError, match=r"X\[2, 1\] is nan, not a finite float32 number") as e:
        Regressor(epochs=5).fit(X, np.arange(4.0))
    assert e.value.parameter == "X"
    with pytest.raises(DataError, match=r"y\[1, 0\] is inf") as e:
        Regressor(epochs=5).fit(np.ones((4, 2)), [0.0, 1e39, 2.0, 3.0])  # beyond float32
    assert e.value.parameter == "y"


def test_predict_checks_the_feature_width(fitted):
    with pytest.raises(DataError, match=r"X has 2 feature column\(s\); this Regressor was fitted on 1"):
        fitted.predict(np.zeros((3, 2)))
    assert fitted.predict([[3.0]]).shape == (1, 1)  # fitted on a 2-D y: 2-D predictions


def test_predict_before_fit():
    with pytest.raises(RuntimeError, match="not fitted yet"):
        Regressor().predict([[1.0]])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(SettingsError, match="torch sees no CUDA GPU.*use device='cpu'") as e:
        resolve_device("cuda")
    assert e.value.parameter == "device"


def test_errors_form_one_family():
    for cls in (DataError, SettingsError, TrainingDiverged):
        assert issubclass(cls, TrainError)
    e = DataError("the message", parameter="target")
    assert str(e) == e.message == "the message" and e.parameter == "target" and e.exit_code == 2
    assert TrainError("x").parameter is None


def test_train_imports_neither_export_runtime_nor_benchmarks():
    """train/ is used by export and benchmarks; an import back (even inside a function) would be a cycle."""
    for path in sorted(TRAIN_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("torchport.runtime", "torchport.export", "torchport.benchmarks")), \
                    f"{path.name} imports {name}"
