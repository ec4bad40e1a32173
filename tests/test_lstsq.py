"""NIST StRD's eleven linear least squares datasets (tests/data/nist) and the least-squares core
(train/lstsq.py) that reaches their certified values."""
import json

import numpy as np
import pytest

from conftest import run_cli
from nist import CERTIFIED, NAMES, digits, exact_fit_of_the_data, exact_fit_of_the_table, raw_rows, table
from torchport.train.inference import InferenceUnavailable, ols_inference
from torchport.runtime import Predictor
from torchport.train.lstsq import fit_least_squares


@pytest.mark.parametrize("name", NAMES)
def test_the_nist_files_hold_nists_data_and_certified_values(name):
    """The row counts are NIST's, and the exact rational fit of the files' data gives every certified value
    to 14 digits or more: a changed digit in the data or in a certified value would not."""
    c = CERTIFIED[name]
    assert len(raw_rows(name)) == c["rows"]
    assert len(c["terms"]) == len(c["estimate"]) == len(c["std_error"]) == len(c["features"]) + c.get("intercept", True)
    exact = exact_fit_of_the_data(name)
    for key in ("estimate", "std_error"):
        for value, certified in zip(exact[key], c[key]):
            assert digits(value, certified) >= 14, (key, value, certified)
    for key in ("residual_sd", "r_squared", "ss_regression", "ss_residual"):
        assert digits(exact[key], c[key]) >= 14, (key, exact[key], c[key])


def test_the_tables_are_float64_columns_of_the_data():
    filip = table("filip")
    assert filip.X.shape == (82, 10) and filip.X.dtype == np.float64
    assert filip.X[0, 9] == float("-6.860120914") ** 10 and filip.features[-1] == "x10"
    assert table("noint1").intercept is False and table("longley").X.shape == (16, 6)


def table_digits(fit, reference: dict) -> dict:
    """The least digits (LRE) of the fit's estimates, standard errors, residual SD and R^2 against a
    reference (NIST's certified values, or an exact fit)."""
    n, k = fit.n_rows, fit.n_params
    scale = fit.residual_ss[0] / (n - k)
    se = np.sqrt(scale * np.diag(fit.covariance))
    r2 = 1.0 - fit.residual_ss[0] / fit.total_ss[0]
    return {"estimate": min(digits(v, c) for v, c in zip(fit.params[:, 0], reference["estimate"])),
            "std_error": min(digits(v, c) for v, c in zip(se, reference["std_error"])),
            "residual_sd": digits(float(np.sqrt(scale)), reference["residual_sd"]),
            "r_squared": digits(float(r2), reference["r_squared"])}


@pytest.mark.parametrize("name", NAMES)
def test_the_core_reaches_nists_certified_values(name):
    """Every estimate and standard error, the residual SD and R^2 to 9 significant digits or more (LRE);
    Filip, read as float64 columns x^1 .. x^10, is a slightly different problem: 9 digits or more of that
    table's own exact solution, and 7 or more of NIST's values."""
    t = table(name)
    fit = fit_least_squares(t.X, t.y, fit_intercept=t.intercept)
    assert fit.full_rank and fit.n_params == len(CERTIFIED[name]["estimate"])
    if name == "filip":
        assert min(table_digits(fit, exact_fit_of_the_table(t)).values()) >= 9
        assert min(table_digits(fit, CERTIFIED[name]).values()) >= 7
    else:
        assert min(table_digits(fit, CERTIFIED[name]).values()) >= 9, table_digits(fit, CERTIFIED[name])


def test_the_lre_tells_a_near_miss():
    """The digit count this file relies on: 1 + 1e-9 has 9 digits of 1, and 1e-12 has 12 of zero."""
    assert digits(1 + 1e-9, 1.0) == pytest.approx(9.0) and digits(1e-12, 0.0) == pytest.approx(12.0)
    assert digits(2.0, 2.0) == 15.0


def unix_times(n: int = 5000):
    """Hourly-ish Unix times near 1.7e9 s (spread 3e6 s) beside a temperature with a daily cycle."""
    rng = np.random.default_rng(1)
    t = 1.7e9 + np.sort(rng.uniform(0, 3e6, n))
    temperature = 12 + 8 * np.sin(2 * np.pi * (t - 1.7e9) / 86400) + rng.normal(0, 1, n)
    y = 40 + 3e-7 * (t - 1.7e9) - 0.8 * temperature + rng.normal(0, 2, n)
    return np.column_stack([t, temperature]), y


