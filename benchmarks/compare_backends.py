"""Reference benchmark: train the seed's linear bundle and a 3-feature MLP bundle (if not there yet), then
run `torchport bench` on both into benchmarks/results/<machine>/ (bench.json, bench.md, bench.png).

usage: .venv/bin/python benchmarks/compare_backends.py [--quick] [--threads N] [other `torchport bench` options]
(--quick and --threads N add -quick and -threadsN to the folder's name)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from torchport.export.bench import cpu_description, gpu_description
from torchport.runtime.cli import main as torchport

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = {
    "seed": [],
    "mlr-mlp": ["--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "32,32"],
}


def machine_name() -> str:
    """A folder name for this machine: CPU model, family/model, usable CPUs, and the GPU if any."""
    cpu = cpu_description()
    name = re.sub(r"\(r\)|\(tm\)|processor|cpu", "", cpu["model"].lower())
    parts = [re.sub(r"[^a-z0-9]+", "-", name).strip("-"), f"f{cpu.get('cpu_family')}m{cpu.get('cpuid_model')}",
             f"{cpu['usable_cpus']}cpu"]
    parts += [re.sub(r"[^a-z0-9]+", "-", g["name"].lower()).strip("-") for g in gpu_description()[:1]]
    return "-".join(parts)


def main(argv: list[str]) -> int:
    bundles = []
    for name, options in BUNDLES.items():
        path = ROOT / "bundles" / name
        if not (path / "manifest.json").exists():
            subprocess.run([str(Path(sys.executable).parent / "torchport"), "train", *options, "--out", str(path),
                            "--no-progress"], check=True)
        bundles.append(str(path.relative_to(ROOT)))
    suffix = "-quick" * ("--quick" in argv)
    if "--threads" in argv[:-1]:
        suffix += f"-threads{argv[argv.index('--threads') + 1]}"
    out = Path("benchmarks/results") / (machine_name() + suffix)
    return torchport(["bench", *bundles, "--out", str(out), *argv])


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
