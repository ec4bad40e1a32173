"""The `torchport` command: help, bad invocations (one line, exit 2), and the base install without torch."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, run_script


def test_help_lists_the_commands():
    proc = run_script("--help")  # the console script itself
    assert proc.returncode == 0
    for command in ("train", "export", "verify", "predict", "bench"):
        assert command in proc.stdout
    for command in ("train", "export", "verify", "predict", "bench"):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and f"usage: torchport {command}" in sub.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "nope"], "unknown dataset 'nope'"),
    (["train", "--data", "missing.csv", "--target", "y"], "does not exist"),
    (["train", "--lr", "abc"], "expected a number, got 'abc'"),
    (["train", "--epochs", "0"], "epochs must be a whole number >= 1; got 0 (--epochs)"),
    (["train", "--optimizer", "exact", "--lr", "0.1"], "lr=0.1 does not apply to optimizer='exact'"),
    (["train", "--atol", "1e-5"], "give atol and rtol together"),
    (["train", "--data", "x.csv", "--target", "y", "--delimiter", "pipe"], "unknown delimiter 'pipe'"),
    (["train", "--data", "plant_richness_lr", "--features", "height"], "'height' not found"),
    (["train", "--device", "tpu"], "invalid choice"),
    (["verify", "no/such/bundle"], "not a bundle directory"),
    (["export", "no/such/bundle"], "not a bundle directory"),
    (["predict", "no/such/bundle", "-i", "x.csv", "-o", "y.csv"], "input file x.csv does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_invocations_exit_2_with_one_line(tmp_path, args, message):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_unreadable_csv_is_one_line(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    proc = run_script("train", "--data", "d.csv", "--target", "y", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "d.csv" in proc.stderr


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """A fresh venv with only the base install (`pip install .`): numpy and ONNX Runtime, no torch."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


@pytest.mark.full
def test_base_install_runs_the_runtime_without_torch(base_venv, seed_bundle, tmp_path):
    py = str(base_venv / "bin" / "python")
    assert subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0
    check = subprocess.run([py, "-c", "import torchport.runtime, sys; assert 'torch' not in sys.modules"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    src = tmp_path / "in.csv"
    src.write_text("area\n3\n0\n")
    proc = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(tmp_path / "o.csv"),
                   exe=base_venv / "bin" / "torchport", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert lines[0] == "area,ntv_rich_pred" and abs(float(lines[1].split(",")[1]) - 2.403) < 0.01


@pytest.mark.full
def test_base_install_checks_the_golden_cases_without_torch(base_venv, seed_bundle, tmp_path):
    code = ("import sys; from torchport.runtime import Predictor; c = Predictor(sys.argv[1]).self_check(); "
            "assert 'torch' not in sys.modules; print(c.checked, c.rows, c.of_bound <= 1)")
    proc = subprocess.run([str(base_venv / "bin" / "python"), "-c", code, str(seed_bundle)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checked, rows, within = proc.stdout.split()
    assert checked == "True" and int(rows) > 128 and within == "True"


@pytest.mark.full
@pytest.mark.parametrize("command", ["train", "export", "verify"])
def test_base_install_names_the_missing_extra(base_venv, tmp_path, command):
    proc = run_cli(command, exe=base_venv / "bin" / "torchport", cwd=tmp_path,
                   env={"PATH": f"{base_venv / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 2
    assert "pip install 'torchport[train]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture()
def command(monkeypatch):
    """A throwaway `torchport` command (a real module run by the real dispatcher) whose run() raises what
    the test puts in ``raises``."""
    import types

    from torchport.runtime import cli
    module = types.ModuleType("torchport_test_command")
    module.raises = None

    def add_arguments(p):
        p.add_argument("--force", action="store_true")
        p.add_argument("--learning-rate", dest="lr", type=float)

    def run(args):
        raise module.raises
    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "torchport_test_command", module)
    monkeypatch.setitem(cli.COMMANDS, "probe", ("torchport_test_command", "", "a probe"))
    return module


def test_torchport_errors_are_one_line_in_the_commands_terms(command, capsys):
    from torchport.runtime.cli import main
    from torchport.runtime.errors import Fix, InputError, ParityError
    command.raises = InputError("b exists", parameter="out", fixes=(Fix({"force": True}, "to replace it"),))
    assert main(["probe"]) == 2
    assert capsys.readouterr().err == "torchport probe: error: b exists; use --force (to replace it)\n"
    assert str(command.raises) == "b exists; use force=True (to replace it)"  # what Python callers read
    command.raises = InputError("lr must be positive; got -1", parameter="lr")
    assert main(["probe"]) == 2
    assert capsys.readouterr().err == "torchport probe: error: lr must be positive; got -1 (--learning-rate)\n"
    command.raises = ParityError("the copies disagree")
    assert main(["probe"]) == 1 and "error: the copies disagree" in capsys.readouterr().err


def test_an_unexpected_exception_is_reported_as_a_bug(command, capsys):
    from torchport.runtime.cli import BUG, main
    command.raises = ValueError("a plain ValueError is not a user error")
    assert main(["probe"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: a plain ValueError" in err and err.rstrip().endswith(BUG)
    command.raises = FileNotFoundError(2, "No such file or directory", "given.csv")
    assert main(["probe"]) == 2
    assert capsys.readouterr().err == "torchport probe: error: No such file or directory: given.csv\n"


@pytest.mark.full
def test_a_long_train_says_what_it_is_doing_on_stderr(tmp_path):
    """The status line (runtime/status.py): off a terminal, a line at least every 2 s, each saying the stage;
    training lines give the epoch and the loss. (How soon and how often is shown by the benchmark
    train_speed --problem large-mlp, not asserted here.)"""
    from conftest import STATUS_LINE
    proc = run_cli("train", "--out", str(tmp_path / "b"), "--epochs", "3000000", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    status = [line for line in proc.stderr.splitlines() if STATUS_LINE.match(line)]
    assert status and len(status) == len(proc.stderr.splitlines())  # nothing else on stderr
    assert any(re.search(r"training on 22 rows: epoch [\d.]+ of 3000000, loss 0\.\d+", line) for line in status)
    quiet = run_cli("train", "--out", str(tmp_path / "c"), "--epochs", "3000000", "--no-plots", "--no-progress")
    assert quiet.returncode == 0 and quiet.stderr == ""
