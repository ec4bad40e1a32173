"""The report and the web example in a real browser (headless Chromium driven by Playwright): the numbers
on the page equal the manifest's and Python's Predictor's, nothing is logged as an error, nothing is loaded
from elsewhere, a tampered model.onnx shows an error instead of a number; screenshots at desktop and phone
widths go to the folder printed at the end of the run (TORCHPORT_SCREENSHOTS chooses it)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import conftest
from browser import PHONE, browser, score_batch, watch, web_server
from conftest import run_cli
from nist import float64_filip
from torchport.benchmarks.records import BenchReport
from torchport.benchmarks.report import cells
from torchport.runtime import Predictor
from torchport.runtime.bundle import sha256_file

pytestmark = pytest.mark.full  # a headless Chromium

READY = "body[data-state=ready], body[data-state=error]"
A4 = {"width": 794, "height": 1123}  # CSS pixels of an A4 page


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    with browser(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("TORCHPORT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    conftest.SCREENSHOTS["folder"] = folder
    return folder


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory) -> Path:
    """The 3-feature MLP (32,32 relu, Adam) on the tutorial's multi-feature table."""
    out = tmp_path_factory.mktemp("bundles") / "mlr-mlp"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--epochs", "300", "--out", str(out),
                   "--no-progress", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    return out


def resolve(obj, path):
    for part in path:
        obj = obj[part]
    return obj


def page_values(page) -> list[tuple[list, object, str]]:
    """(manifest path, exact value, text shown) of every <data data-key> element on the page."""
    found = page.eval_on_selector_all("data[data-key]", "els => els.map(e => [e.dataset.key, e.value, e.textContent])")
    return [(json.loads(key), json.loads(value), text) for key, value, text in found]


def test_the_bundles_report_shows_the_manifests_figures(trained_seed_bundle, chromium, shots):
    manifest = json.loads((trained_seed_bundle / "manifest.json").read_text())
    w = watch(chromium, (trained_seed_bundle / "report" / "index.html").as_uri())
    values = page_values(w.page)
    for path, value, _ in values:
        assert value == resolve(manifest, path), path
    keys = {tuple(p): (v, text) for p, v, text in values}
    metrics, inference = manifest["training"]["metrics"], manifest["training"]["inference"]["targets"][0]
    assert keys["training", "metrics", "weight", 0, 0] == (metrics["weight"][0][0], f"{metrics['weight'][0][0]:.5f}")
    assert keys["training", "metrics", "bias", 0] == (metrics["bias"][0], f"{metrics['bias'][0]:.5f}")
    assert keys["training", "metrics", "r2"] == (metrics["r2"], f"{metrics['r2']:.5f}")
    for i, c in enumerate(inference["coefficients"]):
        assert keys["training", "inference", "targets", 0, "coefficients", i, "std_error"][0] == c["std_error"]
    assert keys["parity", "passed"] == (True, "passed")
    for i, p in enumerate(manifest["parity"]["pairs"]):
        assert keys["parity", "pairs", i, "max_abs"][0] == p["max_abs"]
        assert keys["parity", "pairs", i, "passed"][0] is p["passed"]
    for name in manifest["files"]:
        if name != "report/index.html":
            assert keys["files", name, "sha256"][0] == sha256_file(trained_seed_bundle / name)
    assert len(w.page.locator("section#plots img").all()) == 3
    assert all(url.startswith("file:") for url in w.requests), w.requests  # plots inline, nothing fetched
    w.shot(shots, "report")
    w.page.set_viewport_size(PHONE)
    assert w.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # wide tables scroll inside
    w.page.set_viewport_size(A4)
    w.page.emulate_media(media="print")
    w.page.screenshot(path=str(shots / "report-print.png"), full_page=True)
    assert w.page.pdf(path=str(shots / "report.pdf"), format="A4")[:5] == b"%PDF-"
    assert w.errors == []


