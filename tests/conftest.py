"""Shared fixtures: one real bundle of the tutorial's model, trained and exported by the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
BIN = Path(sys.executable).parent


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            exe: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `torchport` console script; capture text output."""
    return subprocess.run([str(exe or BIN / "torchport"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def seed_bundle(tmp_path_factory) -> Path:
    """`torchport train --out <tmp>/seed` with the defaults: the tutorial's model, exported and verified."""
    out = tmp_path_factory.mktemp("bundles") / "seed"
    proc = run_cli("train", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (out.parent / "train_stdout.txt").write_text(proc.stdout)
    return out


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


PARITY_STATS = {"cases": 0, "worst": 0.0, "worst_case": None}


def pytest_terminal_summary(terminalreporter):
    if PARITY_STATS["cases"]:
        terminalreporter.write_line(
            f"property parity: {PARITY_STATS['cases']} cases, worst max|a - b| / max(1, target scale) over the "
            f"three pairs = {PARITY_STATS['worst']:.3g} ({PARITY_STATS['worst_case']})")


# Property tests draw the same examples on every run (CI must not flake on a new random draw); explore new
# ones with: pytest --hypothesis-profile explore --hypothesis-seed N
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("default", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile("default")
