"""The bundle's report: the inference table printed by `torchport train` and stored in the manifest and
report/inference.txt, and the PNG plots (real matplotlib files, checked by their pixels)."""
import json
import re
import shutil
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import run_cli
from test_inference import assert_matches, closed_form
from torchport.runtime.bundle import sha256_file
from torchport.train import DataError, Regressor, exact_least_squares, load_dataset, r2_score
from torchport.train.datasets import Dataset
from torchport.train.inference import Inference, TargetInference, format_inference, ols_inference
from torchport.train.plots import write_plots
from torchport.train.record import TrainingRecord
from torchport.train.report import INFERENCE_FILE, REPORT_DIR, write_report

TAB_RED, TAB_BLUE, TAB_ORANGE = (214, 39, 40), (31, 119, 180), (255, 127, 14)
MARKER_PIXELS = 25  # solid core of one data point (s=28 at 120 dpi); 22 islands draw well over 22 times that


def on_white(rgb, alpha=0.8):
    """The colour of a marker drawn with ``alpha`` on the white background."""
    return tuple(alpha * c + (1 - alpha) * 255 for c in rgb)


def pixels_like(path, rgb, tol=12) -> int:
    """How many pixels of the PNG are within ``tol`` (0-255 per channel) of the colour ``rgb``."""
    img = imread(path)[..., :3] * 255
    return int(np.all(np.abs(img - np.array(rgb)) <= tol, axis=-1).sum())


def test_train_prints_the_statsmodels_table(trained_seed_bundle):
    out = (trained_seed_bundle.parent / "train_stdout.txt").read_text()
    d = load_dataset("plant_richness_lr")
    record = ols_inference(d.X, d.y, d.feature_names, d.target_names)
    assert format_inference(record) in out
    row = re.search(r"^area\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+\[(\S+), (\S+)\]$", out, re.M)
    area = record.targets[0].coefficients[1]
    printed = [float(v) for v in row.groups()]
    np.testing.assert_allclose(printed, [getattr(area, k) for k in ("estimate", "std_error", "t", "p", "ci_low",
                                                                    "ci_high")], rtol=1e-3)


def test_manifest_inference_matches_the_closed_form(seed_bundle):
    m = json.loads((seed_bundle / "manifest.json").read_text())
    d = load_dataset("plant_richness_lr")
    stored = m["training"]["inference"]
    assert stored == json.loads(json.dumps(ols_inference(d.X, d.y, d.feature_names, d.target_names).to_json()))
    assert_matches(TargetInference.from_json(stored["targets"][0], "targets[0]"), closed_form(d.X, d.y[:, 0]))
    text = (seed_bundle / "report" / "inference.txt").read_text()
    assert text == format_inference(Inference.from_json(stored)) + "\n"


def test_report_files_are_listed_with_their_sha256(trained_seed_bundle):
    m = json.loads((trained_seed_bundle / "manifest.json").read_text())
    report = sorted(p.relative_to(trained_seed_bundle).as_posix() for p in (trained_seed_bundle / "report").iterdir())
    assert report == ["report/index.html", "report/inference.txt", "report/loss.png", "report/regression.png",
                      "report/residuals.png"]
    for name in report:
        assert m["files"][name]["sha256"] == sha256_file(trained_seed_bundle / name)
    out = (trained_seed_bundle.parent / "train_stdout.txt").read_text()
    assert "report/: index.html, inference.txt, loss.png, regression.png, residuals.png)" in out