def test_the_web_example_predicts_the_seed(seed_bundle, chromium, shots):
    with web_server(seed_bundle) as url:
        w = watch(chromium, url)
        w.page.wait_for_selector(READY)
        assert w.page.evaluate("document.body.dataset.state") == "ready", w.page.text_content("#load-error")
        assert w.page.text_content("label[for=feature-0]") == "area"
        w.page.fill("#feature-0", "3")
        w.page.wait_for_function("document.getElementById('prediction-0').dataset.inputs === '[3]'")
        value = float(w.page.get_attribute("#prediction-0", "data-value"))
        assert w.page.text_content("#prediction-0") == "2.40342"
        assert value == pytest.approx(2.40342, abs=1e-5)
        assert value == pytest.approx(float(Predictor(seed_bundle).predict([[3.0]])[0][0]), abs=1e-6)
        digest = hashlib.sha256((seed_bundle / "model.onnx").read_bytes()).hexdigest()
        assert digest[:12] in w.page.text_content("#checksum")
        w.shot(shots, "web-seed")
    assert all(u.startswith(url) for u in w.requests), w.requests  # onnxruntime-web from the server, no CDN
    assert any(u.endswith(".wasm") for u in w.requests)
    assert w.errors == []


def test_the_web_example_equals_python_on_the_mlp(mlp_bundle, chromium, shots):
    manifest = json.loads((mlp_bundle / "manifest.json").read_text())
    stats = manifest["training"]["feature_stats"]
    rows = np.random.default_rng(7).normal(stats["mean"], stats["std"], size=(100, 3))
    order = [2, 0, 1]  # columns matched by the header's names, not their place
    csv = ",".join(manifest["features"][j] for j in order) + "\n" + \
        "\n".join(",".join(repr(float(r[j])) for j in order) for r in rows)
    with web_server(mlp_bundle) as url:
        w = watch(chromium, url)
        w.page.wait_for_selector(READY)
        assert [w.page.text_content(f"label[for=feature-{j}]") for j in range(3)] == manifest["features"]
        web = np.array(score_batch(w.page, csv, 100)).reshape(100, 1)
        w.shot(shots, "web-mlp")
    python = Predictor(mlp_bundle).predict(rows)
    assert np.all(np.abs(web - python) <= 1e-6 * np.maximum(1.0, np.abs(python)))
    assert w.errors == []


def test_the_web_example_runs_a_float64_bundle_in_float64(chromium, shots, tmp_path):
    """NIST's Filip, which float32 cannot hold: onnxruntime-web is fed float64 rows, as the manifest says, and
    answers as Python's Predictor does, within the bundle's parity bound (float32 rows would be off by 0.39)."""
    t, out, manifest = float64_filip(tmp_path)
    csv = ",".join(t.features) + "\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in t.X)
    with web_server(out) as url:
        w = watch(chromium, url)
        w.page.wait_for_selector(READY)
        assert w.page.evaluate("document.body.dataset.state") == "ready", w.page.text_content("#load-error")
        web = np.array(score_batch(w.page, csv, len(t.X))).reshape(-1, 1)
        w.shot(shots, "web-filip-float64")
    python = Predictor(out).predict(t.X)
    assert np.abs(web - python).max() <= manifest["golden"]["bound"][0]
    assert w.errors == []


