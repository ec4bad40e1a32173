import numpy as np
import pytest
import torch

from torchport.train import (
    DataError, ModelSpec, NotFittedError, Regressor, SettingsError, TrainError, TrainingDiverged, exact_least_squares,
    load_dataset, r2_score,
)
from torchport.train.estimator import resolve_device



@pytest.fixture(scope="module")
def seed_data():
    return load_dataset("plant_richness_lr")


@pytest.fixture(scope="module")
def fitted(seed_data):
    """The tutorial's recipe by name: SGD with its defaults."""
    return Regressor(optimizer="sgd", device="cpu").fit(seed_data.X, seed_data.y)


def test_sgds_defaults_are_the_tutorials(fitted):
    p = fitted.get_params()
    assert (p["model"], p["optimizer"], p["lr"], p["momentum"], p["epochs"], p["batch_size"], p["scale"]) == \
        ("linear", "sgd", None, 0.0, None, None, "auto")
    assert (fitted.optimizer_, fitted.lr_, fitted.n_epochs_, fitted.device_) == ("sgd", 0.002, 6000, "cpu")
    assert fitted.spec_ == ModelSpec("linear", 1, 1) and isinstance(fitted.module_, torch.nn.Linear)
    assert fitted.n_features_in_ == 1 and fitted.best_epoch_ is None and len(fitted.val_loss_history_) == 0
    assert fitted.scaled_ is False and fitted.fit_warnings_ == []  # cond([X, 1]) is 6.3 on the tutorial's data


def test_a_linear_models_default_is_the_exact_solution(seed_data):
    reg = Regressor(device="cpu").fit(seed_data.X, seed_data.y)
    ex = exact_least_squares(seed_data.X, seed_data.y)
    assert (reg.optimizer_, reg.lr_, reg.n_epochs_, reg.scaled_) == ("exact", None, 0, False)
    np.testing.assert_allclose(reg.coef_, ex.weight, rtol=1e-6)
    np.testing.assert_allclose(reg.intercept_, ex.bias, rtol=1e-6)
    assert len(reg.loss_history_) == 1 and reg.final_loss_ == pytest.approx(ex.mse, rel=1e-5)
    for iterative in ({"epochs": 300}, {"lr": 0.01}, {"momentum": 0.5}, {"lr_schedule": "cosine"}):
        assert Regressor(device="cpu", **iterative).fit(seed_data.X, seed_data.y).optimizer_ == "sgd", iterative


def test_the_exact_solution_is_standardised_when_ill_conditioned():
    mlr = load_dataset("plant_richness_mlr")  # cond([X, 1]) 1356: standardised inside the model
    reg = Regressor(device="cpu").fit(mlr.X, mlr.y)
    ex = exact_least_squares(mlr.X, mlr.y)
    assert reg.scaled_ and reg.spec_.scale_features and reg.spec_.scale_targets
    np.testing.assert_allclose(reg.coef_, ex.weight, rtol=1e-5)
    np.testing.assert_allclose(reg.predict(mlr.X), ex.predict(mlr.X), atol=1e-5)
    assert Regressor(device="cpu", scale="off").fit(mlr.X, mlr.y).scaled_ is False


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
    again = Regressor(device="cpu", optimizer="sgd").fit(seed_data.X, seed_data.y)
    assert torch.equal(again.module_.weight, fitted.module_.weight)
    other = Regressor(device="cpu", optimizer="sgd", seed=7).fit(seed_data.X, seed_data.y)
    assert not torch.equal(other.module_.weight, fitted.module_.weight)
    assert other.coef_[0, 0] == pytest.approx(0.357, abs=0.01)


def test_more_epochs_approach_the_exact_fit(seed_data):
    ex = exact_least_squares(seed_data.X, seed_data.y)
    long = Regressor(device="cpu", optimizer="sgd", epochs=60000, lr=0.01).fit(seed_data.X, seed_data.y)
    assert long.coef_[0, 0] == pytest.approx(ex.weight[0][0], abs=2e-4)
    assert long.intercept_[0] == pytest.approx(ex.bias[0], abs=5e-4)


def reaches_the_optimum(reg, data) -> bool:
    """Whether a fitted linear model's training MSE is within 1% of the exact least-squares fit's."""
    fitted = np.asarray(reg.predict(data.X), np.float64)
    return float(np.mean((fitted - data.y) ** 2)) <= 1.01 * exact_least_squares(data.X, data.y).mse


