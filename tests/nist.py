"""NIST StRD's linear least squares datasets (tests/data/nist) for the tests: their certified values, their
design as float64 columns, NIST's log relative error, and an exact reference fit in rational arithmetic."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from conftest import DATA

FOLDER = DATA / "nist"
CERTIFIED = json.loads((FOLDER / "certified.json").read_text())
NAMES = [name for name in CERTIFIED if name != "source"]


def digits(value: float, certified: float) -> float:
    """StRD's log relative error (LRE): how many significant digits agree; against a certified zero, the
    log absolute error; capped at 15 (what a 15-digit certified value can show)."""
    if value == certified:
        return 15.0
    if certified == 0:
        return min(15.0, -math.log10(abs(value)))
    return min(15.0, -math.log10(abs(value - certified) / abs(certified)))


def raw_rows(name: str) -> list[list[str]]:
    """The data file's rows as the strings NIST printed (y first), without the header."""
    with open(FOLDER / CERTIFIED[name]["file"], newline="") as f:
        return list(csv.reader(f))[1:]


@dataclass(frozen=True)
class Table:
    """One dataset as a model sees it: float64 features (powers computed in float64 where the model is a
    polynomial), the target, the names, and whether the model has an intercept."""

    name: str
    X: np.ndarray
    y: np.ndarray
    features: list[str]
    intercept: bool

    def csv(self, path: Path) -> Path:
        """Write the table as a CSV file with every float64 value spelled exactly (repr)."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["y", *self.features])
            for yi, row in zip(self.y, self.X):
                w.writerow([repr(float(yi)), *(repr(float(v)) for v in row)])
        return path


def table(name: str) -> Table:
    """The dataset ``name`` in float64: its columns, or x, x^2, .., x^k for a polynomial model."""
    c = CERTIFIED[name]
    values = np.array([[float(v) for v in row] for row in raw_rows(name)])
    y = values[:, 0]
    if "powers" in c:
        x = values[:, 1]
        X = np.column_stack([x ** k for k in range(1, c["powers"]["degree"] + 1)])
    else:
        X = values[:, 1:]
    return Table(name, X, y, list(c["features"]), c.get("intercept", True))


def exact_fit(X: list[list[Fraction]], y: list[Fraction], intercept: bool) -> dict:
    """Least squares in exact rational arithmetic (normal equations, Gauss-Jordan): estimates, standard
    errors, residual SD and R^2 (uncentred without an intercept), as floats."""
    rows = [[Fraction(1), *r] if intercept else list(r) for r in X]
    n, p = len(rows), len(rows[0])
    gram = [[sum(r[i] * r[j] for r in rows) for j in range(p)] for i in range(p)]
    rhs = [sum(r[i] * v for r, v in zip(rows, y)) for i in range(p)]
    inverse = _inverse(gram)
    beta = [sum(inverse[i][j] * rhs[j] for j in range(p)) for i in range(p)]
    ss_res = sum((v - sum(b * a for b, a in zip(beta, r))) ** 2 for r, v in zip(rows, y))
    mean = sum(y) / n if intercept else Fraction(0)
    ss_tot = sum((v - mean) ** 2 for v in y)
    s2 = ss_res / (n - p)
    return {"estimate": [float(b) for b in beta],
            "std_error": [math.sqrt(s2 * inverse[i][i]) for i in range(p)],
            "residual_sd": math.sqrt(s2), "r_squared": float(1 - ss_res / ss_tot),
            "ss_residual": float(ss_res), "ss_regression": float(ss_tot - ss_res)}


def _inverse(m: list[list[Fraction]]) -> list[list[Fraction]]:
    p = len(m)
    a = [row[:] + [Fraction(int(i == j)) for j in range(p)] for i, row in enumerate(m)]
    for i in range(p):
        pivot = next(r for r in range(i, p) if a[r][i] != 0)
        a[i], a[pivot] = a[pivot], a[i]
        lead = a[i][i]
        a[i] = [v / lead for v in a[i]]
        for r in range(p):
            if r != i and a[r][i] != 0:
                f = a[r][i]
                a[r] = [u - f * v for u, v in zip(a[r], a[i])]
    return [row[p:] for row in a]


def exact_fit_of_the_data(name: str) -> dict:
    """The exact least-squares fit of NIST's decimal data (what NIST certifies)."""
    c = CERTIFIED[name]
    rows = [[Fraction(v) for v in row] for row in raw_rows(name)]
    y = [r[0] for r in rows]
    if "powers" in c:
        X = [[r[1] ** k for k in range(1, c["powers"]["degree"] + 1)] for r in rows]
    else:
        X = [r[1:] for r in rows]
    return exact_fit(X, y, c.get("intercept", True))


def exact_fit_of_the_table(t: Table) -> dict:
    """The exact least-squares fit of the float64 table itself (each float64 value taken as the rational it
    is): the best any float64 solver can be asked for."""
    X = [[Fraction(float(v)) for v in row] for row in t.X]
    return exact_fit(X, [Fraction(float(v)) for v in t.y], t.intercept)


def float64_filip(folder: Path) -> tuple[Table, Path, dict]:
    """NIST's Filip (which float32 cannot hold) through `torchport train`, ONNX only: its table, the bundle's
    folder and its manifest, checked to be float64."""
    from conftest import run_cli
    t = table("filip")
    out = folder / "filip"
    proc = run_cli("train", "--data", str(t.csv(folder / "filip.csv")), "--target", "y", "--out", str(out),
                   "--no-progress", "--no-plots", "--formats", "onnx")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["dtype"] == "float64"
    return t, out, manifest
