"""The bundle's report folder: the inference table as text and the training plots as PNGs. It is written into
the bundle's staging directory, which is published whole, so its files need no temp-then-rename of their own."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from torchport.runtime.intervals import T_METHOD, IntervalRecord, half_widths
from torchport.train.calibration import REPORT_LEVEL
from torchport.train.datasets import Dataset
from torchport.train.estimator import Regressor
from torchport.train.inference import format_inference
from torchport.train.record import TrainingRecord

REPORT_DIR = "report"
INFERENCE_FILE = f"{REPORT_DIR}/inference.txt"


def write_report(bundle_dir: Path, reg: Regressor, data: Dataset, record: TrainingRecord,
                 plots: bool = True, intervals: IntervalRecord | None = None) -> list[str]:
    """Write report/inference.txt (when the record has an inference table) and, with ``plots``, the plots
    into ``bundle_dir``/report/ (with the band of the ``intervals`` at REPORT_LEVEL, when given); returns the
    bundle-relative names written (no folder when there are none)."""
    bundle_dir = Path(bundle_dir)
    folder = bundle_dir / REPORT_DIR
    folder.mkdir(exist_ok=True)
    written = []
    if record.inference is not None:
        (bundle_dir / INFERENCE_FILE).write_text(format_inference(record.inference) + "\n", encoding="utf-8")
        written.append(INFERENCE_FILE)
    if plots:
        from torchport.train.plots import write_plots  # matplotlib is slow to import: only when plotting
        band = None if intervals is None else (
            f"{REPORT_LEVEL:.0%} prediction interval ({'t' if intervals.method == T_METHOD else 'conformal'})",
            lambda X: half_widths(intervals, np.asarray(X, np.float64), REPORT_LEVEL))
        paths = write_plots(folder, data.X, data.y, reg.predict, reg.loss_history_, data.feature_names,
                            data.target_names, band)
        written += [f"{REPORT_DIR}/{p.name}" for p in paths]
    if not written:
        folder.rmdir()
    return written
