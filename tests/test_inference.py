"""train/inference.py: the least-squares core's OLS table checked against an independent closed form to 1e-6,
and against statsmodels' OLS for a model without an intercept.

The reference below shares no code with the table's path: the coefficients come from numpy's QR
factorisation of the raw design (the table's from train/lstsq.py's refined QR of centred, scaled columns),
the covariance from the inverse of R, and the p-values and t quantiles from the regularised incomplete beta
function and a root finder (the table uses scipy.stats' t and F)."""
import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import betainc

from torchport.train import DataError, load_dataset
from torchport.train.inference import (
    Coefficient, Inference, InferenceUnavailable, TargetInference, format_inference, ols_inference,
)


def t_two_sided_p(t: float, df: int) -> float:
    return float(betainc(df / 2, 0.5, df / (df + t * t)))


def f_upper_p(f: float, d1: int, d2: int) -> float:
    return float(betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * f)))


def t_quantile(level: float, df: int) -> float:
    """The t value with two-sided tail 1 - level, by root finding on the incomplete beta function."""
    return brentq(lambda t: t_two_sided_p(t, df) - (1 - level), 0.0, 1e3, xtol=1e-14)


def closed_form(X: np.ndarray, y: np.ndarray, level: float = 0.95, df_shift: int = 0) -> dict:
    """OLS with intercept for one target, from the textbook formulas (df_shift plants a known mistake)."""
    n, p = X.shape
    A = np.column_stack([np.ones(n), X])
    Q, R = np.linalg.qr(A)
    beta = np.linalg.solve(R, Q.T @ y)
    resid = y - A @ beta
    df = n - p - 1 + df_shift
    sigma2 = resid @ resid / df
    Rinv = np.linalg.inv(R)
    se = np.sqrt(sigma2 * np.sum(Rinv * Rinv, axis=1))
    t = beta / se
    q = t_quantile(level, df)
    ss_tot = np.sum((y - y.mean()) ** 2)
    r2 = 1 - resid @ resid / ss_tot
    f = (r2 / p) / ((1 - r2) / df)
    return {"estimate": beta, "std_error": se, "t": t, "p": np.array([t_two_sided_p(v, df) for v in t]),
            "ci_low": beta - q * se, "ci_high": beta + q * se, "r2": r2, "adj_r2": 1 - (1 - r2) * (n - 1) / df,
            "f": f, "f_p": f_upper_p(f, p, df), "residual_se": math.sqrt(sigma2), "n": n, "df_resid": df}


def assert_matches(table: TargetInference, ref: dict, rtol: float = 1e-6) -> None:
    for key in Coefficient.NUMBERS:
        np.testing.assert_allclose([getattr(c, key) for c in table.coefficients], ref[key], rtol=rtol, atol=0,
                                   err_msg=key)
    for key in TargetInference.NUMBERS:
        np.testing.assert_allclose(getattr(table, key), ref[key], rtol=rtol, atol=0, err_msg=key)
    assert (table.n, table.df_resid) == (ref["n"], ref["df_resid"])


def synthetic():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 4)) * [1.0, 10.0, 0.1, 3.0] + [0.0, 100.0, 0.0, -5.0]
    y = np.column_stack([X @ [0.5, 0.02, 3.0, 0.0] + rng.normal(scale=0.8, size=60),
                         X @ [-1.0, 0.0, 0.0, 0.2] + 4 + rng.normal(scale=2.0, size=60)])
    return X, y, ["a", "b", "c", "d"], ["y1", "y2"]


@pytest.mark.parametrize("case", ["plant_richness_lr", "plant_richness_mlr", "synthetic"])
def test_the_table_matches_the_closed_form_to_1e_6(case):
    if case == "synthetic":
        X, y, features, targets = synthetic()
    else:
        d = load_dataset(case)
        X, y, features, targets = d.X, d.y, d.feature_names, d.target_names
    record = ols_inference(X, y, features, targets)
    assert record.features == tuple(features) and record.confidence == 0.95
    assert [t.target for t in record.targets] == targets
    for j, table in enumerate(record.targets):
        assert [c.term for c in table.coefficients] == ["(intercept)", *features]
        assert_matches(table, closed_form(X, y[:, j]))


