"""Training at any size: `torchport train` on a generated Parquet file of 10M rows x 6 features (560 MB of
float64: x ~ N(0, 1) scaled per column, one column a Unix time near 1.7e9 s, y linear in them plus N(0, 1)
noise, seeded), which it reads twice in chunks and reduces by a tall-skinny QR (train/streaming.py). Run as a
user runs it, under /usr/bin/time -v for the peak resident set size; then the bundle's estimates are compared
with one float64 TSQR of the whole table held in this process (train/tsqr.py's reduction of a single block).
Then ``Regressor().fit`` on a Dask DataFrame of the same file (dd.read_parquet) on a LocalCluster of two
worker processes, in a fresh client process that reports how much its own resident set grew.

    python -m torchport.benchmarks.stream_train [--rows 10000000] [--out benchmarks/results/stream_train.json]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = 6
WEIGHTS = np.array([1.0, -2.0, 0.5, 3e-6, 0.1, 0.01])
SCALES = np.array([1.0, 2.0, 3.0, 3e6, 5.0, 6.0])
OFFSETS = np.array([0.0, 0.0, 0.0, 1.7e9, 0.0, 10.0])
BLOCK_ROWS = 1 << 20


def write_table(path: Path, rows: int, seed: int = 0) -> None:
    """The table as Parquet, written a row group of BLOCK_ROWS rows at a time (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = [f"x{i + 1}" for i in range(FEATURES)] + ["y"]
    schema = pa.schema([(n, pa.float64()) for n in names])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, BLOCK_ROWS):
            n = min(BLOCK_ROWS, rows - start)
            x = rng.standard_normal((n, FEATURES)) * SCALES + OFFSETS
            y = x @ WEIGHTS + 3.0 + rng.standard_normal(n)
            writer.write_table(pa.table(dict(zip(names, [*x.T, y])), schema=schema))


def peak_rss_mb(stderr: str) -> float:
    """The peak resident set size /usr/bin/time -v reports, in MB (10^6 bytes)."""
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1)) * 1024 / 1e6


def whole_table_tsqr(path: Path):
    """One float64 TSQR of the whole table held in memory: the reference the streamed estimates must equal."""
    import pyarrow.parquet as pq

    from torchport.train.tsqr import Reduction
    table = pq.read_table(path)
    values = np.column_stack([table.column(n).to_numpy() for n in table.column_names])
    del table
    return Reduction(FEATURES, 1).add(values[:, :FEATURES], values[:, FEATURES:]).fit()


def dask_client(path: Path) -> dict:
    """In this (fresh) process: ``Regressor().fit`` on dd.read_parquet(path) with two worker processes; how
    much the client's resident set grew (now and at its peak) and the estimates."""
    import resource

    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    from torchport.train import Regressor

    def rss_mb() -> float:
        return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024 / 1e6
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        ddf = dd.read_parquet(str(path))
        features = [f"x{i + 1}" for i in range(FEATURES)]
        before, started = rss_mb(), time.monotonic()
        reg = Regressor().fit(ddf[features], ddf["y"])
        seconds = time.monotonic() - started
        after = rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    return {"partitions": int(ddf.npartitions), "fit_seconds": round(seconds, 1),
            "client_rss_growth_mb": round(after - before, 1), "client_rss_before_mb": round(before, 1),
            "client_peak_rss_mb": round(peak, 1), "estimates": [float(reg.intercept_[0]), *map(float, reg.coef_[0])]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/stream_train.json"))
    p.add_argument("--dask-client", type=Path, help=argparse.SUPPRESS)  # the client process of the Dask run
    args = p.parse_args(argv)
    if args.dask_client:
        print(json.dumps(dask_client(args.dask_client)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data, bundle = Path(tmp) / "table.parquet", Path(tmp) / "bundle"
        started = time.monotonic()
        write_table(data, args.rows)
        written = time.monotonic() - started
        exe = Path(sys.executable).parent / "torchport"
        command = ["/usr/bin/time", "-v", str(exe), "train", "--data", str(data), "--target", "y", "--out",
                   str(bundle), "--no-progress", "--no-plots"]
        started = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        manifest = json.loads((bundle / "manifest.json").read_text())
        stored = [c["estimate"] for c in manifest["training"]["inference"]["targets"][0]["coefficients"]]
        reference = whole_table_tsqr(data).params[:, 0]
        relative = float(np.max(np.abs(np.array(stored) / reference - 1)))
        client = subprocess.run([sys.executable, "-m", "torchport.benchmarks.stream_train", "--dask-client",
                                 str(data)], capture_output=True, text=True)
        if client.returncode != 0:
            print(client.stdout, client.stderr, file=sys.stderr)
            return 1
        on_dask = json.loads(client.stdout.strip().splitlines()[-1])
        on_dask["max_relative_difference_from_whole_table_tsqr"] = float(
            np.max(np.abs(np.array(on_dask["estimates"]) / reference - 1)))
        result = {
            "rows": args.rows, "features": FEATURES, "file_mb": data.stat().st_size / 1e6,
            "float64_table_mb": args.rows * (FEATURES + 1) * 8 / 1e6, "write_seconds": round(written, 1),
            "train_wall_seconds": round(wall, 1), "train_peak_rss_mb": round(peak_rss_mb(proc.stderr), 1),
            "user_seconds": float(re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr).group(1)),
            "max_relative_difference_from_whole_table_tsqr": relative, "estimates": stored,
            "reference_estimates": reference.tolist(), "dask": on_dask, "stdout": proc.stdout,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.rows:,} rows x {FEATURES} features ({result['file_mb']:.0f} MB Parquet): torchport train took "
          f"{result['train_wall_seconds']} s, peak RSS {result['train_peak_rss_mb']:.0f} MB; estimates within "
          f"{relative:.1e} (relative) of one float64 TSQR of the whole table; on Dask ({on_dask['partitions']} "
          f"partitions, 2 worker processes) {on_dask['fit_seconds']} s, the client's RSS grew "
          f"{on_dask['client_rss_growth_mb']:.0f} MB, estimates within "
          f"{on_dask['max_relative_difference_from_whole_table_tsqr']:.1e}; saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
