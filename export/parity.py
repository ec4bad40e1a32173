"""The parity criterion and its report: how far one backend's answers are from another's, whether that is
within tolerance, and the worst element in words. Plain numpy; verify.py runs the backends."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchport.runtime.bundle import PairResult, ParityReport, WorstElement
from torchport.runtime.errors import InputError, ParityError


@dataclass(frozen=True)
class Tolerance:
    """``|candidate - reference| <= atol + rtol * |reference|`` everywhere: the defaults for every command
    and function that checks parity."""
    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self):
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise InputError(f"{name} must be a finite number >= 0; got {value!r}", parameter=name)


def compare(reference_name: str, candidate_name: str, reference: np.ndarray, candidate: np.ndarray,
            labels: list[tuple[str, int]], tolerance: Tolerance) -> PairResult:
    """One pair's result: the largest absolute, relative and scaled differences, and the element furthest
    out of tolerance. ``labels[i]`` is (case name, row within the case) of stacked row ``i``."""
    a, ref = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    diff = np.abs(a - ref)
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    excess = diff - (tolerance.atol + tolerance.rtol * np.abs(ref))
    excess = np.where(np.isnan(excess), np.inf, excess)  # a NaN answer is as far out as can be
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    case, row = labels[worst[0]]
    return PairResult(reference_name, candidate_name, float(diff.max()), float(rel.max()),
                      float((diff / np.maximum(1.0, np.abs(ref))).max()), bool(np.all(excess <= 0)),
                      WorstElement(case, row, int(worst[1]), float(ref[worst]), float(a[worst]), float(diff[worst]),
                                   float(rel[worst])))


def _g(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3g}"


def describe_worst(p: PairResult) -> str:
    """The worst element of one pair, in words."""
    w = p.worst
    value = "nan" if w.value is None else f"{w.value:.9g}"
    reference = "nan" if w.reference is None else f"{w.reference:.9g}"
    return (f"{p.name}: worst element at row {w.row}, column {w.column} of {w.case!r}: {p.reference} "
            f"{reference}, {p.candidate} {value}, abs error {_g(w.abs)}, rel error {_g(w.rel)}")


def format_report(report: ParityReport) -> str:
    """One line per pair plus a verdict, for the terminal."""
    lines = [f"parity over {report.rows} rows ({', '.join(c.name for c in report.cases)}), "
             f"atol {report.atol:g}, rtol {report.rtol:g}:"]
    for p in report.pairs:
        lines.append(f"  max |{p.reference} - {p.candidate}| = {_g(p.max_abs)}   max rel = {_g(p.max_rel)}   "
                     f"{'ok' if p.passed else 'FAIL: ' + describe_worst(p)}")
    lines += [f"  {problem}" for problem in report.problems]
    lines.append("parity: " + ("PASSED" if report.passed else "FAILED"))
    return "\n".join(lines)


def raise_if_failed(report: ParityReport) -> ParityReport:
    """``report`` if it passed, else a ParityError listing the problems and each failing pair's worst element."""
    if report.passed:
        return report
    lines = list(report.problems)
    lines += [describe_worst(p) + f" (tolerance atol {report.atol:g} + rtol {report.rtol:g} * |ref|)"
              for p in report.pairs if not p.passed]
    raise ParityError("parity failed:\n  " + "\n  ".join(lines))
