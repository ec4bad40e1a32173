"""A training run's progress, shown by time rather than by epoch: a tqdm bar on stderr (``progress=True``) or
the caller's function (``progress=callable``, given a ``Progress``), at most every REFRESH_SECONDS and at
least at every epoch's end that comes later than that, so a long epoch still moves the display."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

REFRESH_SECONDS = 0.5


@dataclass(frozen=True)
class Progress:
    """Where a run is: epochs done (with the fraction of the current one), of how many, the latest
    training loss and validation loss (None until there is one)."""

    epoch: float
    epochs: int
    loss: float | None
    val_loss: float | None


class Reporter:
    """Shows progress for one fit; ``due()`` says whether the display is older than REFRESH_SECONDS."""

    def __init__(self, progress: bool | Callable[[Progress], Any], epochs: int, start: int = 0):
        self.epochs = epochs
        self._call = progress if callable(progress) else None
        self._bar = None
        if progress is True:
            from tqdm import tqdm
            self._bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, mininterval=0,
                             leave=True, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.4g}/{total_fmt} "
                             "epochs [{elapsed}<{remaining}{postfix}]")
            self._bar.n = start
        self._shown = 0.0

    @property
    def active(self) -> bool:
        return self._bar is not None or self._call is not None

    def due(self) -> bool:
        return self.active and time.monotonic() - self._shown >= REFRESH_SECONDS

    def show(self, epoch: float, loss: float | None, val_loss: float | None = None) -> None:
        self._shown = time.monotonic()
        if self._call is not None:
            self._call(Progress(epoch, self.epochs, loss, val_loss))
        if self._bar is not None:
            self._bar.n = min(epoch, self.epochs)
            text = "" if loss is None else f"loss {loss:.6g}" + ("" if val_loss is None else f" val {val_loss:.6g}")
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
