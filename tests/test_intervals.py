"""Prediction intervals and domain flags (runtime/intervals.py, Predictor.predict_interval, `torchport predict
--interval`): a linear model's t intervals equal statsmodels' OLS get_prediction(...).summary_frame (both
kinds, two levels) on plant_richness_mlr, centred on the exact fit's float64 estimates the bundle keeps, and,
in width, on the seed's SGD fit, centred on its own answer (as are a bundle's without the estimates); the t
quantile computed without scipy equals scipy's; split-conformal intervals of an MLP cover at least their
level on held-out rows of scikit-learn's diabetes data (8 random splits, beside a fixed-width interval of the
training residuals' quantile); rows 10x beyond the training range are flagged and training rows are not;
older bundles load and say how to get intervals."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn.datasets import load_diabetes

from conftest import DATA, run_cli
from torchport.runtime import Predictor
from torchport.runtime.errors import BundleError, DataError, InputError
from torchport.runtime.intervals import ConformalIntervals, IntervalRecord, t_quantile
from torchport.train.datasets import Dataset, load_dataset
from torchport.train.estimator import Regressor
from torchport.export.bundle_writer import write_from_regressor

LEVELS = (0.95, 0.8)
KINDS = {"prediction": ("obs_ci_lower", "obs_ci_upper"), "mean": ("mean_ci_lower", "mean_ci_upper")}


@pytest.fixture(scope="module")
def mlr_linear(tmp_path_factory):
    """The exact linear fit of plant_richness_mlr, bundled by `torchport train`, and its data."""
    out = tmp_path_factory.mktemp("intervals") / "mlr-linear"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--no-plots", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, load_dataset("plant_richness_mlr")


def _new_rows(X: np.ndarray, n: int = 12) -> np.ndarray:
    """Training rows and random rows about them (float32-exact, as the model reads them)."""
    rng = np.random.default_rng(7)
    extra = X.mean(0) + rng.normal(size=(n, X.shape[1])) * X.std(0)
    return np.vstack([X, extra]).astype(np.float32).astype(np.float64)


def test_t_quantile_equals_scipy():
    worst = max(abs(t_quantile(p, df) - stats.t.ppf(p, df)) / stats.t.ppf(p, df)
                for p in (0.6, 0.9, 0.95, 0.975, 0.995, 0.9995) for df in (1, 2, 3, 7, 19, 20, 100, 5000))
    assert worst < 1e-10  # lgamma of large df cancels some digits; widths need 1e-6


def _off_statsmodels(p: Predictor, data: Dataset, X: np.ndarray, level: float, kind: str) -> tuple[float, float]:
    """The largest |bound - statsmodels' bound| / statsmodels' width over the rows ``X``, and the same for the
    width alone, of ``p``'s intervals against OLS of ``data``."""
    frame = sm.OLS(data.y.ravel(), sm.add_constant(data.X)).fit().get_prediction(
        sm.add_constant(X, has_constant="add")).summary_frame(alpha=1 - level)
    low, high = (frame[c].to_numpy() for c in KINDS[kind])
    r = p.predict_interval(X, level=level, kind=kind)
    width = high - low
    bounds = max(np.max(np.abs(r.lower.ravel() - low) / width), np.max(np.abs(r.upper.ravel() - high) / width))
    return float(bounds), float(np.max(np.abs((r.upper - r.lower).ravel() - width) / width))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_linear_intervals_equal_statsmodels(mlr_linear, level, kind):
    """The exact fit's bounds equal statsmodels' to 1e-6 of the width: centred on the float64 fit the bundle
    keeps, not on its float32 answer (which would add the parity error, about 2e-6 of a mean interval's width)."""
    path, data = mlr_linear
    p = Predictor(path)
    X = _new_rows(data.X)
    bounds, widths = _off_statsmodels(p, data, X, level, kind)
    print(f"\nplant_richness_mlr, exact fit, {level:.0%} {kind}: max |bound - statsmodels'| / width {bounds:.2e}, "
          f"max |width - statsmodels'| / width {widths:.2e}")
    assert bounds < 1e-6 and widths < 1e-6
    # prediction is the bundle's answer, as predict gives it; the interval's centre is the exact fit's own
    r = p.predict_interval(X, level=level, kind=kind)
    np.testing.assert_array_equal(r.prediction, p.predict(X))
    exact = sm.OLS(data.y.ravel(), sm.add_constant(data.X)).fit().predict(sm.add_constant(X, has_constant="add"))
    assert np.max(np.abs((r.upper + r.lower).ravel() / 2 - exact)) < 1e-6 * np.max(np.abs(r.upper - r.lower))
    assert np.max(np.abs(r.prediction.ravel() - exact)) <= p.manifest.golden.bound[0]