def test_seed_table_is_the_published_exact_fit_and_significant():
    d = load_dataset("plant_richness_lr")
    table = ols_inference(d.X, d.y, d.feature_names, d.target_names).targets[0]
    intercept, area = table.coefficients
    assert area.estimate == pytest.approx(0.355739, abs=1e-6)       # shared/data/README.md
    assert intercept.estimate == pytest.approx(1.336048, abs=1e-6)
    assert table.r2 == pytest.approx(0.827786, abs=1e-6)
    assert area.p < 1e-8 and area.ci_low > 0 and table.f_p == pytest.approx(area.p, rel=1e-9)
    assert table.f == pytest.approx(area.t ** 2, rel=1e-12)       # one feature: F = t^2


def test_the_cross_check_catches_a_planted_mistake():
    """An off-by-one in the residual degrees of freedom, or a 90% interval, is far outside 1e-6."""
    d = load_dataset("plant_richness_lr")
    table = ols_inference(d.X, d.y, d.feature_names, d.target_names).targets[0]
    with pytest.raises(AssertionError):
        assert_matches(table, closed_form(d.X, d.y[:, 0], df_shift=1))
    with pytest.raises(AssertionError):
        assert_matches(table, closed_form(d.X, d.y[:, 0], level=0.90))
    wider = ols_inference(d.X, d.y, d.feature_names, d.target_names, confidence=0.99).targets[0]
    assert_matches(wider, closed_form(d.X, d.y[:, 0], level=0.99))


def test_record_is_strict_json_even_for_a_perfect_fit():
    X = np.arange(10, dtype=float).reshape(-1, 1)
    record = ols_inference(X, 2 * X + 1, ["x"], ["y"])
    json.dumps(record.to_json(), allow_nan=False)
    table = record.targets[0]
    assert table.coefficients[1].estimate == pytest.approx(2.0)
    assert table.r2 == pytest.approx(1.0) and table.residual_se == pytest.approx(0.0, abs=1e-12)


def test_json_has_todays_layout_and_reads_back():
    d = load_dataset("plant_richness_mlr")
    record = ols_inference(d.X, d.y, d.feature_names, d.target_names)
    obj = json.loads(json.dumps(record.to_json(), allow_nan=False))
    assert list(obj) == ["method", "library", "confidence", "fit_intercept", "features", "targets"]
    assert obj["features"] == d.feature_names and obj["library"].startswith("torchport.train.lstsq, scipy ")
    assert obj["fit_intercept"] is True and obj["method"].startswith("ordinary least squares with intercept: ")
    table = obj["targets"][0]
    assert list(table) == ["target", "n", "df_model", "df_resid", "coefficients", "r2", "adj_r2", "f", "f_p",
                           "residual_se"]
    assert list(table["coefficients"][0]) == ["term", "estimate", "std_error", "t", "p", "ci_low", "ci_high"]
    assert Inference.from_json(obj) == record
    assert format_inference(Inference.from_json(obj)) == format_inference(record)
    del obj["fit_intercept"]  # records from before it was kept had an intercept
    assert Inference.from_json(obj) == record