def test_divergence_gives_the_stable_step_and_fixes_that_work(seed_data):
    settings = {"device": "cpu", "lr": 5.0}
    with pytest.raises(TrainingDiverged) as e:
        Regressor(**settings).fit(seed_data.X, seed_data.y)
    message = str(e.value)
    assert message.startswith("training diverged at epoch ")
    assert "full-batch SGD on these features is stable only for lr below 0.127 (2 / the largest eigenvalue of " \
           "the loss's Hessian), and lr 5 is above it" in message
    assert "use optimizer='exact', lr=None (the exact least-squares solution), or lr=0.1" in message
    assert e.value.parameter == "lr" and e.value.exit_code == 1 and isinstance(e.value, RuntimeError)
    assert [f.settings for f in e.value.fixes] == [{"optimizer": "exact", "lr": None}, {"lr": 0.1},
                                                   {"scale": "on", "lr": 0.5}]
    for fix in e.value.fixes:  # each suggested setting leads to a fit at the least-squares optimum
        reg = Regressor(**{**settings, **fix.settings}).fit(seed_data.X, seed_data.y)
        assert reaches_the_optimum(reg, seed_data) and reg.fit_warnings_ == [], fix


def test_an_ill_conditioned_table_is_explained_with_scaling():
    """plant_richness_mlr unscaled: the Hessian's condition number is 1.8e6, no step reaches the optimum in
    6000 epochs; the advice is the exact solution or SGD on standardised features."""
    mlr = load_dataset("plant_richness_mlr")
    settings = {"device": "cpu", "optimizer": "sgd", "scale": "off"}
    with pytest.raises(TrainingDiverged) as e:
        Regressor(**settings).fit(mlr.X, mlr.y)
    message = str(e.value)
    assert "stable only for lr below 0.000474" in message and "condition number is 1.84e+06" in message
    assert [f.settings for f in e.value.fixes] == [{"optimizer": "exact"}, {"scale": "on", "lr": 0.5}]
    for fix in e.value.fixes:
        assert reaches_the_optimum(Regressor(**{**settings, **fix.settings}).fit(mlr.X, mlr.y), mlr), fix


def test_a_linear_fit_far_from_the_exact_one_says_so():
    from sklearn.datasets import load_diabetes
    from torchport.train import FitWarning
    from torchport.train.datasets import from_columns
    X, y = load_diabetes(return_X_y=True)  # the 10-feature, 442-row table (scaled columns)
    data = from_columns({**{f"x{j}": X[:, j] for j in range(10)}, "y": y}, ["y"], [f"x{j}" for j in range(10)],
                        "diabetes", "scikit-learn")
    settings = {"device": "cpu", "optimizer": "sgd", "scale": "off"}
    with pytest.warns(FitWarning, match=r"the SGD fit's training MSE .* times the exact least-squares fit's .* "
                                        r"\(R\^2 0\.\d+ against 0\.5177\): it stopped short of the optimum") as w:
        reg = Regressor(**settings).fit(data.X, data.y)
    assert len(reg.fit_warnings_) == 1 and str(reg.fit_warnings_[0]) == str(w[0].message)
    assert reg.fit_warnings_[0].fixes[0].settings == {"optimizer": "exact"}
    for fix in reg.fit_warnings_[0].fixes:
        again = Regressor(**{**settings, **fix.settings}).fit(data.X, data.y)
        assert again.fit_warnings_ == [] and reaches_the_optimum(again, data), fix


