"""Regressor under scikit-learn's estimator contract: its own estimator checks, clone, Pipeline and
GridSearchCV from the real library (a dev dependency only: torchport.train never imports it)."""
import copy
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_regressor
from sklearn.datasets import load_diabetes
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from torchport.train import DataError, DataTypeError, NotFittedError, Regressor, SettingsError, load_dataset

# Every check passes, so none is listed as an expected failure: predictions are float64 for both models (the
# fitted module run in float64). Small settings keep the run short: the exact solution, and a small MLP.
CHECKED = [Regressor(device="cpu"), Regressor(model="mlp", hidden=(8,), lr=0.01, epochs=200, device="cpu")]


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0)


with warnings.catch_warnings():  # the Regressor keeps the contract without BaseEstimator: train never imports sklearn
    warnings.filterwarnings("ignore", "Estimator Regressor does not inherit from", UserWarning)
    CHECKS = parametrize_with_checks(CHECKED)


@CHECKS
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_not_fitted_is_sklearns_not_fitted_error_once_sklearn_is_loaded():
    with pytest.raises(SklearnNotFittedError, match="this Regressor is not fitted yet; call fit") as e:
        Regressor().predict([[1.0]])
    assert isinstance(e.value, NotFittedError) and isinstance(e.value, ValueError)
    again = pickle.loads(pickle.dumps(e.value))  # as joblib's workers send it back to GridSearchCV
    assert isinstance(again, SklearnNotFittedError) and isinstance(again, NotFittedError) and str(again) == str(e.value)
    code = "import sys; from torchport.train import Regressor, NotFittedError\n" \
           "try:\n    Regressor().coef_\nexcept NotFittedError as e:\n" \
           "    sys.exit(type(e) is not NotFittedError or 'sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # without sklearn: torchport's own class


@pytest.mark.parametrize("X, y, error, message", [
    (np.ones(3), np.ones(3), DataError, r"X must have shape \(rows, features\); got shape \(3,\)\. Reshape your "
                                        r"data: X\.reshape\(-1, 1\) if it is one feature"),
    (np.ones((3, 1)), None, DataError, "Regressor requires y to be passed, but the target y is None"),
    (np.ones((3, 1)) + 1j, np.ones(3), DataTypeError, r"Complex data not supported: X holds complex numbers"),
    (np.array([[1.0], [{"a": 1}]], dtype=object), np.ones(2), DataTypeError,
     "X must be real numbers .*argument must be a string or a real number, not 'dict'"),
    (np.ones((4, 0)), np.ones(4), DataError, r"X has 0 feature\(s\) \(shape=\(4, 0\)\) while a minimum of 1"),
    (np.ones((0, 2)), np.ones(0), DataError, r"X has 0 row\(s\) \(shape=\(0, 2\)\) while a minimum of 1"),
    (np.ones((3, 1)), np.ones((3, 0)), DataError, r"y has 0 target\(s\) \(shape=\(3, 0\)\)"),
    (np.ones((3, 1)), [1.0, np.inf, 2.0], DataError, r"y\[1, 0\] is inf, not a finite float32 number"),
])
def test_bad_training_input_is_refused_in_sklearns_words(X, y, error, message):
    with pytest.raises(error, match=message):
        Regressor(device="cpu").fit(X, y)


def test_sparse_input_is_refused_naming_the_fix():
    from scipy import sparse
    with pytest.raises(DataError, match=r"X is sparse \(csr_array\), but the Regressor needs dense data; give "
                                        r"X\.toarray\(\)") as e:
        Regressor(device="cpu").fit(sparse.csr_array(np.eye(3)), np.ones(3))
    assert e.value.parameter == "X"


def test_predictions_are_float64_from_the_float64_fit():
    """predict runs float64_module(): an exact linear fit with its float64 estimates as weights (X @ coef_.T +
    intercept_ up to float64 rounding), an iterative fit's module widened to float64."""
    d = load_dataset("plant_richness_mlr")
    for reg in (Regressor(device="cpu"), Regressor(model="mlp", hidden=(8,), epochs=50, device="cpu")):
        reg.fit(d.X, d.y)
        pred = reg.predict(d.X)
        assert pred.dtype == np.float64 and pred.shape == d.y.shape
        with torch.no_grad():
            float32 = reg.module_(torch.from_numpy(d.X.astype(np.float32))).numpy()
            float64 = reg.float64_module()(torch.from_numpy(d.X.astype(np.float64))).numpy()
            widened = copy.deepcopy(reg.module_).double()(torch.from_numpy(d.X.astype(np.float64))).numpy()
        np.testing.assert_array_equal(pred, float64)
        if reg.optimizer_ == "exact":
            np.testing.assert_allclose(pred, d.X @ reg.coef_.T + reg.intercept_, rtol=1e-12)
        else:
            np.testing.assert_array_equal(pred, widened)
        np.testing.assert_allclose(pred, float32, rtol=1e-5)  # the float32 module agrees to its rounding
        assert next(reg.module_.parameters()).dtype == torch.float32  # predict leaves the fitted module as it was
    with pytest.raises(DataError, match="X has 2 features, but Regressor is expecting 3 features as input") as e:
        reg.predict(d.X[:, :2])
    assert e.value.parameter == "X"
    assert reg.predict(d.X[:0]).shape == (0, 1)


