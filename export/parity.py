"""The parity criterion and its report: how far each float32 backend's answers are from a float64 run of
the same module, whether that is float32 rounding or an error, and the worst element in words. Plain numpy;
verify.py runs the backends.

A float32 computation rounds at about 6e-8 of the numbers it works with, and those may be far larger than
its answer (an output near zero made from large terms, a target in the millions), so no fixed tolerance in
the target's units tells rounding from error at every scale. The reference instead is the same module in
float64 on the same float32 inputs, and float32 torch's own distance from it (per target, over every row
checked) measures how much rounding this computation makes: a backend passes where its distance stays
within ``multiple`` times that, plus ``floor_ulps`` float32 ulps of the target's largest answer or, when
larger, of the offset the module's target scaling adds last (for the case where torch happens to round
little: an answer near zero made by that addition still carries the offset's rounding). Every candidate is held to the same bound, whichever backends
there are."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchport.runtime.bundle import PairResult, ParityReport, WorstElement
from torchport.runtime.errors import InputError, ParityError

REFERENCE = "float64"
SCALE_BACKEND = "torch"  # float32 torch's distance from the float64 run sets the scale of rounding
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
# A float64 bundle's rounding scale: float32 torch's error (the same computation rounded at float32) times this
EPS_RATIO = EPS64 / EPS32


@dataclass(frozen=True)
class Tolerance:
    """The parity criterion for every command and function that checks parity: within ``multiple`` times
    float32 torch's own error plus ``floor_ulps`` ulps (the default), or, with ``atol`` and ``rtol`` given,
    ``|candidate - float64| <= atol + rtol * |float64|``."""
    multiple: float = 8.0
    floor_ulps: float = 16.0
    atol: float | None = None
    rtol: float | None = None

    def __post_init__(self):
        for name in ("multiple", "floor_ulps", "atol", "rtol"):
            value = getattr(self, name)
            if value is None and name in ("atol", "rtol"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise InputError(f"{name} must be a finite number >= 0; got {value!r}", parameter=name)
        if (self.atol is None) != (self.rtol is None):
            raise InputError("give atol and rtol together (a fixed tolerance), or neither (the default criterion)",
                             parameter="atol" if self.atol is None else "rtol")

    @property
    def fixed(self) -> bool:
        return self.atol is not None

    def describe(self, dtype: str = "float32") -> str:
        """The criterion in words, for a bundle computing in ``dtype``."""
        if self.fixed:
            return f"|backend - float64| <= {self.atol:g} + {self.rtol:g} * |float64|"
        if dtype == "float64":
            return (f"|backend - float64| <= {self.multiple:g} x float64 rounding (float32 torch's largest error "
                    f"x 2^-29) + {self.floor_ulps:g} float64 ulps of the largest answer (or target offset), per "
                    "target")
        return (f"|backend - float64| <= {self.multiple:g} x float32 torch's largest error + "
                f"{self.floor_ulps:g} float32 ulps of the largest answer (or target offset), per target")

    def bounds(self, reference: np.ndarray, torch_error: np.ndarray, offset: np.ndarray | None = None,
               eps: float = EPS32) -> np.ndarray:
        """The largest distance from the float64 answers allowed, elementwise (broadcast to ``reference``);
        ``offset``: per target, the magnitude of the constant the module adds last (None: unknown); ``eps``:
        the machine epsilon of the bundle's dtype (its ulps make the floor)."""
        ref = np.abs(np.asarray(reference, np.float64))
        if self.fixed:
            return self.atol + self.rtol * ref
        scale = ref.max(axis=0, initial=0.0)
        if offset is not None:
            scale = np.maximum(scale, offset)
        floor = self.floor_ulps * eps * scale
        return np.broadcast_to(self.multiple * torch_error + floor, ref.shape)


