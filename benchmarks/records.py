"""The records of `torchport bench`: ``BenchReport`` (settings, the machine, the models and their backends,
one ``ResultRow`` per backend, device and batch size), written as bench.json. Each record has one
``to_json`` (strict JSON: a figure that does not exist is null) and one ``from_json`` that checks every key
and type and names the one it refuses, so that bench.json can be read back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchport.runtime.jsonfields import FLAG, INT, NULL, NUMBER, TEXT, Flat, items, scalar, values
from torchport.benchmarks.machine import Environment
from torchport.benchmarks.peak import MatmulPeak
from torchport.export.module_spec import ModuleSpec, is_module_spec
from torchport.runtime.errors import BundleError, DataError
from torchport.train.errors import SettingsError
from torchport.train.models import ModelSpec

BENCH_FORMAT = "torchport.bench"
BENCH_FORMAT_VERSION = 1
# The ways to run a bundle that a report holds, by id, with their labels, in the order reports list them.
BACKEND_LABELS = {"numpy_copy": "numpy copy (floor)", "numpy_matmul": "numpy X@W.T+b", "torch_eager": "torch eager",
                  "torchscript": "TorchScript", "exported": "ExportedProgram", "aoti": "AOTInductor",
                  "ort_plain": "ORT session.run", "ort_plain_threads": "ORT session.run, threads set",
                  "openvino_latency": "OpenVINO f32, LATENCY hint", "openvino_throughput": "OpenVINO f32, THROUGHPUT hint",
                  "openvino_bf16": "OpenVINO bf16, LATENCY hint",
                  "predictor": "torchport Predictor", "predictor_tuned": "torchport Predictor, tuned"}
BACKEND_ORDER = tuple(BACKEND_LABELS)
TIMING = ("per-call wall time (time.perf_counter_ns) of host numpy in -> host numpy out, GC off while timing; "
          "rows/s = batch size / median")

@dataclass(frozen=True)
class Plan(Flat):
    """How long to measure: per (model, batch size) cell, the time budget, warm-up and minimum rounds."""
    seconds_per_cell: float = 3.0
    warmup_s: float = 0.2
    min_rounds: int = 5
    target_rounds: int = 10

    SCHEMA = {"seconds_per_cell": NUMBER, "warmup_s": NUMBER, "min_rounds": INT, "target_rounds": INT}


@dataclass(frozen=True)
class BenchSettings:
    """What was asked for: batch sizes, devices, the measuring plan, whether it was a quick run."""
    batch_sizes: tuple[int, ...]
    devices: tuple[str, ...]
    plan: Plan
    quick: bool
    timing: str = TIMING

    def to_json(self) -> dict:
        return {"batch_sizes": list(self.batch_sizes), "devices": list(self.devices), "plan": self.plan.to_json(),
                "timing": self.timing, "quick": self.quick}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "BenchSettings":
        v = values(obj, where, {"batch_sizes": (list,), "devices": (list,), "plan": (dict,), "timing": TEXT,
                                "quick": FLAG})
        return cls(items(v["batch_sizes"], f"{where}.batch_sizes", scalar(INT)),
                   items(v["devices"], f"{where}.devices", scalar(TEXT)),
                   Plan.from_json(v["plan"], f"{where}.plan"), v["quick"], v["timing"])


@dataclass(frozen=True)
class BenchThreads(Flat):
    """The thread settings of a `torchport bench` run: the count asked for, what torch, ONNX Runtime and
    numpy's BLAS were given, the Predictor's, and ONNX Runtime's default (its physical cores)."""
    threads: int
    torch_num_threads: int
    torch_interop_threads: int
    ort_plain_intra_op_num_threads: int
    numpy_blas_threads: int
    predictor: str | None
    onnxruntime_default_intra_op_threads: int

    SCHEMA = {"threads": INT, "torch_num_threads": INT, "torch_interop_threads": INT,
              "ort_plain_intra_op_num_threads": INT, "numpy_blas_threads": INT, "predictor": (str, NULL),
              "onnxruntime_default_intra_op_threads": INT}