def test_a_bundle_without_the_exact_estimates_is_centred_on_its_answer(mlr_linear, tmp_path):
    """A bundle written before the exact fit's estimates were kept (its record without coef and intercept)
    loads and gives the same widths, centred on its own float32 answer."""
    path, data = mlr_linear
    shutil.copytree(path, tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    linear = manifest["intervals"]["linear"]
    assert len(linear["coef"]) == 1 and len(linear["intercept"]) == 1
    del linear["coef"], linear["intercept"]
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    old, new = Predictor(tmp_path / "old"), Predictor(path)
    assert old.manifest.intervals.linear.coef is None
    X = _new_rows(data.X)
    r, exact = old.predict_interval(X, 0.9), new.predict_interval(X, 0.9)
    np.testing.assert_allclose((r.upper + r.lower) / 2, old.predict(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.upper - r.lower, exact.upper - exact.lower, rtol=1e-12)
    assert np.max(np.abs((r.upper + r.lower) / 2 - (exact.upper + exact.lower) / 2)) > 0  # float32 against float64


def test_a_record_with_half_the_exact_estimates_is_refused(mlr_linear):
    """coef without intercept (or estimates of the wrong shape) is a damaged manifest, refused naming the field."""
    record = json.loads((mlr_linear[0] / "manifest.json").read_text())["intervals"]
    IntervalRecord.from_json(record, "intervals", features=3, targets=1)
    alone = {**record, "linear": {k: v for k, v in record["linear"].items() if k != "intercept"}}
    with pytest.raises(DataError, match="intervals.linear must hold both 'coef' and 'intercept'"):
        IntervalRecord.from_json(alone, "intervals", features=3, targets=1)
    short = {**record, "linear": {**record["linear"], "coef": [record["linear"]["coef"][0][:2]]}}
    with pytest.raises(DataError, match=r"intervals.linear.coef must be 1 x 3"):
        IntervalRecord.from_json(short, "intervals", features=3, targets=1)
    mean = {**record, "linear": {**record["linear"], "mean": record["linear"]["mean"][:1]}}
    with pytest.raises(DataError, match=r"intervals.linear must hold a mean of 3 values"):
        IntervalRecord.from_json(mean, "intervals", features=3, targets=1)


def test_seed_sgd_fit_has_the_exact_fits_widths_about_its_own_prediction(seed_bundle):
    """The tutorial's SGD fit is not the exact one: its bundle keeps no estimates, and its intervals have
    statsmodels' widths (to 1e-6 of them) about its own answer."""
    data = load_dataset("plant_richness_lr")
    p = Predictor(seed_bundle)
    assert p.manifest.intervals.linear.coef is None
    assert "coef" not in json.loads((seed_bundle / "manifest.json").read_text())["intervals"]["linear"]
    X = _new_rows(data.X)
    res = sm.OLS(data.y.ravel(), sm.add_constant(data.X)).fit()
    for level in LEVELS:
        frame = res.get_prediction(sm.add_constant(X, has_constant="add")).summary_frame(alpha=1 - level)
        for kind, (lo, hi) in KINDS.items():
            r = p.predict_interval(X, level, kind)
            width = (frame[hi] - frame[lo]).to_numpy()
            off = np.max(np.abs((r.upper - r.lower).ravel() - width) / width)
            print(f"\nseed (SGD), {level:.0%} {kind}: max |width - statsmodels'| / width {off:.2e}")
            assert off < 1e-6
            np.testing.assert_allclose((r.upper + r.lower).ravel() / 2, p.predict(X).ravel(), rtol=0, atol=1e-12)
    # SGD's line is not the exact one: the centres differ from statsmodels' by more than rounding
    assert np.max(np.abs(p.predict(X).ravel() - res.predict(sm.add_constant(X, has_constant="add")))) > 1e-4


def test_domain_flags(mlr_linear):
    path, data = mlr_linear
    p = Predictor(path)
    inside = p.predict_interval(data.X)
    assert not np.any(inside.out_of_domain) and set(inside.reasons) == {""}
    far = data.X.max(axis=0) * 10
    r = p.predict_interval(np.vstack([far, data.X[0]]))
    assert list(r.out_of_domain) == [True, False]
    assert "above the training range" in r.reasons[0] and "leverage" in r.reasons[0] and r.reasons[1] == ""
    # within every feature's range but unlike any training row: flagged by leverage alone
    lo, hi = data.X.min(axis=0), data.X.max(axis=0)
    corners = np.array(np.meshgrid(*zip(lo, hi))).reshape(len(lo), -1).T
    lev = p.predict_interval(corners)
    assert lev.out_of_domain.any()
    assert all(reason.startswith("leverage") for reason, flag in zip(lev.reasons, lev.out_of_domain) if flag)


def test_dataframe_and_list_answers(mlr_linear):
    path, data = mlr_linear
    p = Predictor(path)
    frame = pd.DataFrame(data.X[:3][:, ::-1], columns=data.feature_names[::-1], index=[5, 6, 7])
    r = p.predict_interval(frame, 0.9)
    assert list(r.prediction.columns) == ["ntv_rich"] and list(r.lower.columns) == ["ntv_rich_lower"]
    assert list(r.upper.columns) == ["ntv_rich_upper"] and list(r.out_of_domain.index) == [5, 6, 7]
    table = r.to_frame()
    assert list(table.columns) == ["ntv_rich", "ntv_rich_lower", "ntv_rich_upper", "out_of_domain",
                                   "out_of_domain_reason"]
    as_array = p.predict_interval(data.X[:3], 0.9)
    np.testing.assert_array_equal(table["ntv_rich_lower"].to_numpy(), as_array.lower.ravel())
    listed = p.predict_interval(data.X[:3].tolist(), 0.9)
    assert listed.out_of_domain == [False] * 3 and len(listed.lower) == 3
    np.testing.assert_array_equal(listed.to_frame()["ntv_rich_lower"].to_numpy(), as_array.lower.ravel())
    none = p.predict_interval([])
    assert none.prediction == [] and none.out_of_domain == [] and len(none.to_frame()) == 0
    empty = p.predict_interval(np.empty((0, 3)))
    assert empty.lower.shape == (0, 1) and empty.prediction.dtype == p.dtype


def test_a_nan_row_run_with_allow_nonfinite_is_flagged(mlr_linear):
    path, data = mlr_linear
    rows = np.vstack([data.X[:1], data.X[:1]])
    rows[1, 1] = np.nan
    r = Predictor(path, allow_nonfinite=True).predict_interval(rows)
    assert list(r.out_of_domain) == [False, True]
    assert r.reasons[1] == f"{data.feature_names[1]} is nan, not a finite number"


def test_bad_arguments_say_what_to_give(seed_bundle, mlr_mlp_bundle):
    p = Predictor(seed_bundle)
    for bad in (0, 1, 1.5, "0.9", True):
        with pytest.raises(InputError, match="level must be a number strictly between 0 and 1"):
            p.predict_interval([[1.0]], bad)
    with pytest.raises(InputError, match="kind must be 'prediction' or 'mean'"):
        p.predict_interval([[1.0]], 0.9, "median")
    with pytest.raises(BundleError, match="keeps nothing to make intervals from.*--val-fraction"):
        Predictor(mlr_mlp_bundle).predict_interval([[1.0, 40.0, 3.0]])


def test_older_bundles_load_and_name_the_fix(tmp_path):
    shutil.copytree(DATA / "v1" / "seed", tmp_path / "seed")
    p = Predictor(tmp_path / "seed")
    assert p.manifest.intervals is None and len(p.predict([[3.0]])) == 1
    with pytest.raises(BundleError, match="retrain the model"):
        p.predict_interval([[3.0]])


def test_conformal_quantile_is_the_finite_sample_one():
    scores = ConformalIntervals("test", (tuple(float(v) for v in range(1, 20)),))  # n = 19
    assert scores.half_width(0.9)[0] == 18.0   # ceil(20 * 0.9) = 18th smallest
    assert scores.half_width(0.5)[0] == 10.0   # ceil(20 * 0.5) = 10th
    assert scores.half_width(0.95)[0] == 19.0  # ceil(19) = 19th, the largest
    with pytest.raises(InputError, match="needs at least 24 calibration rows.*kept 19.*level=0.95"):
        scores.half_width(0.96)


def test_predict_interval_columns(seed_bundle, tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("area,name\n0.5,a\n3,b\n40,c\n")
    proc = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(dst), "--interval", "0.9")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(dst.open()))
    assert list(rows[0]) == ["area", "name", "ntv_rich_pred", "ntv_rich_lower", "ntv_rich_upper", "out_of_domain"]
    r = Predictor(seed_bundle).predict_interval(np.array([[0.5], [3.0], [40.0]]), 0.9)
    np.testing.assert_allclose([float(x["ntv_rich_lower"]) for x in rows], r.lower.ravel(), rtol=1e-6)
    np.testing.assert_allclose([float(x["ntv_rich_upper"]) for x in rows], r.upper.ravel(), rtol=1e-6)
    assert [x["out_of_domain"] for x in rows] == ["0", "0", "1"]
    bad = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(tmp_path / "bad.csv"), "--interval", "2")
    assert bad.returncode == 2 and "(--interval)" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.csv").exists()


