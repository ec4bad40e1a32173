"""Shared fixtures and the two test tiers.

Tiers: `make test` (plain `pytest`) runs the fast tier; `make test-all` (`pytest --full`) runs every test.
A test belongs to the full tier only when it carries the `full` marker: `@pytest.mark.full` on a test, or
`pytestmark = pytest.mark.full` at the top of a module. Mark what is heavy: AOTInductor compiles, native
builds, the browser, long trainings, property tests with many examples, servers under load. (`slow`, the
older name, and `--slow` mean the same.) The fast tier leaves them out (deselected, and counted as such).

Bundles: `seed_bundle` and `mlr_mlp_bundle` are copies of bundles checked in under tests/data/current (made
by the real `torchport train`; its README says how to make them again), so that tests of the runtime, the
server and the other commands need no training; `trained_seed_bundle` is trained in the session, for the
tests of what `torchport train` prints and writes. `run_cli` runs `torchport` in this process (tests/
inprocess.py); `run_script` runs the installed console script as a subprocess."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inprocess import run_in_process

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CURRENT = DATA / "current"
BIN = Path(sys.executable).parent


# A child inherits ignored signals, and a test run as a background job (`make test &`, nohup, `trap '' INT`)
# has SIGINT ignored: a child that a test will signal starts through this shim, which puts SIGINT and SIGTERM
# back to their default actions and then executes the command in the same process (same pid).
DEFAULT_SIGNALS = ("import os, signal, sys; "
                   "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; "
                   "os.execv(sys.argv[1], sys.argv[1:])")


def with_default_signals(command: list[str]) -> list[str]:
    """``command`` (its first item a path) to run with SIGINT and SIGTERM at their default actions."""
    return [sys.executable, "-c", DEFAULT_SIGNALS, *map(str, command)]


def run_script(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
               exe: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `torchport` console script (or ``exe``) as a subprocess; capture text output."""
    return subprocess.run([str(exe or BIN / "torchport"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            exe: Path | None = None) -> subprocess.CompletedProcess:
    """`torchport ARGS`: in this process (no timeout there), or as a subprocess when ``env`` or ``exe`` is
    given (an environment is read at start-up; another install is another interpreter)."""
    if env is not None or exe is not None:
        return run_script(*args, cwd=cwd, env=env, timeout=timeout, exe=exe)
    return run_in_process(list(args), cwd=cwd)


def checked_in(name: str, tmp_path_factory) -> Path:
    """A copy of tests/data/current/NAME, which tests may change without touching the repository."""
    out = tmp_path_factory.mktemp("bundles") / name
    shutil.copytree(CURRENT / name, out)
    return out


@pytest.fixture(scope="session")
def seed_bundle(tmp_path_factory) -> Path:
    """The tutorial's model as `torchport train --no-plots` writes it (checked in: tests/data/current/seed)."""
    return checked_in("seed", tmp_path_factory)


@pytest.fixture(scope="session")
def trained_seed_bundle(tmp_path_factory) -> Path:
    """`torchport train --out <tmp>/seed` with the defaults, run now by the console script: the tutorial's
    model, exported and verified, with its plots; what it printed is in train_stdout.txt beside it."""
    out = tmp_path_factory.mktemp("bundles") / "seed"
    proc = run_script("train", "--out", str(out), "--no-progress")  # the main job, as users run it
    assert proc.returncode == 0, proc.stderr
    (out.parent / "train_stdout.txt").write_text(proc.stdout)
    return out


@pytest.fixture(scope="session")
def mlr_mlp_bundle(tmp_path_factory) -> Path:
    """The 3-32-32-1 MLP on plant_richness_mlr (the hot path's reference MLP), default formats, no plots
    (checked in: tests/data/current/mlr-mlp)."""
    return checked_in("mlr-mlp", tmp_path_factory)


STATUS_LINE = re.compile(r"^torchport \w+: \[ *\d+\.\d s\] ")


def without_status(stderr: str) -> list[str]:
    """stderr's lines less the status lines a long command prints (runtime/status.py)."""
    return [line for line in stderr.strip().splitlines() if not STATUS_LINE.match(line)]


ALL_FORMATS = "onnx,torchscript,exported,aoti"
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="session")
def aoti_seed_bundle(tmp_path_factory) -> Path:
    """`torchport train --formats onnx,torchscript,exported,aoti`: the tutorial's model in every format (the
    AOTInductor package compiled for this CPU)."""
    out = tmp_path_factory.mktemp("bundles") / "seed-aoti"
    proc = run_cli("train", "--formats", ALL_FORMATS, "--out", str(out), "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr
    (out.parent / "train_stdout.txt").write_text(proc.stdout)
    return out


@pytest.fixture(scope="session")
def aoti_mlp_bundle(tmp_path_factory) -> Path:
    """The 3-32-32-1 MLP on plant_richness_mlr in every format, its AOTInductor package compiled for any
    x86-64-v3 (AVX2) CPU."""
    out = tmp_path_factory.mktemp("bundles") / "mlp-aoti"
    proc = run_cli("train", "--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "32,32", "--epochs", "300",
                   "--formats", ALL_FORMATS, "--aoti-cpu", "x86-64-v3" if X86 else "native", "--out", str(out),
                   "--no-progress",
                   "--no-plots", timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def model_versions(seed_bundle, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Two models with two versions each, as bundles: (name, version) -> bundle. seed 1 is the tutorial's
    trained model, seed 2 a linear model with other weights; mlp 1 and 2 are 3-feature, 2-target MLPs with
    different initial weights (they answer differently, so a test can tell the versions apart)."""
    import torch
    from torchport.export import write_bundle
    from torchport.train.models import ModelSpec, build_model
    out = tmp_path_factory.mktemp("versions")
    linear = ModelSpec("linear", 1, 1)
    seed2 = build_model(linear)
    with torch.no_grad():
        seed2.weight.fill_(0.5)
        seed2.bias.fill_(1.0)
    write_bundle(seed2, linear, ["area"], ["ntv_rich"], out / "seed-2")
    mlp = ModelSpec("mlp", 3, 2, hidden=(8,))
    for version in (1, 2):
        torch.manual_seed(version)
        write_bundle(build_model(mlp), mlp, ["area", "latitude", "dist_mainland"], ["ntv_rich", "tot_rich"],
                     out / f"mlp-{version}")
    return {("seed", "1"): seed_bundle, ("seed", "2"): out / "seed-2", ("mlp", "1"): out / "mlp-1",
            ("mlp", "2"): out / "mlp-2"}


def pair(report, reference: str, candidate: str):
    """The result for one pair of backends in a ParityReport."""
    return next(p for p in report.pairs if (p.reference, p.candidate) == (reference, candidate))


def manifest_pair(manifest: dict, reference: str, candidate: str) -> dict | None:
    """The JSON of one pair's result in a manifest's parity record, or None."""
    return next((p for p in manifest["parity"]["pairs"]
                 if (p["reference"], p["candidate"]) == (reference, candidate)), None)


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="run the full tier too: the tests marked full (what `make test-all` runs)")
    parser.addoption("--slow", action="store_true", default=False, help="the same as --full (its older name)")


def pytest_collection_modifyitems(config, items):
    """The fast tier: every test but those marked full (or slow), which are deselected."""
    if config.getoption("--full") or config.getoption("--slow"):
        return
    fast, full = [], []
    for item in items:
        (full if item.get_closest_marker("full") or item.get_closest_marker("slow") else fast).append(item)
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = fast


PARITY_STATS = {"cases": 0, "worst": 0.0, "worst_case": None}
SCREENSHOTS: dict = {}  # "folder": where tests/test_browser.py saved its screenshots


def pytest_terminal_summary(terminalreporter):
    if SCREENSHOTS.get("folder"):
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOTS['folder']}")
    if PARITY_STATS["cases"]:
        terminalreporter.write_line(
            f"property parity: {PARITY_STATS['cases']} cases, worst error of a copy over float32 torch's own "
            f"= {PARITY_STATS['worst']:.3g}x ({PARITY_STATS['worst_case']})")


# Property tests draw the same examples on every run (CI must not flake on a new random draw); explore new
# ones with: pytest --hypothesis-profile explore --hypothesis-seed N
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("default", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile("default")


STRICT_JSON = """
const fs = require('fs');
const bad = [];
for (const f of JSON.parse(fs.readFileSync(0, 'utf8'))) {
  try { JSON.parse(fs.readFileSync(f, 'utf8')); } catch (e) { bad.push(f + ': ' + e.message); }
}
process.stdout.write(JSON.stringify(bad));
"""


def _lenient_json(path: Path) -> bool:
    import json
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json_problems(paths: list[Path]) -> list[str]:
    """Files among ``paths`` that a strict JSON parser refuses: Python's with NaN/Infinity refused, and
    Node's JSON.parse (where Node is installed). Files that are not JSON even to a lenient parser are left
    out: tests damage manifests on purpose, and torchport never writes one."""
    import json
    import shutil
    problems = []
    paths = [p for p in paths if _lenient_json(p)]
    for path in paths:
        try:
            json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
        except ValueError as e:
            problems.append(f"{path}: {e}")
    node = shutil.which("node")
    if node and paths:
        proc = subprocess.run([node, "-e", STRICT_JSON], input=json.dumps([str(p) for p in paths]),
                              capture_output=True, text=True, timeout=120)
        problems += json.loads(proc.stdout) if proc.returncode == 0 else [f"node failed: {proc.stderr}"]
    return problems


def pytest_sessionfinish(session, exitstatus):
    """Every manifest.json the tests wrote must be strict JSON (Python and Node's JSON.parse)."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(session.config, "workerinput", None) is not None:
        return
    manifests = sorted(factory.getbasetemp().rglob("manifest.json"))
    problems = strict_json_problems(manifests)
    STRICT_STATS.update(manifests=len(manifests), problems=problems)
    if problems:
        session.exitstatus = 1


STRICT_STATS: dict = {}


def pytest_unconfigure(config):
    if STRICT_STATS.get("problems"):
        print("\nmanifests that are not strict JSON:\n  " + "\n  ".join(STRICT_STATS["problems"]), file=sys.stderr)
    elif STRICT_STATS.get("manifests"):
        print(f"\nstrict JSON: all {STRICT_STATS['manifests']} manifest.json files the tests wrote parse with "
              "Python (NaN/Infinity refused) and Node's JSON.parse", file=sys.stderr)