def test_a_unix_time_feature_gets_statsmodels_qr_table_to_8_digits():
    import statsmodels.api as sm
    X, y = unix_times()
    design = sm.add_constant(X)
    assert np.linalg.matrix_rank(design) == 2  # the raw design's rank test calls the offset collinear
    table = ols_inference(X, y, ["time", "temperature"], ["y"]).targets[0]
    reference = sm.OLS(y, design).fit(method="qr")
    ci = reference.conf_int(0.05)
    for key, values in [("estimate", reference.params), ("std_error", reference.bse), ("t", reference.tvalues),
                        ("ci_low", ci[:, 0]), ("ci_high", ci[:, 1])]:
        for c, v in zip(table.coefficients, values):
            assert digits(getattr(c, key), v) >= 8, (key, c.term, getattr(c, key), v)
    for key, v in [("r2", reference.rsquared), ("adj_r2", reference.rsquared_adj), ("f", reference.fvalue),
                   ("residual_se", np.sqrt(reference.scale))]:
        assert digits(getattr(table, key), v) >= 8, key
    assert table.coefficients[1].p < 1e-10 and table.df_resid == len(y) - 3


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_a_duplicated_column_is_still_collinear(fit_intercept):
    X, y = unix_times(200)
    doubled = np.column_stack([X, X[:, 1]])
    fit = fit_least_squares(doubled, y, fit_intercept=fit_intercept)
    assert fit.rank == fit.n_params - 1 and not fit.full_rank and fit.covariance is None
    expected = f"rank {fit.rank} of {fit.n_params}"
    with pytest.raises(InferenceUnavailable, match=f"collinear \\({expected}\\): drop a redundant feature"):
        ols_inference(doubled, y, ["time", "temperature", "temperature again"], ["y"], fit_intercept=fit_intercept)
    # the estimates are still a least-squares solution: its predictions are the full-rank fit's
    full = fit_least_squares(X, y, fit_intercept=fit_intercept)
    np.testing.assert_allclose(fit.predict(doubled), full.predict(X), rtol=1e-9, atol=1e-9 * np.abs(y).max())


def test_the_rank_is_decided_by_the_datas_own_precision_not_its_offset():
    """The rank's tolerance is the data's float64 rounding on centred, scaled columns: x3 = x1 + x2 computed in
    float64 is collinear; the same columns moved by 1e9, or shrunk to 1e-3 around 5e7, are not; columns whose
    spread (1e-12 around 5e7) is below float64's resolution there hold nothing, and are not counted."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2))
    y = X @ [1.0, 2.0] + rng.normal(size=300)
    assert fit_least_squares(np.column_stack([X, X[:, 0] + X[:, 1]]), y).rank == 3
    assert fit_least_squares(X + 1e9, y).full_rank and fit_least_squares(X * 1e-3 + 5e7, y).full_rank
    assert fit_least_squares(X * 1e-12 + 5e7, y).rank == 1


def test_the_core_agrees_with_numpy_on_easy_data_for_several_targets():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 5)) * [1, 10, 100, 0.1, 1e4]
    Y = X @ rng.normal(size=(5, 3)) + 7 + rng.normal(size=(400, 3))
    fit = fit_least_squares(X, Y)
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(400), X]), Y, rcond=None)
    np.testing.assert_allclose(fit.params, coef, rtol=1e-10)
    np.testing.assert_allclose(fit.residual_ss, ((Y - fit.predict(X)) ** 2).sum(axis=0), rtol=1e-10)
    assert fit.coef.shape == (3, 5) and fit.intercept.shape == (3,) and fit.covariance.shape == (6, 6)
    none = fit_least_squares(X, Y, fit_intercept=False)
    np.testing.assert_allclose(none.coef.T, np.linalg.lstsq(X, Y, rcond=None)[0], rtol=1e-10)
    assert np.all(none.intercept == 0) and np.allclose(none.total_ss, (Y * Y).sum(axis=0))


@pytest.mark.parametrize("X", [np.full((6, 1), 2.5), np.arange(3.0).reshape(1, 3), np.zeros((4, 2))],
                         ids=["constant column", "one row", "zeros"])
def test_degenerate_designs_give_a_least_squares_solution(X):
    y = np.arange(len(X), dtype=float) + 1
    fit = fit_least_squares(X, y)
    assert not fit.full_rank and fit.covariance is None and np.all(fit.coef == 0)
    assert fit.intercept[0] == pytest.approx(y.mean())


def train_nist(name: str, folder, *extra: str) -> dict:
    """`torchport train` on the dataset as a CSV of float64 columns (powers computed in float64), with the
    quick export options; returns the manifest."""
    t = table(name)
    out = folder / name
    proc = run_cli("train", "--data", str(t.csv(folder / f"{name}.csv")), "--target", "y", "--out", str(out),
                   "--no-progress", "--no-plots", "--formats", "onnx", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "parity: PASSED" in proc.stdout
    return json.loads((out / "manifest.json").read_text())


def manifest_digits(manifest: dict, reference: dict) -> dict:
    """The least digits of the manifest's inference table against a reference, as ``table_digits``."""
    table = manifest["training"]["inference"]["targets"][0]
    return {"estimate": min(digits(c["estimate"], v) for c, v in zip(table["coefficients"], reference["estimate"])),
            "std_error": min(digits(c["std_error"], v)
                             for c, v in zip(table["coefficients"], reference["std_error"])),
            "residual_sd": digits(table["residual_se"], reference["residual_sd"]),
            "r_squared": digits(table["r2"], reference["r_squared"])}


