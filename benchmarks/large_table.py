"""The large-table problem of train_speed: a generated table (x ~ N(0, 1) in 8 columns, y = sum of sin(x_i)
+ 0.5 x_1 x_2 + N(0, 0.1^2) noise, seeded) written as CSV, and `torchport train --model mlp --val-fraction
0.1` on it, otherwise with its defaults, run as a user runs it: a subprocess whose stderr lines are
timestamped as they arrive, so the run shows when its first progress line came and the longest silence."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = 8


def write_table(path: Path, rows: int, seed: int = 0) -> None:
    """The table as CSV (pyarrow's writer: the shortest digits that read back as the same float64)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES))
    y = np.sin(x).sum(axis=1) + 0.5 * x[:, 0] * x[:, 1] + rng.normal(0.0, 0.1, rows)
    columns = {f"x{i + 1}": x[:, i] for i in range(FEATURES)} | {"y": y}
    pacsv.write_csv(pa.table(columns), path)


@dataclass(frozen=True)
class Run:
    """One `torchport train` run: the command, its exit status, wall and CPU seconds, when the first stderr
    line came and the longest gap between lines (from the start, and after the first), and the bundle."""
    command: list[str]
    returncode: int
    wall_seconds: float
    cpu_seconds: float
    first_output_seconds: float | None
    longest_gap_seconds: float | None
    stderr_lines: int
    stdout: str
    bundle: Path


def run_train(data: Path, out: Path, extra: list[str]) -> Run:
    """`torchport train` on ``data`` into ``out``; stderr read line by line as it comes."""
    exe = Path(sys.executable).parent / "torchport"
    command = [str(exe), "train", "--data", str(data), "--target", "y", "--model", "mlp", "--val-fraction", "0.1",
               "--out", str(out), "--no-plots", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    stamps = []
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True)
        for _ in proc.stderr:
            stamps.append(time.monotonic() - start)
        proc.wait()
        stdout.seek(0)
        text = stdout.read()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    gaps = np.diff([0.0, *stamps]) if stamps else np.array([])
    return Run(command, proc.returncode, wall, cpu, stamps[0] if stamps else None,
               float(gaps[1:].max()) if len(gaps) > 1 else None, len(stamps), text, out)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [round(v, 2) for v in os.getloadavg()]