def test_manifest_keeps_intervals_in_float64(seed_bundle):
    record = json.loads((seed_bundle / "manifest.json").read_text())["intervals"]
    assert record["method"] == "t" and record["linear"]["df_resid"] == 20
    data = load_dataset("plant_richness_lr")
    D = sm.add_constant(data.X)
    W = np.array(record["linear"]["whitening"])
    Xc = data.X - data.X.mean(axis=0)
    np.testing.assert_allclose(W @ W.T, np.linalg.inv(Xc.T @ Xc), rtol=1e-9)
    res = sm.OLS(data.y.ravel(), D).fit()
    assert record["linear"]["residual_variance"][0] == pytest.approx(res.scale, rel=1e-12)


DIABETES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def _diabetes_split(seed: int):
    X, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    test, fit = order[:110], order[110:]
    return X[fit], y[fit].reshape(-1, 1), X[test], y[test].reshape(-1, 1)


def _mlp(seed: int, epochs: int = 400, **settings) -> Regressor:
    return Regressor(model="mlp", hidden=(16,), epochs=epochs, seed=seed, **settings)


@pytest.mark.full
def test_mlp_conformal_intervals_cover_held_out_diabetes_rows(tmp_path):
    """8 random splits of diabetes: 110 test rows, the other 332 to train with 25% held out for calibration
    (the validation split); 90% conformal intervals must cover 0.87-0.95 of the test rows on average. Beside
    them, the fixed-width interval of the training residuals' 90% quantile (no held-out rows)."""
    covered, widths, naive_covered, naive_widths = [], [], [], []
    for seed in range(8):
        X, y, Xt, yt = _diabetes_split(seed)
        reg = _mlp(seed, val_fraction=0.25).fit(X, y)
        out = tmp_path / f"split{seed}"
        write_from_regressor(reg, Dataset("diabetes", "sklearn", X, y, DIABETES, ["progression"]), out, plots=False)
        r = Predictor(out).predict_interval(Xt, 0.9)
        covered.append(np.mean((yt >= r.lower) & (yt <= r.upper)))
        widths.append(np.mean(r.upper - r.lower))
        train_rows = reg.train_rows_
        q = np.quantile(np.abs(y[train_rows] - reg.predict(X[train_rows])), 0.9)
        naive_covered.append(np.mean(np.abs(yt - reg.predict(Xt)) <= q))
        naive_widths.append(2 * q)
    print(f"\ndiabetes, 8 splits, 90% intervals: conformal coverage {np.mean(covered):.3f} (per split "
          f"{', '.join(f'{c:.2f}' for c in covered)}), mean width {np.mean(widths):.1f}; training-residual "
          f"quantile coverage {np.mean(naive_covered):.3f}, width {np.mean(naive_widths):.1f}")
    assert 0.87 <= np.mean(covered) <= 0.95