def test_without_an_intercept_the_table_is_statsmodels_for_a_model_without_a_constant():
    """Uncentred R^2 and adjusted R^2, n - p residual degrees of freedom, the F test against the zero model."""
    import statsmodels.api as sm
    X, y, features, targets = synthetic()
    record = ols_inference(X, y, features, targets, fit_intercept=False)
    assert record.fit_intercept is False and record.method.startswith("ordinary least squares without intercept")
    for j, table in enumerate(record.targets):
        fit = sm.OLS(y[:, j], X).fit(method="qr")
        assert [c.term for c in table.coefficients] == features
        ci = fit.conf_int(0.05)
        for key, reference in [("estimate", fit.params), ("std_error", fit.bse), ("t", fit.tvalues),
                               ("p", fit.pvalues), ("ci_low", ci[:, 0]), ("ci_high", ci[:, 1])]:
            np.testing.assert_allclose([getattr(c, key) for c in table.coefficients], reference, rtol=1e-9,
                                       err_msg=key)
        np.testing.assert_allclose([table.r2, table.adj_r2, table.f, table.f_p, table.residual_se],
                                   [fit.rsquared, fit.rsquared_adj, fit.fvalue, fit.f_pvalue, math.sqrt(fit.scale)],
                                   rtol=1e-9)
        assert (table.n, table.df_model, table.df_resid) == (60, 4, 56) == (fit.nobs, fit.df_model, fit.df_resid)
    text = format_inference(record)
    assert "y1 ~ a + b + c + d, no intercept (" in text and "uncentred R^2 " in text and "(intercept)" not in text


def test_a_missing_number_is_null_and_reads_back_as_none():
    record = ols_inference(np.arange(10.0).reshape(-1, 1), np.arange(10.0) ** 2, ["x"], ["y"])
    obj = record.to_json()
    obj["targets"][0]["f_p"] = None
    assert Inference.from_json(obj).targets[0].f_p is None
    assert "p n/a" in format_inference(Inference.from_json(obj))


@pytest.mark.parametrize("change, message", [
    (lambda o: o.pop("library"), r"inference lacks 'library'"),
    (lambda o: o.update(features="area"), r"inference\.features must be list"),
    (lambda o: o["targets"][0].update(n="22"), r"inference\.targets\[0\]\.n must be int, got '22'"),
    (lambda o: o["targets"][0]["coefficients"][1].update(t=True),
     r"inference\.targets\[0\]\.coefficients\[1\]\.t must be float"),
])
def test_bad_json_is_refused_naming_the_key(change, message):
    d = load_dataset("plant_richness_lr")
    obj = ols_inference(d.X, d.y, d.feature_names, d.target_names).to_json()
    change(obj)
    with pytest.raises(DataError, match=message):
        Inference.from_json(obj)


@pytest.mark.parametrize("X, intercept, message", [
    (np.arange(2.0).reshape(2, 1), True, "2 rows cannot give standard errors for 2 coefficients"),
    (np.column_stack([np.arange(8.0), 2 * np.arange(8.0)]), True, r"collinear \(rank 2 of 3\)"),
    (np.arange(1.0, 2.0).reshape(1, 1), False, r"1 rows cannot give standard errors for 1 coefficients \(features\)"),
    (np.column_stack([np.arange(8.0), 2 * np.arange(8.0)]), False, r"x0, x1 are collinear \(rank 1 of 2\)"),
])
def test_unsupported_data_is_explained(X, intercept, message):
    with pytest.raises(InferenceUnavailable, match=message):
        ols_inference(X, np.arange(len(X), dtype=float) ** 2, [f"x{i}" for i in range(X.shape[1])], ["y"],
                      fit_intercept=intercept)


def test_a_constant_target_is_explained():
    with pytest.raises(InferenceUnavailable, match="the target y is constant") as e:
        ols_inference(np.arange(10.0).reshape(-1, 1), np.full(10, 3.0), ["x"], ["y"])
    assert isinstance(e.value, DataError)


def test_format_shows_the_figures():
    d = load_dataset("plant_richness_lr")
    text = format_inference(ols_inference(d.X, d.y, d.feature_names, d.target_names))
    lines = text.splitlines()
    assert lines[0].startswith("least-squares inference for ntv_rich ~ area (torchport.train.lstsq, scipy ")
    assert "95% confidence interval" in lines[1]
    assert lines[3].split() == ["area", "0.355739", "0.0362821", "9.805", "4.403e-09", "[0.280056,", "0.431422]"]
    assert "on 20 degrees of freedom" in text and "F 96.1346 on 1 and 20 DF, p 4.403e-09" in text
