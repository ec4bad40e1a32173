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
from torchport.train import Regressor, load_dataset
from torchport.train.inference import format_inference, ols_inference
from torchport.train.plots import write_plots

TAB_RED, TAB_BLUE, TAB_ORANGE = (214, 39, 40), (31, 119, 180), (255, 127, 14)
MARKER_PIXELS = 25  # solid core of one data point (s=28 at 120 dpi); 22 islands draw well over 22 times that


def on_white(rgb, alpha=0.8):
    """The colour of a marker drawn with ``alpha`` on the white background."""
    return tuple(alpha * c + (1 - alpha) * 255 for c in rgb)


def pixels_like(path, rgb, tol=12) -> int:
    """How many pixels of the PNG are within ``tol`` (0-255 per channel) of the colour ``rgb``."""
    img = imread(path)[..., :3] * 255
    return int(np.all(np.abs(img - np.array(rgb)) <= tol, axis=-1).sum())


def test_train_prints_the_statsmodels_table(seed_bundle):
    out = (seed_bundle.parent / "train_stdout.txt").read_text()
    d = load_dataset("plant_richness_lr")
    record = ols_inference(d.X, d.y, d.feature_names, d.target_names)
    assert format_inference(record) in out
    row = re.search(r"^area\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+\[(\S+), (\S+)\]$", out, re.M)
    area = record["targets"][0]["coefficients"][1]
    printed = [float(v) for v in row.groups()]
    np.testing.assert_allclose(printed, [area[k] for k in ("estimate", "std_error", "t", "p", "ci_low", "ci_high")],
                               rtol=1e-3)


def test_manifest_inference_matches_the_closed_form(seed_bundle):
    m = json.loads((seed_bundle / "manifest.json").read_text())
    d = load_dataset("plant_richness_lr")
    stored = m["training"]["inference"]
    assert stored == json.loads(json.dumps(ols_inference(d.X, d.y, d.feature_names, d.target_names)))
    assert_matches(stored["targets"][0], closed_form(d.X, d.y[:, 0]))
    text = (seed_bundle / "report" / "inference.txt").read_text()
    assert text == format_inference(stored) + "\n"


def test_report_files_are_listed_with_their_sha256(seed_bundle):
    m = json.loads((seed_bundle / "manifest.json").read_text())
    report = sorted(p.relative_to(seed_bundle).as_posix() for p in (seed_bundle / "report").iterdir())
    assert report == ["report/inference.txt", "report/loss.png", "report/regression.png", "report/residuals.png"]
    for name in report:
        assert m["files"][name]["sha256"] == sha256_file(seed_bundle / name)
    out = (seed_bundle.parent / "train_stdout.txt").read_text()
    assert "report/: inference.txt, loss.png, regression.png, residuals.png)" in out


def test_seed_plots_show_what_they_claim(seed_bundle):
    folder = seed_bundle / "report"
    for name in ("regression.png", "loss.png", "residuals.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(folder / name).shape == (576, 768, 4)
    # regression: 22 blue data points and a red fitted line (about 600 px long, 2 px wide) across the data
    assert pixels_like(folder / "regression.png", TAB_RED) > 1000
    assert pixels_like(folder / "regression.png", on_white(TAB_BLUE)) > 22 * MARKER_PIXELS
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
    assert [p.name for p in (out / "report").iterdir()] == ["inference.txt"]
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert not [name for name in files if name.endswith(".png")]
    assert "least-squares inference for ntv_rich ~ area" in proc.stdout


def test_reexport_carries_the_report_and_refuses_a_tampered_one(seed_bundle, tmp_path):
    proc = run_cli("export", str(seed_bundle), "--out", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    for p in (seed_bundle / "report").iterdir():
        assert sha256_file(tmp_path / "again" / "report" / p.name) == sha256_file(p)
    shutil.copytree(seed_bundle, tmp_path / "bad")
    (tmp_path / "bad" / "report" / "loss.png").write_bytes(b"not the plot")
    proc = run_cli("export", str(tmp_path / "bad"), "--out", str(tmp_path / "worse"))
    assert proc.returncode == 2 and "report/loss.png does not match the manifest" in proc.stderr
    assert not (tmp_path / "worse").exists()


@pytest.mark.parametrize("blocked", ["statsmodels", "matplotlib"])
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