def test_mlp_calibration_split_of_its_own(tmp_path):
    X, y, Xt, yt = _diabetes_split(0)
    reg = _mlp(0, epochs=60, val_fraction=0.2, calibration_fraction=0.2).fit(X, y)
    cal, val, train = reg.calibration_rows_, reg.val_rows_, reg.train_rows_
    assert len(cal) == round(0.2 * len(X)) and not set(cal) & set(val) and not set(cal) & set(train)
    write_from_regressor(reg, Dataset("diabetes", "sklearn", X, y, DIABETES, ["progression"]), tmp_path / "b",
                         plots=False)
    p = Predictor(tmp_path / "b")
    conformal = p.manifest.intervals.conformal
    assert conformal.source.startswith("calibration split") and p.manifest.intervals.coverage is not None
    expected = np.sort(np.abs(y[cal] - reg.predict(X[cal])).ravel())
    np.testing.assert_allclose(conformal.scores[0], expected)
    with pytest.raises(InputError, match="for linear models only"):
        p.predict_interval(Xt, 0.9, "mean")
    far = p.predict_interval(np.vstack([X.max(axis=0) * 10, X[0]]))
    assert list(far.out_of_domain) == [True, False] and "above the training range" in far.reasons[0]


def test_report_gives_coverage_on_held_out_rows(tmp_path):
    """A linear fit with held-out rows: the manifest's coverage is that of the bundle's own 90% intervals on
    those rows (recomputed here through the Predictor), and the report page shows it tied to the manifest."""
    out = tmp_path / "mlr"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--val-fraction", "0.3", "--no-progress", "--out",
                   str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    coverage = manifest["intervals"]["coverage"]
    assert (f"intervals: exact t intervals of the least-squares fit (predict_interval, predict --interval); 90% "
            f"intervals covered {coverage['covered'][0]:.3f} of {coverage['rows']} validation rows") in proc.stdout
    data = load_dataset("plant_richness_mlr")
    held = np.sort(np.random.default_rng(0).permutation(len(data.X))[:coverage["rows"]])  # the seeded split
    assert coverage["rows"] == manifest["training"]["validation_rows"]
    r = Predictor(out).predict_interval(data.X[held], coverage["level"])
    inside = (data.y[held] >= r.lower) & (data.y[held] <= r.upper)
    assert coverage["covered"][0] == pytest.approx(inside.mean(), abs=1e-12)
    page = (out / "report" / "index.html").read_text()
    assert "Prediction intervals" in page and "validation rows, not used by the fit" in page
    assert "centred on the exact fit&#39;s float64 answer" in page
    key = '[&#34;intervals&#34;, &#34;coverage&#34;, &#34;covered&#34;, 0]'
    assert key in page


