"""tests/inprocess.py, which most command tests run `torchport` through, gives what the console script gives:
the same exit code and output, warnings and log records and native writes on stderr, the process state put
back."""
import logging
import os
import sys
import types
import warnings

from conftest import run_script
from inprocess import run_in_process
from torchport.runtime import cli


def test_the_same_answer_as_the_console_script(seed_bundle, tmp_path):
    for args in (["predict", str(seed_bundle), "-i", "missing.csv", "-o", "out.csv"], ["predict", "--chunk-rows"],
                 ["--help"], ["frobnicate"]):
        here, there = run_in_process(args, cwd=tmp_path), run_script(*args, cwd=tmp_path)
        assert (here.returncode, here.stdout, here.stderr) == (there.returncode, there.stdout, there.stderr), args
    assert os.getcwd() != str(tmp_path) and list(tmp_path.iterdir()) == []


def test_warnings_log_records_and_native_writes_reach_stderr(monkeypatch):
    module = types.ModuleType("torchport_probe_command")
    module.add_arguments = lambda parser: None

    def run(args):
        warnings.warn("a user warning")
        warnings.warn("hidden, as in a new interpreter", DeprecationWarning)
        logging.getLogger("torchport.probe").warning("a log record")
        os.write(2, b"written by native code\n")
        print("printed")
        return 3
    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "probe", (module.__name__, "", "a probe"))
    for _ in range(2):  # shown every time, as each new process would show it
        proc = run_in_process(["probe"])
        assert proc.returncode == 3 and proc.stdout == "printed\n"
        assert "UserWarning: a user warning" in proc.stderr and "hidden" not in proc.stderr
        assert "a log record\n" in proc.stderr and "written by native code\n" in proc.stderr
