"""File scoring streams: `torchport predict` scores a 10M-row CSV in bounded memory with the same answers
as in-memory scoring, the stdlib backend is bounded too, and a bad cell is one line with nothing written."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from conftest import DATA, run_cli
from torchport.runtime import Predictor

SEED = DATA / "v1" / "seed"
# VmHWM is this process's own peak RSS. (ru_maxrss is not: Linux carries the parent's RSS across fork+exec,
# so a child of a large pytest process would report the parent's size.)
REPORT_PEAK = ("hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1); "
               "print('peak_rss_kb', hwm, file=sys.stderr); sys.exit(rc)")
CLI_PEAK = "import re, sys; from torchport.runtime.cli import main; rc = main(sys.argv[1:]); " + REPORT_PEAK
STDLIB_PEAK = ("import re, sys; from pathlib import Path; from torchport.runtime import Predictor; "
               "from torchport.runtime.scoring import _score; "
               "_score(Predictor(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), backend='stdlib'); rc = 0; "
               + REPORT_PEAK)


def big_csv(path, n: int) -> np.ndarray:
    """Write ``n`` rows of (id, area) to ``path``; returns the areas."""
    area = np.random.default_rng(0).uniform(-1, 5, n).astype(np.float32)
    pacsv.write_csv(pa.table({"id": np.arange(n), "area": area}), path)
    return area


def peak_mb(code: str, *args: str) -> float:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.split("peak_rss_kb")[1].split()[0]) / 1024


@pytest.mark.full
def test_ten_million_rows_in_bounded_memory(tmp_path):
    n = 10_000_000
    src, dst = tmp_path / "big.csv", tmp_path / "scored.csv"
    area = big_csv(src, n)
    peak = peak_mb(CLI_PEAK, "predict", str(SEED), "-i", str(src), "-o", str(dst), "--no-progress")
    print(f"\n10M-row CSV scored by `torchport predict`: peak RSS {peak:.0f} MB "
          f"(input {src.stat().st_size / 2**20:.0f} MiB, output {dst.stat().st_size / 2**20:.0f} MiB)")
    assert peak < 500
    out = pacsv.read_csv(dst)
    assert out.num_rows == n and out.column_names == ["id", "area", "ntv_rich_pred"]
    in_memory = Predictor(SEED).predict(area.reshape(-1, 1))[:, 0]
    streamed = out.column("ntv_rich_pred").to_numpy().astype(np.float32)
    np.testing.assert_array_equal(streamed, in_memory)
    np.testing.assert_array_equal(out.column("id").to_numpy(), np.arange(n))


@pytest.mark.full
def test_stdlib_backend_in_bounded_memory_and_same_bytes(tmp_path):
    n = 2_000_000
    src, dst = tmp_path / "big.csv", tmp_path / "stdlib.csv"
    big_csv(src, n)
    peak = peak_mb(STDLIB_PEAK, str(SEED), str(src), str(dst))
    print(f"\n2M-row CSV scored with the stdlib backend: peak RSS {peak:.0f} MB "
          f"(input {src.stat().st_size / 2**20:.0f} MiB)")
    assert peak < 250
    proc = run_cli("predict", str(SEED), "-i", str(src), "-o", str(tmp_path / "pyarrow.csv"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert dst.read_bytes() == (tmp_path / "pyarrow.csv").read_bytes()


@pytest.mark.parametrize("dst_name", ["out.csv", "out.parquet"])
def test_bad_cell_in_a_later_chunk_is_one_line_and_nothing_is_written(tmp_path, dst_name):
    src = tmp_path / "in.csv"
    src.write_text("area\n" + "1.0\n" * 500 + "\n".join(["2.0", "oops", "3.0"]) + "\n")
    proc = run_cli("predict", str(SEED), "-i", str(src), "-o", str(tmp_path / dst_name), "--chunk-rows", "64",
                   "--no-progress")
    assert proc.returncode == 2
    assert "row 502 (data row, 1-based), column 'area': expected a finite number, got 'oops'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
