"""Real public data with `torchport train`'s defaults: the NIST StRD Longley (ill-conditioned, 6 features) and
Norris tables with their certified values (tests/data/nist), the tutorial's 3-feature table, and
scikit-learn's diabetes table (10 features, 442 rows). The linear default ends at the least-squares
optimum (within 1e-3 of the residual standard error, with the certified estimates and standard errors to
at least 9 significant digits), and every model kind passes parity on every one of them. tests/test_lstsq.py
has the other nine NIST datasets."""
import json
import math
import re

import numpy as np
import pytest

from conftest import DATA, run_cli
from torchport.export import write_from_regressor
from torchport.train import load_dataset
from torchport.runtime import Predictor
from torchport.train import Regressor
from torchport.train.metrics import least_squares_coefficients

CERTIFIED = json.loads((DATA / "nist" / "certified.json").read_text())


def digits(value: float, certified: float) -> float:
    """StRD's log relative error: how many significant digits agree."""
    return math.inf if value == certified else -math.log10(abs(value - certified) / abs(certified))


def test_the_nist_files_hold_the_published_data():
    import statsmodels.api as sm
    longley = load_dataset(str(DATA / "nist" / "longley.csv"), ["y"])
    reference = sm.datasets.longley.load_pandas().data.to_numpy()
    assert np.array_equal(np.column_stack([longley.y, longley.X]), reference)
    norris = load_dataset(str(DATA / "nist" / "norris.csv"), ["y"])
    assert norris.X.shape == (36, 1) and norris.y[0, 0] == 0.1 and norris.X[-1, 0] == 0.5


@pytest.mark.parametrize("name", ["longley", "norris", "plant_richness_mlr"])
def test_the_default_linear_fit_is_the_least_squares_optimum(name, tmp_path):
    if name == "plant_richness_mlr":
        path, target, features = DATA / "plant_richness_mlr.tsv", "ntv_rich", "area,latitude,dist_mainland"
    else:
        c = CERTIFIED[name]
        path, target, features = DATA / "nist" / c["file"], c["target"], ",".join(c["features"])
    out = tmp_path / name
    proc = run_cli("train", "--data", str(path), "--target", target, "--features", features, "--out", str(out),
                   "--no-progress", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert "exact least squares (float64 solve)" in proc.stdout and "parity: PASSED" in proc.stdout
    data = load_dataset(str(path), [target], features.split(","))
    manifest = json.loads((out / "manifest.json").read_text())
    table = manifest["training"]["inference"]["targets"][0]
    if name in CERTIFIED:
        c = CERTIFIED[name]
        exact = c["estimate"][0] + data.X @ np.array(c["estimate"][1:])
        residual_sd = c["residual_sd"]
        for i, coef in enumerate(table["coefficients"]):
            assert coef["term"] == c["terms"][i]
            assert digits(coef["estimate"], c["estimate"][i]) >= 9, coef
            assert digits(coef["std_error"], c["std_error"][i]) >= 9, coef
        assert digits(table["residual_se"], residual_sd) >= 9 and digits(table["r2"], c["r_squared"]) >= 9
    else:
        weight, bias = least_squares_coefficients(data.X, data.y)
        exact = (data.X @ weight.T + bias)[:, 0]
        residual_sd = table["residual_se"]
    predicted = Predictor(out).predict(data.X)[:, 0].astype(np.float64)
    assert np.max(np.abs(predicted - exact)) <= 1e-3 * residual_sd


def diabetes_csv(tmp_path):
    """scikit-learn's diabetes table as a user would have it: 10 raw features, 442 rows, target y."""
    from sklearn.datasets import load_diabetes
    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "y"})
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    return {"longley": (DATA / "nist" / "longley.csv", "y"), "norris": (DATA / "nist" / "norris.csv", "y"),
            "plant_richness_mlr": (DATA / "plant_richness_mlr.tsv", "ntv_rich"),
            "diabetes": (diabetes_csv(folder), "y")}


@pytest.mark.parametrize("name", ["longley", "norris", "plant_richness_mlr", "diabetes"])
@pytest.mark.parametrize("settings", [{}, pytest.param({"model": "mlp"}, marks=pytest.mark.full),
                                      {"optimizer": "lbfgs", "scale": "on"}],
                         ids=["linear", "mlp", "lbfgs"])
def test_every_model_kind_passes_parity_on_every_table(tables, tmp_path, name, settings):
    """Outputs from 0.1 (Norris) to 70,000 (Longley): float32 rounding passes the default criterion."""
    path, target = tables[name]
    data = load_dataset(str(path), [target])
    reg = Regressor(device="cpu", **settings).fit(data.X, data.y)
    manifest = write_from_regressor(reg, data, tmp_path / "b", plots=False)
    assert manifest.parity.passed, [p for p in manifest.parity.pairs if not p.passed]
    assert all(p.vs_torch is None or p.vs_torch <= manifest.parity.multiple for p in manifest.parity.pairs)
    assert Predictor(tmp_path / "b").self_check().checked


def test_held_out_figures_are_printed_and_stored_beside_the_training_ones(tmp_path):
    out = tmp_path / "mlp"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "8", "--val-fraction",
                   "0.25", "--out", str(out), "--no-progress", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "16 training rows, 6 held-out rows" in lines[0]
    assert any(line.startswith("torchport mlp 8 relu:") and line.endswith("(16 training rows)") for line in lines)
    assert any(line.startswith("  on the held-out rows:") and line.endswith("(6 held-out rows)") for line in lines)
    training = json.loads((out / "manifest.json").read_text())["training"]
    assert (training["training_rows"], training["validation_rows"]) == (16, 6)
    assert training["validation_metrics"]["r2"] is not None and training["exact_validation"]["mse"] > 0
    assert training["plan"]["patience"] == 600 and training["best_epoch"] is not None


def test_sgd_stopping_short_on_longley_says_so_and_its_advice_works(tmp_path):
    """The tutorial's SGD on Longley (standardised by default) ends at R^2 0.988 against 0.9955: the summary
    says so in the command's terms (nothing on stderr but the summary's), and the flags it suggests reach the
    optimum."""
    c = CERTIFIED["longley"]
    common = ["--data", str(DATA / "nist" / c["file"]), "--target", c["target"], "--no-progress", "--no-plots"]
    proc = run_cli("train", *common, "--optimizer", "sgd", "--out", str(tmp_path / "short"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no Python warning text: the summary says it
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("warning: "))
    assert "it stopped short of the optimum; use --optimizer exact (the exact least-squares solution), or --lr " \
           in warning
    suggested = re.search(r"or (--lr \S+ --epochs \d+) \(SGD on standardised features", warning).group(1).split()
    fixed = run_cli("train", *common, "--optimizer", "sgd", *suggested, "--out", str(tmp_path / "fixed"))
    assert fixed.returncode == 0, fixed.stderr
    assert not any(line.startswith("warning: ") for line in fixed.stdout.splitlines())
    r2 = json.loads((tmp_path / "fixed" / "manifest.json").read_text())["training"]["metrics"]["r2"]
    assert r2 == pytest.approx(c["r_squared"], abs=1e-6)