def test_seed_plots_show_what_they_claim(trained_seed_bundle):
    folder = trained_seed_bundle / "report"
    for name in ("regression.png", "loss.png", "residuals.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(folder / name).shape == (576, 768, 4)
    # regression: 22 blue data points and a red fitted line (about 600 px long, 2 px wide) across the data,
    # inside the pale red band of the 90% prediction interval (points inside it are drawn over the band)
    band = on_white(TAB_RED, 0.15)
    assert pixels_like(folder / "regression.png", TAB_RED) > 1000
    assert pixels_like(folder / "regression.png", band) > 50_000
    points = on_white(TAB_BLUE), tuple(0.8 * c + 0.2 * b for c, b in zip(TAB_BLUE, band))
    assert sum(pixels_like(folder / "regression.png", colour) for colour in points) > 22 * MARKER_PIXELS
    assert pixels_like(folder / "residuals.png", on_white(TAB_BLUE)) > 22 * MARKER_PIXELS
    assert pixels_like(folder / "loss.png", TAB_BLUE) > 600


def test_plots_for_several_features_and_targets(tmp_path):
    d = load_dataset("plant_richness_mlr")
    y = np.column_stack([d.y[:, 0], d.y[:, 0] * 2 - 1])
    reg = Regressor(device="cpu", lr=1e-5, epochs=200).fit(d.X, y)
    paths = write_plots(tmp_path, d.X, y, reg.predict, reg.loss_history_, d.feature_names, ["a", "b"])
    assert [p.name for p in paths] == ["predicted_vs_observed.png", "loss.png", "residuals.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "predicted_vs_observed.png", "residuals.png"]
    for name in ("predicted_vs_observed.png", "residuals.png"):
        assert pixels_like(tmp_path / name, on_white(TAB_BLUE)) > 22 * MARKER_PIXELS
        assert pixels_like(tmp_path / name, on_white(TAB_ORANGE)) > 22 * MARKER_PIXELS


def test_no_plots_keeps_the_table_only(tmp_path):
    out = tmp_path / "b"
    proc = run_cli("train", "--out", str(out), "--epochs", "5", "--no-progress", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "report").iterdir()) == ["index.html", "inference.txt"]
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert not [name for name in files if name.endswith(".png")]
    assert "least-squares inference for ntv_rich ~ area" in proc.stdout


def test_reexport_carries_the_report_and_refuses_a_tampered_one(trained_seed_bundle, tmp_path):
    proc = run_cli("export", str(trained_seed_bundle), "--out", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    for p in (trained_seed_bundle / "report").iterdir():
        if p.name != "index.html":  # the new bundle's page is its own: new parity results and hashes
            assert sha256_file(tmp_path / "again" / "report" / p.name) == sha256_file(p)
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["files"]["report/index.html"]["sha256"] == sha256_file(tmp_path / "again" / "report" / "index.html")
    shutil.copytree(trained_seed_bundle, tmp_path / "bad")
    (tmp_path / "bad" / "report" / "loss.png").write_bytes(b"not the plot")
    proc = run_cli("export", str(tmp_path / "bad"), "--out", str(tmp_path / "worse"))
    assert proc.returncode == 2 and "report/loss.png does not match the manifest" in proc.stderr
    assert not (tmp_path / "worse").exists()


@pytest.mark.parametrize("blocked", ["scipy", "matplotlib"])
def test_missing_report_library_is_named_before_training(monkeypatch, capsys, tmp_path, blocked):
    from torchport.runtime.cli import main
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import <blocked>` fail as if not installed
    assert main(["train", "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"needs {blocked} from the 'train' extra" in err and "pip install 'torchport[train]'" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_no_plots_does_not_need_matplotlib(monkeypatch):
    from torchport.export.cli_train import check_report_modules
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    check_report_modules(plots=False)
    with pytest.raises(Exception, match="needs matplotlib"):
        check_report_modules(plots=True)


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as a strict parser (Node's JSON.parse) does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def seed_fit():
    d = load_dataset("plant_richness_lr")
    return Regressor(device="cpu", optimizer="sgd").fit(d.X, d.y), d


def test_training_record_of_the_tutorials_run(seed_fit):
    reg, d = seed_fit
    record = TrainingRecord.from_fit(reg, d)
    assert record.dataset.fingerprint_sha256 == d.fingerprint and record.dataset.rows == 22
    assert record.dataset.features == ("area",) and record.dataset.targets == ("ntv_rich",)
    assert (record.optimizer, record.lr, record.device, record.epochs_run) == ("sgd", 0.002, "cpu", 6000)
    assert record.best_epoch is None and record.val_loss is None and record.final_loss == reg.final_loss_
    assert record.settings["epochs"] is None and record.settings["hidden"] == [32, 32]
    assert record.plan["epochs"] == 6000 and record.plan["scaled"] is False and record.plan["batch_size"] is None
    assert (record.training_rows, record.validation_rows, record.validation_metrics) == (22, 0, None)
    assert "checkpoint" not in record.settings and "progress" not in record.settings
    assert Regressor(**record.settings).get_params()["lr"] is None  # the settings rebuild the estimator
    assert round(record.metrics.weight[0][0], 5) == 0.35761 and round(record.metrics.bias[0], 5) == 1.33058
    assert record.metrics.r2 == pytest.approx(0.82776, abs=1e-5) and record.metrics.undefined == {}
    assert record.exact_least_squares.weight[0][0] == pytest.approx(0.355739, abs=1e-6)
    assert record.inference == ols_inference(d.X, d.y, d.feature_names, d.target_names)
    assert record.inference_unavailable is None
    np.testing.assert_allclose(record.feature_stats.mean, d.X.mean(axis=0))
    np.testing.assert_allclose(record.feature_stats.max, d.X.max(axis=0))


def test_training_record_json_layout_and_round_trip(seed_fit):
    record = TrainingRecord.from_fit(*seed_fit)
    obj = strict_loads(json.dumps(record.to_json()))
    assert list(obj) == ["dataset", "settings", "optimizer", "lr", "device", "epochs_run", "best_epoch", "final_loss",
                         "val_loss", "plan", "training_rows", "validation_rows", "metrics", "validation_metrics",
                         "exact_least_squares", "exact_validation", "inference", "inference_unavailable",
                         "feature_stats", "warnings", "fit_seconds"]
    assert list(obj["dataset"]) == ["name", "source", "rows", "features", "targets", "fingerprint_sha256"]
    assert list(obj["metrics"]) == ["mse", "r2", "weight", "bias", "undefined"]
    assert list(obj["exact_least_squares"]) == ["weight", "bias", "mse", "r2", "undefined"]
    assert list(obj["feature_stats"]) == ["mean", "std", "min", "max"]
    assert obj["metrics"]["weight"] == [[record.metrics.weight[0][0]]] and obj["best_epoch"] is None
    assert obj["fit_seconds"] == seed_fit[0].fit_seconds_ > 0
    assert TrainingRecord.from_json(obj) == record
    del obj["fit_seconds"]  # records written before it was kept still read
    assert TrainingRecord.from_json(obj).fit_seconds is None


def test_training_record_of_a_constant_target_is_strict_json():
    X = np.arange(12.0).reshape(-1, 1)
    d = Dataset("flat", "test data", X, np.full((12, 1), 3.0), ["x"], ["y"])
    reg = Regressor(device="cpu", epochs=50, lr=0.01).fit(d.X, d.y)
    record = TrainingRecord.from_fit(reg, d)
    obj = strict_loads(json.dumps(record.to_json(), allow_nan=False))
    assert obj["metrics"]["r2"] is None and obj["exact_least_squares"]["r2"] is None
    assert obj["metrics"]["undefined"] == {"r2": "the target is constant, so R^2 is undefined"}
    assert obj["exact_least_squares"]["mse"] == pytest.approx(0.0, abs=1e-20)
    assert obj["inference"] is None and "the target y is constant" in obj["inference_unavailable"]
    assert TrainingRecord.from_json(obj) == record


def test_training_record_of_an_mlp_with_early_stopping():
    d = load_dataset("plant_richness_mlr")
    reg = Regressor(model="mlp", hidden=(8,), epochs=400, lr=0.01, val_fraction=0.25, patience=20,
                    device="cpu").fit(d.X, d.y)
    record = TrainingRecord.from_fit(reg, d)
    assert record.metrics.weight is None and record.metrics.bias is None and record.metrics.undefined == {}
    assert record.inference is None and record.inference_unavailable is None
    assert record.best_epoch == reg.best_epoch_ and record.val_loss == reg.val_loss_history_[-1]
    assert record.settings["hidden"] == [8] and record.optimizer == "adam"
    assert TrainingRecord.from_json(strict_loads(json.dumps(record.to_json()))) == record
    # every figure says which rows it used: the fit's and the exact fit's on the 16 training rows, and on the
    # 6 held out
    tr, va = reg.train_rows_, reg.val_rows_
    assert (record.training_rows, record.validation_rows) == (len(tr), len(va)) == (16, 6)
    assert sorted([*tr, *va]) == list(range(22))
    assert record.metrics.r2 == pytest.approx(r2_score(d.y[tr], reg.predict(d.X[tr])), rel=1e-12)
    assert record.validation_metrics.r2 == pytest.approx(r2_score(d.y[va], reg.predict(d.X[va])), rel=1e-12)
    exact = exact_least_squares(d.X[tr], d.y[tr])
    assert record.exact_least_squares == exact
    assert record.exact_validation.mse == pytest.approx(float(np.mean((exact.predict(d.X[va]) - d.y[va]) ** 2)))


@pytest.mark.parametrize("change, message", [
    (lambda o: o.pop("dataset"), r"training lacks 'dataset'"),
    (lambda o: o["dataset"].update(rows="22"), r"training\.dataset\.rows must be int"),
    (lambda o: o.update(settings=[]), r"training\.settings must be dict"),
    (lambda o: o.update(epochs_run=6000.0), r"training\.epochs_run must be int"),
    (lambda o: o["metrics"].update(weight=[["0.3"]]), r"training\.metrics\.weight must be a list of a list"),
    (lambda o: o["metrics"].update(undefined={"r2": 1}), r"training\.metrics\.undefined must be an object"),
    (lambda o: o["exact_least_squares"].pop("r2"), r"training\.exact_least_squares lacks 'r2'"),
    (lambda o: o["inference"].update(targets={}), r"training\.inference\.targets must be list"),
    (lambda o: o["feature_stats"].update(std=None), r"training\.feature_stats lacks 'std'|std must be list"),
])
def test_bad_training_record_is_refused_naming_the_key(seed_fit, change, message):
    obj = TrainingRecord.from_fit(*seed_fit).to_json()
    change(obj)
    with pytest.raises(DataError, match=message):
        TrainingRecord.from_json(obj)


def test_missing_optional_keys_read_as_none(seed_fit):
    obj = TrainingRecord.from_fit(*seed_fit).to_json()
    for key in ("best_epoch", "val_loss", "inference", "inference_unavailable"):
        del obj[key]
    del obj["metrics"]["undefined"], obj["metrics"]["weight"]
    record = TrainingRecord.from_json(obj)
    assert record.inference is None and record.val_loss is None and record.metrics.weight is None
    assert record.metrics.undefined == {}


def test_write_report_writes_the_table_and_plots(seed_fit, tmp_path):
    reg, d = seed_fit
    record = TrainingRecord.from_fit(reg, d)
    names = write_report(tmp_path, reg, d, record)
    assert names == [INFERENCE_FILE, f"{REPORT_DIR}/regression.png", f"{REPORT_DIR}/loss.png",
                     f"{REPORT_DIR}/residuals.png"]
    assert (tmp_path / INFERENCE_FILE).read_text() == format_inference(record.inference) + "\n"
    assert sorted(p.name for p in (tmp_path / REPORT_DIR).iterdir()) == \
        ["inference.txt", "loss.png", "regression.png", "residuals.png"]
    assert pixels_like(tmp_path / REPORT_DIR / "regression.png", TAB_RED) > 1000


def test_write_report_without_table_or_plots_leaves_no_folder(tmp_path):
    d = load_dataset("plant_richness_mlr")
    reg = Regressor(model="mlp", hidden=(4,), epochs=20, device="cpu").fit(d.X, d.y)
    assert write_report(tmp_path, reg, d, TrainingRecord.from_fit(reg, d), plots=False) == []
    assert not (tmp_path / REPORT_DIR).exists()
    linear = Regressor(device="cpu", lr=1e-5, epochs=20).fit(d.X, d.y)
    assert write_report(tmp_path, linear, d, TrainingRecord.from_fit(linear, d), plots=False) == [INFERENCE_FILE]


@pytest.mark.filterwarnings("error")  # no division by a zero total sum of squares
def test_plots_of_a_constant_target_say_r2_is_undefined(tmp_path):
    from torchport.train.plots import _r2_label
    X = np.arange(12.0).reshape(-1, 1)
    y = np.full((12, 1), 3.0)
    reg = Regressor(device="cpu").fit(X, y)
    assert _r2_label(y, reg.predict(X)) == "n/a" and _r2_label(X, X + 0.5) == "0.9790"
    paths = write_plots(tmp_path, X, y, reg.predict, reg.loss_history_, ["x"], ["y"])
    assert [p.name for p in paths] == ["regression.png", "loss.png", "residuals.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "regression.png", "residuals.png"]
