"""The bundle's report folder: the inference table as text and the training plots as PNGs, each listed in the
manifest with its sha256 like every other file of the bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torchport.runtime.bundle import read_checked
from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.inference import format_inference

REPORT_DIR = "report"
INFERENCE_FILE = f"{REPORT_DIR}/inference.txt"


def report_writer(reg: Regressor, data: Dataset, training: dict, plots: bool = True) -> Callable[[Path], list[str]]:
    """A callback for write_bundle: writes report/ into the bundle directory it is given and returns the
    bundle-relative names of the files it wrote."""
    def write(bundle_dir: Path) -> list[str]:
        folder = Path(bundle_dir) / REPORT_DIR
        folder.mkdir(exist_ok=True)
        written = []
        inference = training.get("inference") or {}
        if "targets" in inference:
            (Path(bundle_dir) / INFERENCE_FILE).write_text(format_inference(inference) + "\n", encoding="utf-8")
            written.append(INFERENCE_FILE)
        if plots:
            from torchport.train.plots import write_plots
            paths = write_plots(folder, data.X, data.y, reg.predict, reg.loss_history_,
                                data.feature_names, data.target_names)
            written += [f"{REPORT_DIR}/{p.name}" for p in paths]
        if not written:
            folder.rmdir()
        return written
    return write


def report_copier(bundle: str | Path, manifest: dict) -> Callable[[Path], list[str]]:
    """A callback for write_bundle that carries an existing bundle's report files (sha256-checked) over."""
    names = [name for name in manifest["files"] if name.startswith(f"{REPORT_DIR}/")]
    contents = {name: read_checked(bundle, name, manifest) for name in names}

    def copy(bundle_dir: Path) -> list[str]:
        for name, data in contents.items():
            target = Path(bundle_dir) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return list(contents)
    return copy
