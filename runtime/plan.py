"""How the Predictor runs a numpy batch of each size: a ``Plan`` maps row counts to a ``Regime`` (which graph
file, how many threads, through bound buffers or zero-copy, whole or in chunks). The default plan is a set
of rules from the model's shape; ``Predictor.tune`` measures the regimes on the machine where it runs and
keeps the fastest at each size (docs/hot-path.md says which regimes there are and why)."""
from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnxruntime as ort

from torchport.runtime.cpus import usable_cpus
from torchport.runtime.errors import InputError
from torchport.runtime.jsonfields import FLAG, INT, NUMBER, TEXT, items, present, scalar, values

PLAN_FORMAT = "torchport.plan"
PLAN_FORMAT_VERSION = 1
ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"  # Regime.runtime
CUSTOM = 0  # Regime.threads of the one session built from the caller's sess_options


@dataclass(frozen=True)
class Regime:
    """One way to run a batch. ``threads``: the intra-op threads of the session on ``graph`` (1: torchport's
    one-thread options; CUSTOM: the caller's sess_options). ``bound``: through a pooled slot's bound
    buffers (one copy in, one out). ``chunk_rows`` > 0: batches of more than ``chunk_from`` rows run in
    chunks of that many rows, shared by ``workers`` threads (the calling thread and helpers). ``spin``: the
    session's threads spin between the parallel parts of a run and a while after it, instead of sleeping."""
    graph: str
    threads: int = 1
    bound: bool = False
    chunk_rows: int = 0
    chunk_from: int = 0
    workers: int = 1
    spin: bool = False
    runtime: str = ONNXRUNTIME
    hint: str = ""
    precision: str = "f32"

    @property
    def openvino(self) -> bool:
        return self.runtime == OPENVINO

    def describe(self) -> str:
        """The regime in a few words, for tables and notes."""
        if self.openvino:
            return f"{self.graph}, OpenVINO {self.hint.lower()} hint, {self.precision}, {self.threads} threads"
        threads = "sess_options" if self.threads == CUSTOM else f"{self.threads} thread{'s' * (self.threads > 1)}"
        if self.spin:
            threads += " (spinning)"
        how = "bound buffers" if self.bound else "zero-copy"
        if self.chunk_rows:
            how += f", chunks of {self.chunk_rows} rows over {self.chunk_from}"
            if self.workers > 1:
                how += f" on {self.workers} threads"
        return f"{self.graph}, {threads}, {how}"

    def to_json(self) -> dict[str, Any]:
        return {"graph": self.graph, "threads": self.threads, "bound": self.bound, "chunk_rows": self.chunk_rows,
                "chunk_from": self.chunk_from, "workers": self.workers, "spin": self.spin, "runtime": self.runtime,
                "hint": self.hint, "precision": self.precision}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Regime":
        v = values(obj, where, {"graph": TEXT, "threads": INT, "bound": FLAG, "chunk_rows": INT, "chunk_from": INT,
                                "workers": INT, "spin": FLAG})
        v.update(present(obj, where, {"runtime": TEXT, "hint": TEXT, "precision": TEXT}))  # later than version 1
        if v.get("runtime", ONNXRUNTIME) not in (ONNXRUNTIME, OPENVINO) or v.get("precision", "f32") not in ("f32", "bf16"):
            raise InputError(f"{where}: runtime {v.get('runtime')!r} or precision {v.get('precision')!r} is not one "
                             f"torchport knows ({ONNXRUNTIME!r} or {OPENVINO!r}; 'f32' or 'bf16'); measure the plan "
                             "again with this torchport", parameter="plan")
        return cls(**v)


@dataclass(frozen=True)
class Step:
    """From ``from_rows`` rows on (up to the next step), batches run in ``regime``."""
    from_rows: int
    regime: Regime


