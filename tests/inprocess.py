"""Running `torchport ARGS` inside the test process: the exit code, stdout and stderr a subprocess would give,
without the seconds a new process spends importing torch. Output is caught at file descriptors 1 and 2 (so
what native code writes is caught too), and warnings and log records reach stderr as in a fresh interpreter
(pytest would otherwise collect them), so that checks on stderr stay as strict as on a subprocess's. What a
command sets for its own process (the working directory, torch's thread count) is put back afterwards."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path


@contextlib.contextmanager
def _working_directory(path: Path | None):
    if path is None:
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _captured_output(into: dict):
    """Point fds 1 and 2, and sys.stdout and sys.stderr, at temp files; ``into`` gets their text."""
    sys.stdout.flush()
    sys.stderr.flush()
    files = {"stdout": tempfile.TemporaryFile(), "stderr": tempfile.TemporaryFile()}
    saved = {1: os.dup(1), 2: os.dup(2)}
    streams = sys.stdout, sys.stderr
    try:
        os.dup2(files["stdout"].fileno(), 1)
        os.dup2(files["stderr"].fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = streams
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for name, file in files.items():
            file.seek(0)
            into[name] = file.read().decode("utf-8", errors="replace")
            file.close()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _as_a_fresh_interpreter():
    """Python's default warning filters, each warning shown once on stderr; log records of WARNING and above
    on stderr through logging's last-resort handler (pytest's own handlers set aside meanwhile)."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = _show_warning
        root.handlers = []
        try:
            yield
        finally:
            root.handlers = handlers


@contextlib.contextmanager
def _torch_threads_kept():
    """torch's thread count as it was (`torchport bench --threads N` sets it and leaves it, as a process may)."""
    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") else None
    threads = torch.get_num_threads() if torch else None
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


def run_in_process(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``torchport.runtime.cli.main(args)`` run here, as `torchport ARGS` run in ``cwd`` would be."""
    from torchport.runtime.cli import main
    output: dict = {}
    with _working_directory(cwd), _torch_threads_kept(), _captured_output(output), _as_a_fresh_interpreter():
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's --help and usage errors
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(["torchport", *args], code, output["stdout"], output["stderr"])