@pytest.mark.parametrize("name", ["pontius", "wampler4", "wampler5", "filip"])
def test_torchport_train_stores_the_certified_table(name, tmp_path):
    """The inference table in the manifest, from the real command: 9 digits or more of every certified
    estimate, standard error, residual SD and R^2 (Filip: of its float64 table's exact fit, and 7 of NIST's).
    Filip's model, written in float64 because float32 cannot hold that fit, is checked in test_precision.py."""
    manifest = train_nist(name, tmp_path)
    c = CERTIFIED[name]
    stored = manifest["training"]["inference"]["targets"][0]
    assert [coef["term"] for coef in stored["coefficients"]] == c["terms"]
    if name == "filip":
        assert min(manifest_digits(manifest, exact_fit_of_the_table(table(name))).values()) >= 9
        assert min(manifest_digits(manifest, c).values()) >= 7
    else:
        assert min(manifest_digits(manifest, c).values()) >= 9, manifest_digits(manifest, c)


@pytest.mark.parametrize("name", ["noint1", "noint2"])
def test_no_intercept_gives_nists_table_a_zero_bias_and_passes_parity(name, tmp_path):
    """`--no-intercept`: the table statsmodels and NIST give a model without a constant (uncentred R^2,
    n - p degrees of freedom) to 9 digits or more, the training record says so, the exported graph has no
    bias (or a zero one) and its predictions are the certified fit's."""
    import onnx
    from onnx import numpy_helper
    manifest = train_nist(name, tmp_path, "--no-intercept")
    c = CERTIFIED[name]
    training = manifest["training"]
    assert training["settings"]["fit_intercept"] is False and training["inference"]["fit_intercept"] is False
    stored = training["inference"]["targets"][0]
    assert [coef["term"] for coef in stored["coefficients"]] == ["x"] and stored["df_resid"] == c["rows"] - 1
    assert min(manifest_digits(manifest, c).values()) >= 9, manifest_digits(manifest, c)
    assert training["exact_least_squares"]["bias"] == [0.0] and training["metrics"]["bias"] == [0.0]
    graph = onnx.load(str(tmp_path / name / "model.onnx")).graph
    biases = [numpy_helper.to_array(i) for i in graph.initializer if "bias" in i.name]
    assert all(not np.any(b) for b in biases)
    t = table(name)
    predicted = Predictor(tmp_path / name).predict(t.X)[:, 0].astype(np.float64)
    assert np.max(np.abs(predicted - c["estimate"][0] * t.X[:, 0])) <= 1e-3 * c["residual_sd"]


def test_no_intercept_is_refused_for_an_mlp(tmp_path):
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--no-intercept", "--out",
                   str(tmp_path / "b"), "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "torchport train: error: --no-intercept is for --model linear: an mlp's layers " \
                                  "keep their biases; drop --no-intercept"
    assert not (tmp_path / "b").exists()
    from torchport.train import Regressor, SettingsError
    with pytest.raises(SettingsError, match="fit_intercept=False .* is for model='linear'") as e:
        Regressor(model="mlp", fit_intercept=False).check_params()
    assert e.value.parameter == "fit_intercept"
    with pytest.raises(SettingsError, match="fit_intercept must be True or False; got 0"):
        Regressor(fit_intercept=0).check_params()


def test_an_iterative_fit_without_intercept_keeps_its_bias_at_zero():
    """SGD on standardised features without an intercept: the scaling does not centre, the bias stays zero,
    and the fit reaches the exact no-intercept optimum."""
    from torchport.train import Regressor, load_dataset
    d = load_dataset("plant_richness_mlr")
    exact = Regressor(fit_intercept=False, device="cpu").fit(d.X, d.y)
    sgd = Regressor(fit_intercept=False, optimizer="sgd", scale="on", lr=0.05, epochs=4000, device="cpu").fit(d.X, d.y)
    assert sgd.scaled_ and float(sgd.module_.core.bias) == 0.0 and not sgd.module_.core.bias.requires_grad
    assert np.all(sgd.module_.scale_in.mean.numpy() == 0) and np.all(sgd.intercept_ == 0)
    np.testing.assert_allclose(sgd.coef_, exact.coef_, rtol=1e-3)
    reference = fit_least_squares(d.X, d.y, fit_intercept=False)
    assert np.array_equal(exact.coef_, reference.coef) and np.all(exact.intercept_ == 0)
    assert exact.coef_.dtype == np.float64


def test_the_core_and_the_reduction_do_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, torchport.train.lstsq, torchport.train.tsqr, torchport.train.inference; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