@dataclass(frozen=True)
class Timing:
    """One measured median: ``regime`` at ``rows`` rows, seconds per call (NaN/inf check included);
    ``again``: a second measurement, of the fastest against the regime it would replace."""
    rows: int
    regime: Regime
    median_s: float
    again: bool = False


@dataclass(frozen=True)
class Plan:
    """The regime for every batch size: ``steps`` sorted by ``from_rows``, the first from 1 row. ``source``
    is "rules" or "measured"; a measured plan keeps what it measured (``timings``), where (``machine``),
    on which graphs (``models``: their sha256) and how long measuring took (``measured_s``). ``precision``
    is "f32", or "bf16" for a plan asked to run in reduced precision: ``error`` then holds, per target, the
    largest error of its bf16 regimes on the golden cases against their float64 answers, and ``bound`` what
    answers are held to (self_check included). ``notes`` say where the plan does not run as written (an
    OpenVINO regime run by ONNX Runtime where openvino is missing)."""
    steps: tuple[Step, ...]
    source: str = "rules"
    machine: str = ""
    models: tuple[str, ...] = ()
    timings: tuple[Timing, ...] = ()
    measured_s: float = 0.0
    precision: str = "f32"
    error: tuple[float, ...] = ()
    bound: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()
    _starts: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0].from_rows != 1:
            raise InputError("a plan's first step must start at 1 row")
        starts = tuple(s.from_rows for s in self.steps)
        if list(starts) != sorted(set(starts)):
            raise InputError(f"a plan's steps must start at increasing row counts; got {list(starts)}")
        object.__setattr__(self, "_starts", starts)

    def regime(self, rows: int) -> Regime:
        """The regime for a batch of ``rows`` rows (at least 1)."""
        return self.steps[bisect.bisect_right(self._starts, rows) - 1].regime

    def regimes(self) -> list[Regime]:
        """Each regime of the plan once, in the order of the steps."""
        return list(dict.fromkeys(s.regime for s in self.steps))

    def describe(self) -> list[str]:
        """One line per step: the row range and its regime."""
        ends = [s.from_rows - 1 for s in self.steps[1:]] + [None]
        lines = [f"{s.from_rows}-{end if end is not None else ''} rows: {s.regime.describe()}"
                 for s, end in zip(self.steps, ends)]
        if self.precision != "f32":
            lines.append(f"reduced precision ({self.precision}), asked for: largest error on the golden cases "
                         f"{', '.join(f'{e:.3g}' for e in self.error)}; answers held to "
                         f"{', '.join(f'{b:.3g}' for b in self.bound)}")
        return lines + list(self.notes)

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "format_version": PLAN_FORMAT_VERSION, "source": self.source,
                "machine": self.machine, "models": list(self.models), "measured_s": self.measured_s,
                "steps": [{"from_rows": s.from_rows, "regime": s.regime.to_json()} for s in self.steps],
                "timings": [{"rows": t.rows, "regime": t.regime.to_json(), "median_s": t.median_s, "again": t.again}
                            for t in self.timings],
                "precision": self.precision, "error": list(self.error), "bound": list(self.bound),
                "notes": list(self.notes)}

    @classmethod
    def from_json(cls, obj: Any, where: str = "plan") -> "Plan":
        v = values(obj, where, {"format": TEXT, "format_version": INT, "source": TEXT, "machine": TEXT,
                                "models": (list,), "measured_s": NUMBER, "steps": (list,), "timings": (list,)})
        if v["format"] != PLAN_FORMAT or v["format_version"] != PLAN_FORMAT_VERSION:
            raise InputError(f"{where} is not a torchport plan (format {v['format']!r} version "
                             f"{v['format_version']}; expected {PLAN_FORMAT!r} version {PLAN_FORMAT_VERSION})")
        steps = tuple(Step(s["from_rows"], Regime.from_json(s["regime"], f"{where}.steps[{i}].regime"))
                      for i, s in enumerate(items(v["steps"], f"{where}.steps", _step_fields)))
        timings = tuple(Timing(t["rows"], Regime.from_json(t["regime"], f"{where}.timings[{i}].regime"), t["median_s"],
                               t["again"]) for i, t in enumerate(items(v["timings"], f"{where}.timings", _timing_fields)))
        models = items(v["models"], f"{where}.models", scalar(TEXT))
        more = present(obj, where, {"precision": TEXT, "error": (list,), "bound": (list,), "notes": (list,)})
        precision = more.get("precision", "f32")
        if precision not in ("f32", "bf16"):
            raise InputError(f"{where}.precision is {precision!r}; torchport knows 'f32' and 'bf16'", parameter="plan")
        error, bound = (tuple(float(e) for e in items(more.get(k, []), f"{where}.{k}", scalar(NUMBER)))
                        for k in ("error", "bound"))
        notes = items(more.get("notes", []), f"{where}.notes", scalar(TEXT))
        return cls(steps, v["source"], v["machine"], models, timings, float(v["measured_s"]), precision, error, bound,
                   notes)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON (atomically: a temp file renamed into place)."""
        from torchport.runtime.files import write_json  # not at import: a Predictor's cold start skips it
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        """Read a plan written by ``save`` (or `torchport tune --out`)."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path} does not exist; write a plan with `torchport tune BUNDLE --out {path}`",
                             parameter="plan") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path} is not a plan written by torchport tune ({e})", parameter="plan") from None
        return cls.from_json(obj, str(path))


