"""A bundle that fails parity is not published: `train` and `export` exit 1, nothing appears at --out, and
the staged files stay beside it as <out>.parity-failed. --publish-failed publishes it marked failed, and the
Predictor, `torchport serve` and `export --triton` then refuse it unless told to allow it. A real failure
is provoked with a fixed tolerance far below float32 rounding (--atol 1e-12 --rtol 1e-12)."""
import json
import shutil

import pytest

from conftest import run_cli
from servers import serving
from torchport.runtime import ParityError, Predictor

TOO_STRICT = ("--atol", "1e-12", "--rtol", "1e-12")


def test_a_failing_train_publishes_nothing_and_keeps_the_staged_bundle(tmp_path):
    out = tmp_path / "seed"
    proc = run_cli("train", "--out", str(out), "--no-progress", "--no-plots", *TOO_STRICT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    kept = tmp_path / "seed.parity-failed"
    assert not out.exists() and kept.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.parity-failed"]  # no temp dirs, no state file
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("torchport train: error: parity FAILED: the exported copies disagree with the torch "
                            "model beyond float32 rounding (")
    assert f"nothing was published at {out}; the staged bundle is in {kept} for inspection; use " \
           "--publish-failed (to publish it marked failed)" in error
    assert "parity: FAILED" in proc.stdout and "torchport SGD" in proc.stdout  # the summary and the report
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["parity"]["passed"] is False and manifest["parity"]["atol"] == 1e-12
    with pytest.raises(ParityError, match="failed its parity check"):
        Predictor(kept)
    again = run_cli("train", "--out", str(out), "--no-progress", "--no-plots", *TOO_STRICT)
    assert again.returncode == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["seed.parity-failed"]


@pytest.fixture(scope="module")
def published_failed(tmp_path_factory):
    out = tmp_path_factory.mktemp("failed") / "seed"
    proc = run_cli("train", "--out", str(out), "--no-progress", "--no-plots", "--publish-failed", *TOO_STRICT)
    assert proc.returncode == 1, proc.stderr
    assert "published at" in proc.stderr and "marked failed, as --publish-failed asked" in proc.stderr
    return out


def test_a_bundle_published_failed_is_refused_unless_allowed(published_failed, tmp_path):
    assert json.loads((published_failed / "manifest.json").read_text())["parity"]["passed"] is False
    with pytest.raises(ParityError) as e:
        Predictor(published_failed)
    assert str(e.value) == (f"{published_failed}: this bundle failed its parity check (torch, exported, torchscript, "
                            "onnxruntime, onnxruntime_model, onnxruntime_large_batch beyond the criterion) and was "
                            "published marked failed; re-export it, or load it anyway for inspection; use "
                            "allow_failed_parity=True (to use it as it is)")
    assert Predictor(published_failed, allow_failed_parity=True).predict([[3.0]])[0][0] == pytest.approx(2.4034, abs=1e-3)
    triton = run_cli("export", str(published_failed), "--triton", str(tmp_path / "repo"))
    assert triton.returncode == 1 and "failed its parity check" in triton.stderr
    assert "use --allow-failed-parity (to use it as it is)" in triton.stderr and not (tmp_path / "repo").exists()
    allowed = run_cli("export", str(published_failed), "--triton", str(tmp_path / "repo"), "--allow-failed-parity")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "repo" / "seed" / "1" / "model.onnx").is_file()


def test_serve_refuses_a_failed_bundle_unless_allowed(published_failed):
    proc = run_cli("serve", str(published_failed), "--port", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "failed its parity check" in proc.stderr and "--allow-failed-parity" in proc.stderr
    with serving(published_failed, "--allow-failed-parity") as srv:
        from test_serve import _infer_json
        status, answer = _infer_json(srv.port, [[3.0]])
    assert status == 200 and answer["outputs"][0]["data"][0] == pytest.approx(2.4034, abs=1e-3)


def test_a_failing_re_export_publishes_nothing(seed_bundle, tmp_path):
    out = tmp_path / "again"
    proc = run_cli("export", str(seed_bundle), "--out", str(out), *TOO_STRICT)
    assert proc.returncode == 1 and "parity: FAILED" in proc.stdout
    assert not out.exists() and (tmp_path / "again.parity-failed" / "manifest.json").is_file()
    assert "nothing was published at" in proc.stderr and "--publish-failed" in proc.stderr
    shutil.rmtree(tmp_path / "again.parity-failed")
    fixed = run_cli("export", str(seed_bundle), "--out", str(out))  # the default criterion: rounding passes
    assert fixed.returncode == 0, fixed.stderr
    assert Predictor(out).predict([[3.0]])[0][0] == pytest.approx(2.4034, abs=1e-3)