@pytest.mark.parametrize("kwargs, parameter, message", [
    ({"lr": 0}, "lr", "lr must be a positive number"),
    ({"lr": float("nan")}, "lr", "lr must be a positive number"),
    ({"lr": True}, "lr", "lr must be a positive number"),
    ({"epochs": 0}, "epochs", "epochs must be a whole number"),
    ({"epochs": 10.5}, "epochs", "epochs must be a whole number"),
    ({"optimizer": "exact", "lr": 0.1}, "lr", r"lr=0.1 does not apply to optimizer='exact' .*; leave lr=None, or "
                                              r"train iteratively with optimizer='sgd'"),
    ({"optimizer": "exact", "epochs": 10}, "epochs", "epochs=10 does not apply to optimizer='exact'"),
    ({"optimizer": "exact", "model": "mlp"}, "optimizer", "optimizer='exact' .* is for model='linear'"),
    ({"progress": "yes"}, "progress", "progress must be True, False or a function"),
    ({"model": "forest"}, "model", "model must be one of linear"),
    ({"optimizer": "rmsprop"}, "optimizer", "optimizer must be one of exact, sgd, adam, lbfgs"),
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
    with pytest.raises(DataError, match=r"X\[2, 1\] is NaN, not a finite float32 number") as e:
        Regressor(epochs=5).fit(X, np.arange(4.0))
    assert e.value.parameter == "X"
    with pytest.raises(DataError, match=r"y\[1, 0\] is 1e\+39 \(beyond float32's largest, 3\.403e\+38\)") as e:
        Regressor(epochs=5).fit(np.ones((4, 2)), [0.0, 1e39, 2.0, 3.0])  # beyond float32
    assert e.value.parameter == "y"


def test_predict_checks_the_feature_width(fitted):
    with pytest.raises(DataError, match=r"X has 2 features, but Regressor is expecting 1 features as input"):
        fitted.predict(np.zeros((3, 2)))
    assert fitted.predict([[3.0]]).shape == (1, 1)  # fitted on a 2-D y: 2-D predictions


def test_predict_before_fit():
    with pytest.raises(NotFittedError, match="this Regressor is not fitted yet; call fit") as e:
        Regressor().predict([[1.0]])
    assert isinstance(e.value, ValueError) and isinstance(e.value, AttributeError)
    assert not hasattr(Regressor(), "coef_")  # an AttributeError before fit, as scikit-learn's estimators


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(SettingsError, match="torch sees no CUDA GPU.*use device='cpu'") as e:
        resolve_device("cuda")
    assert e.value.parameter == "device"


def test_errors_form_one_family():
    from torchport.runtime.errors import DataError as RuntimeDataError
    from torchport.runtime.errors import TorchportError
    assert DataError is RuntimeDataError
    for cls in (DataError, SettingsError, TrainingDiverged, TrainError):
        assert issubclass(cls, TorchportError)
    assert issubclass(SettingsError, TrainError) and issubclass(TrainingDiverged, TrainError)
    e = DataError("the message", parameter="target")
    assert str(e) == e.message == "the message" and e.parameter == "target" and e.exit_code == 2
    assert TrainError("x").parameter is None and TrainingDiverged("x").exit_code == 1


def test_the_light_names_agree_with_what_implements_them():
    from torchport.train import choices, datasets, estimator, models
    assert choices.DATASET_NAMES == tuple(datasets.DATASETS) and choices.TUTORIAL_DATASET in datasets.RECIPES
    assert choices.ACTIVATION_NAMES == tuple(models.ACTIVATIONS) and choices.OPTIMIZERS == estimator.OPTIMIZERS


def test_an_mlps_plan_scales_with_the_rows():
    """Full batch for 6000 epochs up to 4096 training rows; mini-batches of 1024 for about 20,000 steps above;
    early stopping after a tenth of the epochs (at least 5) with a validation split."""
    rows = np.zeros((1, 3))
    for n, val, expected in ((4096, 0.0, (None, 6000, None)), (4097, 0.0, (1024, 4000, None)),
                             (900_000, 0.1, (1024, 23, 5)), (50_000_000, 0.1, (1024, 5, 5)),
                             (22, 0.2, (None, 6000, 600))):
        s = Regressor(model="mlp", val_fraction=val)._settings().plan(np.repeat(rows, n, axis=0))
        assert (s.batch_size, s.epochs, s.patience) == expected, n
    assert Regressor(model="mlp", optimizer="lbfgs")._settings().plan(rows).epochs == 200
    assert Regressor(model="mlp", epochs=7, batch_size=64)._settings().plan(np.repeat(rows, 10**5, 0)).epochs == 7


def test_progress_reaches_a_function_within_long_epochs():
    from torchport.train.progress import Progress
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60_000, 4))
    y = np.sin(X).sum(axis=1)
    seen = []
    reg = Regressor(model="mlp", hidden=(8,), epochs=2, device="cpu", progress=seen.append).fit(X, y)
    assert reg.batch_size_ == 1024 and seen and all(isinstance(p, Progress) for p in seen)
    assert seen[-1].epoch == 2 and seen[-1].epochs == 2 and seen[-1].loss > 0
    assert [p.epoch for p in seen] == sorted(p.epoch for p in seen)
