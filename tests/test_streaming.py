"""`torchport predict` streams CSV/TSV/Parquet in bounded memory and equals in-memory scoring."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from torchport.runtime import Predictor

# VmHWM is this process's own peak RSS. (ru_maxrss is not: Linux carries the parent's RSS across fork+exec,
# so a child of a large pytest process would report the parent's size.)
PEAK_RSS = ("import re, sys; from torchport.runtime.cli import main; rc = main(sys.argv[1:]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1); "
            "print('peak_rss_kb', hwm, file=sys.stderr); sys.exit(rc)")


def test_ten_million_rows_in_bounded_memory(seed_bundle, tmp_path):
    n = 10_000_000
    area = np.random.default_rng(0).uniform(-1, 5, n).astype(np.float32)
    src, dst = tmp_path / "big.csv", tmp_path / "scored.csv"
    pacsv.write_csv(pa.table({"id": np.arange(n), "area": area}), src)
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "predict", str(seed_bundle), "-i", str(src),
                           "-o", str(dst), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stderr.split("peak_rss_kb")[1].split()[0]) / 1024
    print(f"\n10M-row CSV scored by `torchport predict`: peak RSS {peak_mb:.0f} MB "
          f"(input {src.stat().st_size / 2**20:.0f} MiB, output {dst.stat().st_size / 2**20:.0f} MiB)")
    assert peak_mb < 500
    out = pacsv.read_csv(dst)
    assert out.num_rows == n and out.column_names == ["id", "area", "ntv_rich_pred"]
    in_memory = Predictor(seed_bundle).predict(area.reshape(-1, 1))[:, 0]
    streamed = out.column("ntv_rich_pred").to_numpy().astype(np.float32)
    np.testing.assert_array_equal(streamed, in_memory)
    np.testing.assert_array_equal(out.column("id").to_numpy(), np.arange(n))


@pytest.mark.parametrize("src_suffix, dst_suffix", [(".csv", ".parquet"), (".parquet", ".csv"),
                                                     (".parquet", ".parquet"), (".tsv", ".tsv")])
def test_formats_and_chunk_boundaries(seed_bundle, tmp_path, src_suffix, dst_suffix):
    rng = np.random.default_rng(1)
    table = pa.table({"name": [f"island {i}" for i in range(1000)], "area": rng.uniform(0, 5, 1000)})
    src = tmp_path / f"in{src_suffix}"
    if src_suffix == ".parquet":
        pq.write_table(table, src)
    else:
        pacsv.write_csv(table, src, write_options=pacsv.WriteOptions(delimiter="\t" if src_suffix == ".tsv" else ","))
    outputs = []
    for chunk in ("7", "1000000"):
        dst = tmp_path / f"out{chunk}{dst_suffix}"
        proc = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(dst), "--chunk-rows", chunk,
                       "--no-progress")
        assert proc.returncode == 0, proc.stderr
        got = pq.read_table(dst) if dst_suffix == ".parquet" else \
            pacsv.read_csv(dst, parse_options=pacsv.ParseOptions(delimiter="\t" if dst_suffix == ".tsv" else ","))
        outputs.append(got.column("ntv_rich_pred").to_numpy().astype(np.float32))
        assert got.column("name").to_pylist() == table.column("name").to_pylist()
    np.testing.assert_array_equal(outputs[0], outputs[1])
    expected = Predictor(seed_bundle).predict(table.column("area").to_numpy().reshape(-1, 1).astype(np.float32))
    np.testing.assert_array_equal(outputs[0], expected[:, 0])


def test_bad_cell_in_a_later_chunk_is_named_and_nothing_is_written(seed_bundle, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("area\n" + "1.0\n" * 500 + "\n".join(["2.0", "oops", "3.0"]) + "\n")
    dst = tmp_path / "out.parquet"
    proc = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(dst), "--chunk-rows", "64",
                   "--no-progress")
    assert proc.returncode == 2
    assert "row 502 (data row, 1-based), column 'area': expected a finite number, got 'oops'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_header_only_file_gives_header_only_output(seed_bundle, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("area,other\n")
    dst = tmp_path / "out.csv"
    proc = run_cli("predict", str(seed_bundle), "-i", str(src), "-o", str(dst), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert dst.read_text().strip().replace('"', "") == "area,other,ntv_rich_pred"
