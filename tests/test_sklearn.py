"""Regressor under scikit-learn's estimator contract: clone, Pipeline and GridSearchCV from the real library
(a dev dependency only: torchport.train never imports it)."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone, is_regressor
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from torchport.train import Regressor, SettingsError, load_dataset


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0)


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
    assert list(params) == ["model", "hidden", "activation", "dropout", "scale", "optimizer", "lr", "momentum",
                            "epochs", "batch_size", "val_fraction", "patience", "lr_schedule", "seed", "device",
                            "progress", "checkpoint"]
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