def test_a_tampered_model_shows_an_error_not_a_number(seed_bundle, chromium, shots, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(seed_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-1] ^= 1
    (bad / "model.onnx").write_bytes(bytes(data))
    with web_server(bad) as url:
        w = watch(chromium, url)
        w.page.wait_for_selector(READY)
        assert w.page.evaluate("document.body.dataset.state") == "error"
        assert "model.onnx does not match the manifest" in w.page.text_content("#load-error")
        assert w.page.is_visible("#load-error") and not w.page.is_visible("#model")
        assert w.page.locator("output").count() == 0
        w.shot(shots, "web-tampered")
    assert w.errors == []


def test_torchport_report_adds_the_benchmark_and_leaves_the_bundle_alone(seed_bundle, chromium, shots, tmp_path):
    before = {p.relative_to(seed_bundle): sha256_file(p) for p in seed_bundle.rglob("*") if p.is_file()}
    bench = run_cli("bench", str(seed_bundle), "--quick", "--batch-sizes", "1,64", "--out", str(tmp_path / "bench"))
    assert bench.returncode == 0, bench.stderr
    proc = run_cli("report", str(seed_bundle), "--out", str(tmp_path / "report"), "--bench",
                   str(tmp_path / "bench" / "bench.json"))
    assert proc.returncode == 0, proc.stderr
    after = {p.relative_to(seed_bundle): sha256_file(p) for p in seed_bundle.rglob("*") if p.is_file()}
    assert after == before
    report = BenchReport.from_json(json.loads((tmp_path / "bench" / "bench.json").read_text()))
    w = watch(chromium, (tmp_path / "report" / "index.html").as_uri())
    shown = w.page.eval_on_selector_all("#extra-1 tbody tr", "trs => trs.map(tr => [...tr.children].map(c => c.textContent))")
    assert shown == [cells(r) for r in report.rows(report.models[0].name)]
    manifest = json.loads((seed_bundle / "manifest.json").read_text())
    assert all(value == resolve(manifest, path) for path, value, _ in page_values(w.page))
    w.shot(shots, "report-with-bench")
    assert w.errors == []


def test_the_web_example_shows_intervals_and_the_domain_flag(seed_bundle, chromium, shots):
    """examples/node/intervals.mjs in the page: the form's 95% interval and the batch table's equal Python's
    predict_interval to 1e-5; a row 10x beyond the training range is flagged, the training rows are not."""
    rows = [[0.5], [3.0], [44.0]] + np.random.default_rng(3).normal(2.5, 1, size=(20, 1)).tolist()
    expected = Predictor(seed_bundle).predict_interval(np.array(rows), 0.95)
    with web_server(seed_bundle) as url:
        w = watch(chromium, url)
        w.page.wait_for_selector(READY)
        w.page.fill("#feature-0", "3")
        w.page.wait_for_function("document.getElementById('interval-0').dataset.inputs === '[3]'")
        lower, upper = (float(w.page.get_attribute("#interval-0", f"data-{b}")) for b in ("lower", "upper"))
        assert abs(lower - expected.lower[1, 0]) <= 1e-5 and abs(upper - expected.upper[1, 0]) <= 1e-5
        assert w.page.get_attribute("#domain", "data-flag") == "false" and w.page.is_hidden("#domain")
        w.page.fill("#feature-0", "44")
        w.page.wait_for_function("document.getElementById('domain').dataset.flag === 'true'")
        assert "above the training range" in w.page.text_content("#domain")
        w.shot(shots, "web-seed-interval")
        w.page.click("#batch summary")
        w.page.fill("#batch-rows", "area\n" + "\n".join(repr(r[0]) for r in rows))
        w.page.click("#batch-form button")
        w.page.wait_for_function(f"document.querySelectorAll('td.interval').length === {len(rows)}")
        bands = w.page.eval_on_selector_all("td.interval", "els => els.map(e => [e.dataset.lower, e.dataset.upper])")
        flags = w.page.eval_on_selector_all("td.domain", "els => els.map(e => e.dataset.flag === 'true')")
    web = np.array(bands, dtype=np.float64)
    assert np.max(np.abs(web[:, 0] - expected.lower[:, 0])) <= 1e-5
    assert np.max(np.abs(web[:, 1] - expected.upper[:, 0])) <= 1e-5
    assert flags == expected.out_of_domain.tolist() and flags[2] and not flags[1]
    assert w.errors == []


def test_an_interval_the_bundle_cannot_give_leaves_the_predictions_shown(chromium, shots, tmp_path):
    """An MLP with 5 calibration rows (a quarter of 22 held out) cannot give a 95% conformal interval (it needs
    19): the page still shows the form's prediction and the batch's answers, and says why there is no interval."""
    out = tmp_path / "few"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--epochs", "100", "--val-fraction",
                   "0.25", "--out", str(out), "--no-progress", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["intervals"]["method"] == "conformal"
    manifest = json.loads((out / "manifest.json").read_text())
    rows = np.array(manifest["training"]["feature_stats"]["mean"], dtype=np.float64).reshape(1, 3)
    with web_server(out) as url:
        w = watch(chromium, url)
        w.page.wait_for_selector(READY)
        for j in range(3):
            w.page.fill(f"#feature-{j}", repr(float(rows[0, j])))
        w.page.wait_for_function("document.getElementById('prediction-0').dataset.value !== undefined")
        form = float(w.page.get_attribute("#prediction-0", "data-value"))
        assert "no 95% interval" in w.page.text_content("#form-error") and "calibration rows" in \
            w.page.text_content("#form-error") and w.page.is_visible("#form-error")
        csv = ",".join(manifest["features"]) + "\n" + ",".join(repr(float(v)) for v in rows[0])
        batch = score_batch(w.page, csv, 1)
        assert "no 95% interval" in w.page.text_content("#batch-error")
        w.shot(shots, "web-mlp-no-interval")
    python = float(Predictor(out).predict(rows)[0, 0])
    assert abs(form - python) <= 1e-6 * max(1.0, abs(python)) and abs(batch[0] - python) <= 1e-6 * max(1.0, abs(python))
    assert w.errors == []
