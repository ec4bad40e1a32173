"""report/index.html without a browser: its place in the bundle (hashed, rewritten by verify and re-export),
what it may load (nothing), escaping of every value, bundles without a training record or from format 1,
and `torchport report`'s refusals. tests/test_browser.py reads its figures in Chromium."""
from __future__ import annotations

import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import torch

from conftest import DATA, ROOT, run_cli
from torchport.export import write_bundle, write_from_regressor
from torchport.export.html_report import REPORT_HTML
from torchport.export.report_view import metric_sets
from torchport.runtime.bundle import Bundle, sha256_file
from torchport.runtime.cli import main
from torchport.train import Regressor, TrainingRecord
from torchport.train.datasets import Dataset
from torchport.train.metrics import FitMetrics
from torchport.train.models import ModelSpec, build_model

REFERENCE_BENCH = ROOT / "benchmarks" / "results" / "intel-xeon-f6m207-2cpu" / "bench.json"


class Page(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def page(bundle: Path) -> Page:
    return Page((bundle / REPORT_HTML).read_text(encoding="utf-8"))


def test_the_page_is_a_hashed_file_that_loads_nothing(trained_seed_bundle):
    m = Bundle.open(trained_seed_bundle).manifest
    assert m.files[REPORT_HTML].sha256 == sha256_file(trained_seed_bundle / REPORT_HTML)
    p = page(trained_seed_bundle)
    assert not [t for t, _ in p.tags if t in ("script", "iframe", "object", "embed")]
    links = [a.get(k) for _, a in p.tags for k in ("src", "href") if a.get(k) is not None]
    assert links and all(v.startswith(("data:", "#")) for v in links), links
    csp = [a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]
    assert sum(1 for t, a in p.tags if t == "img" and a["src"].startswith("data:image/png;base64,")) == 3


def test_every_value_is_escaped(tmp_path):
    feature, target = "<img src=x onerror=alert(1)>", '</style><script>alert("t")</script>'
    source = "<b>made</b> & 'quoted' \"data\""
    X = np.linspace(0, 1, 12).reshape(-1, 1)
    data = Dataset("hostile<i>", source, X, 2 * X + 1, [feature], [target])
    reg = Regressor(epochs=50, device="cpu").fit(data.X, data.y)
    write_from_regressor(reg, data, tmp_path / "b", plots=False)
    p = page(tmp_path / "b")
    assert [t for t, _ in p.tags if t in ("script", "b", "i")] == []
    assert [a for t, a in p.tags if t == "img"] == []  # no plots asked for, and the name made none
    text = "".join(p.text)
    assert feature in text and target in text and source in text and "hostile<i>" in text


def test_a_bundle_of_an_untrained_module_has_a_report(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec("mlp", 3, 2, hidden=(8,), scale_features=True, scale_targets=True)
    m = write_bundle(build_model(spec), spec, ["a", "b", "c"], ["p", "q"], tmp_path / "b")
    text = "".join(page(tmp_path / "b").text)
    assert "no training record" in text and "No least-squares inference table" in text
    assert m.files[REPORT_HTML].sha256 == sha256_file(tmp_path / "b" / REPORT_HTML)
    assert all(f"{p.reference}" in text and f"{p.candidate}" in text for p in m.parity.pairs)


def test_verify_rewrites_the_page_with_its_results(seed_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(seed_bundle, b)
    proc = run_cli("verify", str(b), "--atol", "0.001", "--rtol", "0.0001")
    assert proc.returncode == 0, proc.stderr
    assert "criterion |backend - float64| <= 0.001 + 0.0001 * |float64|" in "".join(page(b).text)
    bundle = Bundle.open(b)
    assert bundle.read(REPORT_HTML) == (b / REPORT_HTML).read_bytes()  # its sha256 is the manifest's


def test_new_metric_sets_slot_into_the_report(seed_bundle):
    """A set of metrics a later record holds (held-out rows, say) gets its own row without a change here."""
    record = TrainingRecord.from_json(Bundle.open(seed_bundle).manifest.training)

    @dataclasses.dataclass(frozen=True)
    class WithHeldOut(TrainingRecord):
        held_out_metrics: FitMetrics | None = None

    table = metric_sets(WithHeldOut(**{f.name: getattr(record, f.name) for f in dataclasses.fields(record)},
                                    held_out_metrics=FitMetrics(0.25, 0.5)))
    assert [row[0] for row in table.rows] == [f"all {record.dataset.rows} rows", "held out metrics"]
    assert (table.rows[1][1].value, table.rows[1][1].key) == (0.25, ("training", "held_out_metrics", "mse"))


def test_report_of_a_format_1_bundle_with_the_reference_benchmark(tmp_path):
    proc = run_cli("report", str(DATA / "v1" / "seed"), "--out", str(tmp_path / "r"), "--bench", str(REFERENCE_BENCH))
    assert proc.returncode == 0, proc.stderr
    text = "".join(Page((tmp_path / "r" / "index.html").read_text()).text)
    bench = json.loads(REFERENCE_BENCH.read_text())
    assert f"run {bench['created']}: {bench['command']}" in text and "torchport Predictor" in text
    assert "time to fit" in text and "n/a" in text  # format-1 records did not keep it


def test_report_refuses_to_write_into_the_bundle_or_over_a_page(trained_seed_bundle, tmp_path, capsys):
    def report(*args: str) -> tuple[int, str]:
        code = main(["report", *map(str, args)])
        return code, capsys.readouterr().err

    before = sorted(p.name for p in trained_seed_bundle.rglob("*"))
    code, err = report(trained_seed_bundle, "--out", trained_seed_bundle / "report")
    assert code == 2 and "never changes a bundle" in err and "(--out)" in err
    assert sorted(p.name for p in trained_seed_bundle.rglob("*")) == before
    assert report(trained_seed_bundle, "--out", tmp_path)[0] == 0
    code, err = report(trained_seed_bundle, "--out", tmp_path)
    assert code == 2 and "index.html exists; use --force (to replace it)" in err
    code, err = report(DATA / "v1" / "mlp", "--out", tmp_path / "m", "--bench", REFERENCE_BENCH)
    assert code == 2 and "has no results for" in err and "(--bench)" in err
    (tmp_path / "bad.json").write_text('{"format": NaN}')
    code, err = report(trained_seed_bundle, "--out", tmp_path / "n", "--bench", tmp_path / "bad.json")
    assert code == 2 and "is not a JSON file" in err and "Traceback" not in err
    shutil.copytree(trained_seed_bundle, tmp_path / "bad")
    (tmp_path / "bad" / "report" / "loss.png").write_bytes(b"not the plot")
    code, err = report(tmp_path / "bad", "--out", tmp_path / "t")
    assert code == 2 and "report/loss.png does not match the manifest" in err
    assert not [p for p in (tmp_path / "m", tmp_path / "n", tmp_path / "t") if p.exists()]