def _step_fields(obj: Any, where: str) -> dict[str, Any]:
    return values(obj, where, {"from_rows": INT, "regime": (dict,)})


def _timing_fields(obj: Any, where: str) -> dict[str, Any]:
    return values(obj, where, {"rows": INT, "regime": (dict,), "median_s": NUMBER, "again": FLAG})


def flops_per_row(kind: str, n_features: int, n_targets: int, hidden: tuple[int, ...] = ()) -> int | None:
    """Multiply-adds of a linear model or an MLP, counted as 2 FLOP each, per row (biases, activations and
    scaling, one operation per value, left out); None for a module torchport did not define."""
    if kind not in ("linear", "mlp"):
        return None
    widths = [n_features, *(hidden if kind == "mlp" else ()), n_targets]
    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


@lru_cache(maxsize=1)
def machine_key() -> str:
    """What a measured plan depends on: the CPU model, the CPUs this process may use, ONNX Runtime's version."""
    import platform  # not at import: a Predictor's cold start skips it
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
                break
    except OSError:
        pass
    return f"{name}; {usable_cpus()} CPUs; onnxruntime {ort.__version__}"


def steps_from_winners(winners: list[tuple[int, Regime, Regime]], slot_rows: int) -> tuple[Step, ...]:
    """Steps from what was fastest at each measured size: ``winners`` holds (rows, the fastest regime, the
    fastest zero-copy one) by increasing rows. Each size's winner holds from the geometric middle between
    it and the size before; a bound regime only up to ``slot_rows`` rows, then that size's zero-copy one."""
    raw: list[Step] = []
    middles = [1] + [math.isqrt(a[0] * b[0]) + 1 for a, b in zip(winners, winners[1:])]
    for i, (rows, best, zero_copy) in enumerate(winners):
        raw.append(Step(middles[i], best))
        end = middles[i + 1] if i + 1 < len(winners) else math.inf
        if best.bound and slot_rows + 1 < end:
            raw.append(Step(max(middles[i], slot_rows + 1), zero_copy))
    return merged(raw)


def merged(steps: list[Step]) -> tuple[Step, ...]:
    """``steps`` with a step dropped where the one before has the same regime, and one replaced where the
    next starts at the same row count or below."""
    out: list[Step] = []
    for s in steps:
        if out and out[-1].regime == s.regime:
            continue
        if out and out[-1].from_rows >= s.from_rows:
            out[-1] = s
        else:
            out.append(s)
    return tuple(out)