def test_clone_gives_equal_params_and_an_unfitted_copy():
    d = load_dataset("plant_richness_lr")
    hidden = [16, 8]
    reg = Regressor(model="mlp", hidden=hidden, lr=0.01, epochs=20, device="cpu").fit(d.X, d.y)
    copy = clone(reg)  # clone checks that get_params returns the very objects the constructor was given
    assert copy is not reg and copy.get_params() == reg.get_params() and copy.get_params()["hidden"] is not hidden
    assert not hasattr(copy, "module_") and hasattr(reg, "module_")
    assert is_regressor(reg)


def test_params_rebuild_the_estimator():
    reg = Regressor(model="mlp", hidden=(4,), optimizer="lbfgs", epochs=7, checkpoint="x.pt")
    params = reg.get_params()
    assert list(params) == ["model", "hidden", "activation", "dropout", "fit_intercept", "scale", "optimizer", "lr",
                            "momentum", "epochs", "batch_size", "val_fraction", "calibration_fraction", "patience",
                            "lr_schedule", "seed",
                            "device", "progress", "checkpoint"]
    again = Regressor(**params)
    assert again.get_params() == params
    assert reg.set_params(epochs=9, lr=0.5) is reg and (reg.epochs, reg.lr) == (9, 0.5)
    assert repr(Regressor(epochs=9)) == "Regressor(epochs=9)"


def test_set_params_with_a_bad_name_raises():
    reg = Regressor()
    with pytest.raises(SettingsError, match="Regressor has no parameter 'learning_rate'; its parameters are model,") as e:
        reg.set_params(learning_rate=0.1)
    assert e.value.parameter == "learning_rate" and reg.lr is None
    reg.set_params(lr=-1)  # kept as given, refused when fit (or check_params) runs
    with pytest.raises(SettingsError, match="lr must be a positive number"):
        reg.check_params()


def test_fit_on_1d_y_predicts_1d():
    d = load_dataset("plant_richness_lr")
    one = Regressor(device="cpu", epochs=300).fit(d.X, d.y[:, 0])
    two = Regressor(device="cpu", epochs=300).fit(d.X, d.y)
    assert one.predict(d.X).shape == (22,) and two.predict(d.X).shape == (22, 1)
    np.testing.assert_array_equal(one.predict(d.X), two.predict(d.X)[:, 0])
    assert one.score(d.X, d.y[:, 0]) == two.score(d.X, d.y) and one.n_features_in_ == 1


def test_pipeline_fits_and_predicts_on_a_real_dataset(diabetes):
    X_train, X_test, y_train, y_test = diabetes
    pipe = Pipeline([("scale", StandardScaler()), ("reg", Regressor(lr=0.05, epochs=500, device="cpu"))])
    pipe.fit(X_train, y_train)
    pred = pipe.predict(X_test)
    assert pred.shape == y_test.shape and np.isfinite(pred).all()
    r2 = pipe.score(X_test, y_test)
    print(f"diabetes, Pipeline(StandardScaler, Regressor), held-out R^2 = {r2:.3f}")
    assert r2 > 0.3  # ordinary least squares gets about 0.36 on this split
    assert pipe.named_steps["reg"].n_features_in_ == 10


def test_grid_search_picks_settings_and_its_best_estimator_predicts(diabetes):
    X_train, X_test, y_train, y_test = diabetes
    pipe = Pipeline([("scale", StandardScaler()), ("reg", Regressor(epochs=150, device="cpu"))])
    grid = {"reg__optimizer": ["sgd", "adam"], "reg__lr": [1e-3, 0.05]}
    search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.isfinite(scores).all()
    assert search.best_params_ == {"reg__lr": 0.05, "reg__optimizer": "sgd"}  # 150 epochs: only this one gets far
    best = search.best_estimator_
    assert best.named_steps["reg"].optimizer_ == "sgd" and best.named_steps["reg"].lr_ == 0.05
    assert best.predict(X_test).shape == y_test.shape and best.score(X_test, y_test) > 0.3


def test_train_does_not_import_sklearn():
    code = "import sys, torchport.train, torchport.train.record, torchport.train.report; " \
           "sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
