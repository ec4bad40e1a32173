"""The reference run of `torchport bench`: train the three reference bundles in every format (AOTInductor
included) where they are missing, or add the formats they lack with `torchport export` (the seed's linear
model, the 3-32-32-1 MLP and a wider 16-128-128-4 MLP on the first 20 columns of statsmodels' star98 table:
four percentage columns as targets, the other sixteen as features), then benchmark them in one interleaved
run into a folder named after this machine, so that runs on different machines sit side by side. Other
options are passed on to `torchport bench` (see `torchport bench --help`); --quick and --threads N also add
-quick and -threadsN to the folder's name.

Paths are relative to the current directory: the bundles under bundles/ (bundles/seed, bundles/mlr-mlp,
bundles/wide-mlp, with bundles/star98.csv), the results in benchmarks/results/<machine>/ (bench.json,
bench.md, bench.png).

examples:
  python -m torchport.benchmarks.compare_backends                 # threads = physical cores
  python -m torchport.benchmarks.compare_backends --threads 1     # -> benchmarks/results/<machine>-threads1/
  python -m torchport.benchmarks.compare_backends --quick
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from torchport.benchmarks.machine import cpu_description, gpu_description
from torchport.benchmarks.timing import RESULTS_DIR
from torchport.runtime.bundle import FORMAT_FILES
from torchport.runtime.cli import main as torchport
from torchport.runtime.options import positive_int

BUNDLES_DIR = Path("bundles")
FORMATS = ["--formats", ",".join(FORMAT_FILES)]
STAR98_CSV = BUNDLES_DIR / "star98.csv"
BUNDLES = {
    "seed": [],
    "mlr-mlp": ["--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "32,32"],
    "wide-mlp": ["--data", str(STAR98_CSV), "--target", "PCTAF,PCTCHRT,PCTYRRND,PTRATIO", "--model", "mlp",
                 "--hidden", "128,128", "--optimizer", "adam", "--epochs", "300"],
}
# Options of both `train` and `export`, per model. None are needed: the default parity criterion scales
# with the computation (the wide MLP's float32 sums over 128 units differ by up to about 2e-4 in its
# percent targets, within a few times float32 torch's own error there).
CHECK_OPTIONS: dict[str, list[str]] = {}


def write_star98(path: Path) -> None:
    """statsmodels' star98 table (303 California school districts, shipped with statsmodels), its first 20
    columns: the data of the wide reference MLP."""
    import statsmodels.api as sm
    from torchport.runtime.files import atomic_write
    frame = sm.datasets.star98.load_pandas().data.iloc[:, :20]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_name() -> str:
    """A folder name for this machine: CPU model, family/model, usable CPUs, and the GPU if any."""
    cpu = cpu_description()
    parts = [_slug(re.sub(r"\(r\)|\(tm\)|processor|cpu", "", cpu.model.lower())),
             f"f{cpu.cpu_family}m{cpu.cpuid_model}", f"{cpu.usable_cpus}cpu"]
    return "-".join(parts + [_slug(g.name) for g in gpu_description()[:1]])


def reference_bundles() -> list[str] | int:
    """The three reference bundles' paths, each trained (or given the formats it lacks) where needed; the
    exit code of the `torchport` command that failed instead."""
    bundles = []
    for name, options in BUNDLES.items():
        path = BUNDLES_DIR / name
        command = None
        if not (path / "manifest.json").exists():
            if str(STAR98_CSV) in options and not STAR98_CSV.exists():
                write_star98(STAR98_CSV)
            command = ["train", *options, *FORMATS, "--out", str(path), "--no-progress"]
        elif not all((path / file).exists() for file in FORMAT_FILES.values()):
            command = ["export", str(path), *FORMATS, "--force"]
        command = command and command + CHECK_OPTIONS.get(name, [])
        if command:
            made = subprocess.run([sys.executable, "-m", "torchport.runtime.cli", *command])
            if made.returncode:
                return made.returncode
        bundles.append(str(path))
    return bundles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.benchmarks.compare_backends", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="passed on to `torchport bench`: a short run")
    parser.add_argument("--threads", type=positive_int, help="passed on to `torchport bench`")
    args, bench_options = parser.parse_known_args(argv)
    bundles = reference_bundles()
    if isinstance(bundles, int):
        return bundles
    suffix = "-quick" * args.quick + (f"-threads{args.threads}" if args.threads else "")
    bench_options += ["--quick"] * args.quick + (["--threads", str(args.threads)] if args.threads else [])
    out = RESULTS_DIR / (machine_name() + suffix)
    return torchport(["bench", *bundles, "--out", str(out), *bench_options])


if __name__ == "__main__":
    sys.exit(main())
