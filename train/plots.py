"""Report plots as PNG files: the seed's regression plot, the training loss curve, residuals against fitted
values and, for several features, predicted against observed. Drawn on matplotlib's Agg canvas (no display,
no pyplot global state), so they work on servers and in threads."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from torchport.train.metrics import r2_score

DPI = 120
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _columns(values, rows: int) -> np.ndarray:
    """Values as a float64 (rows, targets) array."""
    return np.asarray(values, np.float64).reshape(rows, -1)


def _points(ax, x: np.ndarray, y: np.ndarray, j: int, label: str) -> None:
    """Scatter one target's points in its colour (semi-transparent, so overlaps show)."""
    ax.scatter(x, y, s=28, color=COLORS[j % len(COLORS)], alpha=0.8, label=label)


def _finish(fig: Figure, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label the axes, add the legend and save."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG (into the bundle's staging directory, which is published whole)."""
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _r2_label(observed: np.ndarray, predicted: np.ndarray) -> str:
    """R^2 for a legend; n/a where it is undefined (a constant target)."""
    r2 = r2_score(observed, predicted)
    return "n/a" if np.isnan(r2) else f"{r2:.4f}"


Band = tuple[str, Callable[[np.ndarray], np.ndarray]]  # (what it is, raw features -> half-widths per target)


def regression_plot(x: np.ndarray, y: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], x_name: str,
                    y_names: list[str], path: Path, band: Band | None = None) -> Path:
    """Data points and the fitted curve over the data's range, R^2 in the legend (one feature), with the
    prediction interval's ``band`` about it when given."""
    fig, ax = _figure()
    x = np.asarray(x, np.float64).ravel()
    y = _columns(y, len(x))
    grid = np.linspace(x.min(), x.max(), 200)
    line = _columns(predict(grid.reshape(-1, 1)), len(grid))
    fitted = _columns(predict(x.reshape(-1, 1)), len(x))
    half = _columns(band[1](grid.reshape(-1, 1)), len(grid)) if band else None
    for j, name in enumerate(y_names):
        if half is not None:  # first, so that the points are drawn over it
            ax.fill_between(grid, line[:, j] - half[:, j], line[:, j] + half[:, j], color="tab:red", alpha=0.15,
                            linewidth=0, label=band[0] + ("" if len(y_names) == 1 else f" ({name})"))
        _points(ax, x, y[:, j], j, f"{name} (observed)")
        ax.plot(grid, line[:, j], color="tab:red" if len(y_names) == 1 else COLORS[j % len(COLORS)], linewidth=2,
                label=f"fitted line{'' if len(y_names) == 1 else f' ({name})'}, "
                      f"R$^2$ = {_r2_label(y[:, j], fitted[:, j])}")
    return _finish(fig, ax, x_name, ", ".join(y_names), f"{', '.join(y_names)} ~ {x_name}", path)


def loss_curve(losses: np.ndarray, path: Path) -> Path:
    """Training loss per epoch on a log scale."""
    fig, ax = _figure()
    losses = np.asarray(losses, np.float64)
    shown = np.clip(losses, np.finfo(np.float64).tiny, None)
    ax.plot(np.arange(1, len(losses) + 1), shown, color="tab:blue", linewidth=1.5,
            label=f"MSE loss (final {losses[-1]:.6g})")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, "epoch", "training loss (MSE, log scale)", "training loss", path)


def residuals_plot(fitted: np.ndarray, observed: np.ndarray, y_names: list[str], path: Path) -> Path:
    """Residuals (observed - fitted) against fitted values, with the zero line."""
    fig, ax = _figure()
    fitted, observed = _columns(fitted, len(fitted)), _columns(observed, len(fitted))
    for j, name in enumerate(y_names):
        _points(ax, fitted[:, j], observed[:, j] - fitted[:, j], j, name)
    ax.axhline(0.0, color="0.3", linewidth=1, linestyle="--")
    return _finish(fig, ax, f"fitted {', '.join(y_names)}", "residual (observed - fitted)",
                   "residuals against fitted values", path)


def predicted_vs_observed(observed: np.ndarray, predicted: np.ndarray, y_names: list[str], path: Path,
                          band: tuple[str, np.ndarray] | None = None) -> Path:
    """Predictions against observations with the identity line, R^2 in the legend (several features), with
    each prediction's interval as an error bar when ``band`` (what it is, half-widths) is given."""
    fig, ax = _figure()
    observed, predicted = _columns(observed, len(observed)), _columns(predicted, len(observed))
    for j, name in enumerate(y_names):
        if band is not None:
            ax.errorbar(observed[:, j], predicted[:, j], yerr=band[1][:, j], fmt="none",
                        ecolor=COLORS[j % len(COLORS)], alpha=0.3, label=band[0] + ("" if len(y_names) == 1 else
                                                                                    f" ({name})"))
        _points(ax, observed[:, j], predicted[:, j], j,
                f"{name}, R$^2$ = {_r2_label(observed[:, j], predicted[:, j])}")
    lo = float(min(observed.min(), predicted.min()))
    hi = float(max(observed.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1, linestyle="--", label="predicted = observed")
    return _finish(fig, ax, f"observed {', '.join(y_names)}", f"predicted {', '.join(y_names)}",
                   "predicted against observed", path)


def write_plots(folder: Path, X: np.ndarray, y: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                losses: np.ndarray, feature_names: list[str], target_names: list[str],
                band: Band | None = None) -> list[Path]:
    """Every plot that fits the data into ``folder``: regression.png (one feature) or predicted_vs_observed.png
    (several), with the prediction intervals' ``band`` when given, loss.png and residuals.png; returns the
    paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    X = np.asarray(X, np.float64)
    y, fitted = _columns(y, len(X)), _columns(predict(X), len(X))
    written = []
    if X.shape[1] == 1:
        written.append(regression_plot(X[:, 0], y, predict, feature_names[0], target_names, folder / "regression.png",
                                       band))
    else:
        bars = (band[0], _columns(band[1](X), len(X))) if band else None
        written.append(predicted_vs_observed(y, fitted, target_names, folder / "predicted_vs_observed.png", bars))
    written.append(loss_curve(losses, folder / "loss.png"))
    written.append(residuals_plot(fitted, y, target_names, folder / "residuals.png"))
    return written