@dataclass(frozen=True)
class BackendEntry(Flat):
    """One backend a model was run on: its id (a key of BACKEND_LABELS), label, device and threads."""
    backend: str
    label: str
    device: str
    threads: str

    SCHEMA = {"backend": TEXT, "label": TEXT, "device": TEXT, "threads": TEXT}


@dataclass(frozen=True)
class Skipped(Flat):
    """A backend that was not run on a device, and why."""
    backend: str
    device: str
    reason: str

    SCHEMA = {"backend": TEXT, "device": TEXT, "reason": TEXT}


@dataclass(frozen=True)
class ModelEntry:
    """One benchmarked bundle: its name in the report, directory, model spec, feature and target names,
    ONNX opset, the backends it was run on and those that were not."""
    name: str
    bundle: str
    model: ModelSpec | ModuleSpec
    features: tuple[str, ...]
    targets: tuple[str, ...]
    onnx_opset: int | None
    backends: tuple[BackendEntry, ...]
    skipped: tuple[Skipped, ...]

    def describe(self) -> str:
        """``name: kind, n feature(s) -> m target(s) (bundle)``; an MLP's kind names its layers."""
        spec = self.model
        kind = spec.description if isinstance(spec, ModuleSpec) else spec.kind if spec.kind != "mlp" else \
            f"mlp {','.join(map(str, spec.hidden))} {spec.activation}"
        return f"{self.name}: {kind}, {len(self.features)} feature(s) -> {len(self.targets)} target(s) ({self.bundle})"

    def to_json(self) -> dict:
        return {"name": self.name, "bundle": self.bundle, "model": self.model.to_json(),
                "features": list(self.features), "targets": list(self.targets), "onnx_opset": self.onnx_opset,
                "backends": [b.to_json() for b in self.backends], "skipped": [s.to_json() for s in self.skipped]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ModelEntry":
        v = values(obj, where, {"name": TEXT, "bundle": TEXT, "model": (dict,), "features": (list,),
                                "targets": (list,), "onnx_opset": (int, NULL), "backends": (list,),
                                "skipped": (list,)})
        try:
            spec = ModuleSpec.from_json(v["model"]) if is_module_spec(v["model"]) else ModelSpec.from_json(v["model"])
        except (SettingsError, BundleError) as e:
            raise DataError(f"{where}.model is not a model spec: {e}") from None
        return cls(v["name"], v["bundle"], spec, items(v["features"], f"{where}.features", scalar(TEXT)),
                   items(v["targets"], f"{where}.targets", scalar(TEXT)), v["onnx_opset"],
                   items(v["backends"], f"{where}.backends", BackendEntry.from_json),
                   items(v["skipped"], f"{where}.skipped", Skipped.from_json))


@dataclass(frozen=True)
class ResultRow(Flat):
    """The figures of one backend on one device at one batch size: calls and rounds measured, seconds per
    call (median, p99, mean, min), rows/s at the median, how far its answers were from torch eager's, and
    its median over the fastest backend's that computes the model and over plain ORT's on its device; the
    model's FLOP/s at the median and its share of the run's matmul peak (None in reports made before
    they were recorded, and for the copy floor); its largest error against the module run in float64. A
    reduced-precision row (bf16) is not held to torch eager's float32 tolerance: ``agrees_with_torch`` is
    None there and its error against float64 is the figure to read."""
    model: str
    backend: str
    label: str
    device: str
    batch_size: int
    calls: int
    rounds: int
    median_s: float
    p99_s: float
    mean_s: float
    min_s: float
    rows_per_s: float
    threads: str
    max_abs_diff_vs_torch: float | None  # None: not the model (the copy floor), or not finite
    agrees_with_torch: bool | None
    x_fastest: float
    x_ort_plain: float | None            # None: no plain ORT row to compare with
    flops_per_s: float | None = None
    x_matmul_peak: float | None = None
    max_abs_error_vs_float64: float | None = None  # against the module run in float64 (torchport's models)

    OPTIONAL = ("flops_per_s", "x_matmul_peak", "max_abs_error_vs_float64")
    SCHEMA = {"model": TEXT, "backend": TEXT, "label": TEXT, "device": TEXT, "batch_size": INT,
              "calls": INT, "rounds": INT, "median_s": NUMBER, "p99_s": NUMBER, "mean_s": NUMBER,
              "min_s": NUMBER, "rows_per_s": NUMBER, "threads": TEXT, "max_abs_diff_vs_torch": (*NUMBER, NULL),
              "agrees_with_torch": (bool, NULL), "x_fastest": NUMBER, "x_ort_plain": (*NUMBER, NULL),
              "flops_per_s": (*NUMBER, NULL), "x_matmul_peak": (*NUMBER, NULL),
              "max_abs_error_vs_float64": (*NUMBER, NULL)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ResultRow":
        """As Flat's, with the FLOP/s figures null where a report made before them lacks them."""
        if isinstance(obj, dict):
            obj = {**{k: None for k in cls.OPTIONAL}, **obj}
        return cls(**values(obj, where, cls.SCHEMA))


@dataclass(frozen=True)
class BenchReport:
    """A whole `torchport bench` run: when, the command that reproduces it, its settings, the machine,
    the models, one result row per (model, backend, device, batch size) and the machine's float32 matmul
    rate measured before and after the rows."""
    created: str
    command: str
    settings: BenchSettings
    environment: Environment
    models: tuple[ModelEntry, ...]
    results: tuple[ResultRow, ...]
    format: str = BENCH_FORMAT
    format_version: int = BENCH_FORMAT_VERSION
    matmul_peak: MatmulPeak | None = None  # None in reports made before it was measured

    def rows(self, model: str) -> list[ResultRow]:
        """The result rows of one model, in the order they were measured."""
        return [r for r in self.results if r.model == model]

    def disagreements(self) -> list[ResultRow]:
        """The rows of backends that answered differently from torch eager beyond the tolerance."""
        return [r for r in self.results if r.agrees_with_torch is False]

    def to_json(self) -> dict:
        return {"format": self.format, "format_version": self.format_version, "created": self.created,
                "command": self.command, "settings": self.settings.to_json(),
                "environment": self.environment.to_json(), "models": [m.to_json() for m in self.models],
                "results": [r.to_json() for r in self.results],
                "matmul_peak": self.matmul_peak.to_json() if self.matmul_peak else None}

    @classmethod
    def from_json(cls, obj: Any, where: str = "bench.json") -> "BenchReport":
        """Validate a parsed bench.json: every key and type, and that each row names a model of the report."""
        v = values(obj, where, {"format": TEXT, "format_version": INT, "created": TEXT, "command": TEXT,
                                "settings": (dict,), "environment": (dict,), "models": (list,), "results": (list,)})
        if v["format"] != BENCH_FORMAT:
            raise DataError(f"{where} is not a torchport bench report (its 'format' is {v['format']!r}, "
                            f"not {BENCH_FORMAT!r})")
        if v["format_version"] != BENCH_FORMAT_VERSION:
            raise DataError(f"{where} has format version {v['format_version']}; this torchport reads version "
                            f"{BENCH_FORMAT_VERSION}")
        models = items(v["models"], f"{where}.models", ModelEntry.from_json)
        results = items(v["results"], f"{where}.results", ResultRow.from_json)
        names = {m.name for m in models}
        for i, r in enumerate(results):
            if r.model not in names:
                raise DataError(f"{where}.results[{i}] is of model {r.model!r}, which {where}.models does not list")
        peak = values({"matmul_peak": None, **obj}, where, {"matmul_peak": (dict, NULL)})["matmul_peak"]
        return cls(v["created"], v["command"], BenchSettings.from_json(v["settings"], f"{where}.settings"),
                   Environment.from_json(v["environment"], f"{where}.environment", BenchThreads.from_json),
                   models, results,
                   matmul_peak=MatmulPeak.from_json(peak, f"{where}.matmul_peak") if peak is not None else None)