def column_errors(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The largest |candidate - reference| per column (NaN answers count as infinitely far)."""
    diff = np.abs(np.asarray(candidate, np.float64) - np.asarray(reference, np.float64))
    return np.where(np.isnan(diff), np.inf, diff).max(axis=0, initial=0.0)


def compare(candidate_name: str, reference: np.ndarray, candidate: np.ndarray, torch_error: np.ndarray,
            labels: list[tuple[str, int]], tolerance: Tolerance, offset: np.ndarray | None = None,
            eps: float = EPS32) -> PairResult:
    """One backend's result against the float64 answers: its largest absolute, relative and scaled errors,
    its error over float32 torch's, and the element furthest out of bounds. ``labels[i]`` is (case name, row
    within the case) of stacked row ``i``."""
    a, ref = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    diff = np.abs(a - ref)
    diff = np.where(np.isnan(diff), np.inf, diff)  # a NaN answer is as far out as can be
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    bound = tolerance.bounds(ref, torch_error, offset, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(bound > 0, diff / bound, np.where(diff > 0, np.inf, 0.0))
        vs_torch = np.where(torch_error > 0, diff.max(axis=0, initial=0.0) / torch_error, np.nan)
    worst = np.unravel_index(int(np.argmax(share)), share.shape)
    case, row = labels[worst[0]]
    finite_ratio = vs_torch[np.isfinite(vs_torch)]
    return PairResult(REFERENCE, candidate_name, float(diff.max()), float(rel.max()),
                      float((diff / np.maximum(1.0, np.abs(ref))).max()), bool(np.all(diff <= bound)),
                      WorstElement(case, row, int(worst[1]), float(ref[worst]), float(a[worst]), float(diff[worst]),
                                   float(rel[worst])),
                      float(finite_ratio.max()) if finite_ratio.size else None, float(share.max()))


def compare_all(outputs: dict[str, np.ndarray], reference: np.ndarray, labels: list[tuple[str, int]],
                tolerance: Tolerance, torch_error: np.ndarray | None = None, offset: np.ndarray | None = None,
                eps: float = EPS32) -> tuple[list[PairResult], np.ndarray, np.ndarray]:
    """Every backend in ``outputs`` (float32 torch among them, as SCALE_BACKEND) against the float64
    answers; returns the results, float32 torch's error per target (``torch_error`` if the caller measured
    it on more rows) and the bound per target. ``offset``, ``eps``: as in ``Tolerance.bounds``."""
    if torch_error is None:
        torch_error = column_errors(outputs[SCALE_BACKEND], reference)
    results = [compare(name, reference, out, torch_error, labels, tolerance, offset, eps)
               for name, out in outputs.items() if out.shape == reference.shape]
    bound = tolerance.bounds(reference, torch_error, offset, eps).max(axis=0, initial=0.0)
    return results, torch_error, bound


def _g(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3g}"


def describe_worst(p: PairResult) -> str:
    """The worst element of one backend, in words."""
    w = p.worst
    value = "nan" if w.value is None else f"{w.value:.9g}"
    reference = "nan" if w.reference is None else f"{w.reference:.9g}"
    ratio = "" if p.vs_torch is None else f", {p.vs_torch:.3g} times float32 torch's largest error"
    return (f"{p.candidate}: worst element at row {w.row}, column {w.column} of {w.case!r}: {p.reference} "
            f"{reference}, {p.candidate} {value}, abs error {_g(w.abs)}, rel error {_g(w.rel)}{ratio}")


def format_report(report: ParityReport) -> str:
    """One line per backend plus a verdict, for the terminal."""
    what = report.criterion or f"atol {report.atol:g}, rtol {report.rtol:g}"
    lines = [f"parity over {report.rows} rows ({', '.join(c.name for c in report.cases)}), "
             f"each backend against {report.reference or 'torch'}: {what}:"]
    for p in report.pairs:
        ratio = "" if p.vs_torch is None else f" ({p.vs_torch:.2g}x torch's)"
        share = "" if p.of_bound is None else f", {p.of_bound:.2g} of the bound"
        lines.append(f"  max |{p.candidate} - {p.reference}| = {_g(p.max_abs)}{ratio}{share}   "
                     f"{'ok' if p.passed else 'FAIL: ' + describe_worst(p)}")
    lines += [f"  {problem}" for problem in report.problems]
    lines.append("parity: " + ("PASSED" if report.passed else "FAILED"))
    return "\n".join(lines)


def raise_if_failed(report: ParityReport) -> ParityReport:
    """``report`` if it passed, else a ParityError listing the problems and each failing backend's worst
    element."""
    if report.passed:
        return report
    lines = list(report.problems)
    lines += [describe_worst(p) + f" (criterion: {report.criterion or f'atol {report.atol:g} + rtol {report.rtol:g} * |ref|'})"
              for p in report.pairs if not p.passed]
    raise ParityError("parity failed:\n  " + "\n  ".join(lines))