def test_a_streamed_fit_keeps_the_same_intervals(tmp_path):
    """A linear fit read in chunks (train/streaming.py) keeps the in-memory fit's intervals: the whitening factor and
    residual variance from the reduction, the largest leverage from the second pass."""
    from torchport.train.calibration import interval_record
    from torchport.train.streaming import fit_streamed
    data = load_dataset("plant_richness_mlr")
    path = tmp_path / "mlr.csv"
    pd.DataFrame(np.column_stack([data.y, data.X]), columns=data.target_names + data.feature_names).to_csv(
        path, index=False)
    streamed = fit_streamed(Regressor(), path, ["ntv_rich"], chunk_rows=4).intervals
    whole = interval_record(Regressor().fit(data.X, data.y), data)
    W, V = np.array(streamed.linear.whitening), np.array(whole.linear.whitening)  # unique up to R's row signs
    np.testing.assert_allclose(W @ W.T, V @ V.T, rtol=1e-9)
    np.testing.assert_allclose(streamed.linear.residual_variance, whole.linear.residual_variance, rtol=1e-9)
    np.testing.assert_allclose(streamed.linear.mean, whole.linear.mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.linear.coef, whole.linear.coef, rtol=1e-9)  # both solved exactly
    np.testing.assert_allclose(streamed.linear.intercept, whole.linear.intercept, rtol=1e-9)
    assert streamed.domain.max_leverage == pytest.approx(whole.domain.max_leverage, rel=1e-9)
    assert (streamed.domain.low, streamed.domain.high) == (whole.domain.low, whole.domain.high)
