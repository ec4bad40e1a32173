"""The bundle format, owned by the runtime: a directory of model files and the ``manifest.json`` that
names, sizes and hashes them. The manifest is a tree of dataclasses with one validating ``from_json`` and
one ``to_json`` (strict JSON); reading a bundle needs no torch and never unpickles anything.

The manifest also carries records that other parts own and the runtime does not read: the model spec
(``torchport.train.models.ModelSpec``) and the training record (``torchport.train.record``); here they
are JSON objects, validated by their owners when read."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torchport.runtime.cpus import cpu_flags
from torchport.runtime.encoding import Encoding
from torchport.runtime.errors import BundleError, DataError, Fix, ParityError
from torchport.runtime.intervals import IntervalRecord
from torchport.runtime.jsonfields import FLAG, INT, NULL, NUMBER, TEXT, Flat, items, json_object, present, scalar, \
    values

FORMAT = "torchport.bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
LARGE_BATCH_FILE = "model.large_batch.onnx"
THREADED_FILE = "model.threaded.onnx"  # the large-batch graph for multi-threaded ONNX Runtime runs
TORCHSCRIPT_FILE = "model.torchscript.pt"
EXPORTED_FILE = "model.pt2"
AOTI_FILE = "model.aoti.pt2"
AOTI_CUDA_FILE = "model.aoti.cuda.pt2"
CHECKPOINT_FILE = "checkpoint.pt"
GOLDEN_FILE = "golden.json"
SIGNATURE_FILE = "manifest.sig"  # torchport sign's signature over manifest.json (runtime/signing.py)
BATCH = "batch"
# The model formats a bundle may hold, by the names `--formats` takes, and their files. An "aoti" bundle
# exported where torch saw a GPU also holds AOTI_CUDA_FILE.
FORMAT_FILES = {"onnx": ONNX_FILE, "torchscript": TORCHSCRIPT_FILE, "exported": EXPORTED_FILE, "aoti": AOTI_FILE}


# The largest manifest.json read (a manifest is a few kilobytes; its size is recorded nowhere).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def read_bounded(path: str | os.PathLike, limit: int | None, too_large: str = "is too large",
                 fix: str = "re-export the bundle") -> bytes:
    """The bytes of ``path``, refused (BundleError, ending with ``fix``) unless it is a regular file (a
    symbolic link is followed: one to /dev/zero is a device) of at most ``limit`` bytes (None: any size;
    ``too_large`` says what a larger file is); at most ``limit`` + 1 bytes are read, so that a FIFO, a device
    or a file that grows can neither block the reader nor fill its memory. FileNotFoundError when there is
    no such file."""
    def refuse_kind(mode: int) -> None:
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
            raise BundleError(f"{path} is {kind}, not a regular file, and is not read; {fix}")

    refuse_kind(os.stat(path).st_mode)  # before opening: a FIFO or a device is not even opened
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                 | getattr(os, "O_BINARY", 0))
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(fd)
        refuse_kind(st.st_mode)  # what was opened, had it been swapped in between
        if limit is not None and st.st_size > limit:
            raise BundleError(f"{path} {too_large}: it has {st.st_size} bytes, more than {limit}, and is not read; "
                              f"{fix}")
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise BundleError(f"{path} {too_large}: it grew past {limit} bytes while it was read; {fix}")
    return data


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _number(value: float | None) -> float | None:
    """A float for strict JSON: NaN and infinities (which JSON cannot hold) become None."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: its name, dtype and width (the shape is ``[batch, width]``)."""
    name: str
    dtype: str
    width: int

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": [BATCH, self.width]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "TensorSpec":
        v = values(obj, where, {"name": TEXT, "dtype": TEXT, "shape": (list,)})
        shape = v["shape"]
        if len(shape) != 2 or type(shape[1]) is not int or shape[1] < 1:
            raise DataError(f"{where}.shape must be [\"batch\", width >= 1], got {shape!r}")
        return cls(v["name"], v["dtype"], shape[1])


def platform_tag() -> str:
    """This process's OS and machine, as a compiled file's requirements name them (``linux-x86_64``)."""
    return f"{sys.platform}-{platform.machine().lower()}"


def torch_release(version: str) -> str:
    """``major.minor`` of a torch version string (``2.13.0+cpu`` -> ``2.13``)."""
    return ".".join(version.split("+")[0].split(".")[:2])


@dataclass(frozen=True)
class Requirements:
    """What a compiled file (an AOTInductor package) needs where it is loaded: the torch release that
    compiled it, the platform, the device, the CPU features its native code may use (``cpu_target``:
    ``native``, every feature of the CPU it was compiled on, or an x86-64 level) and, for CUDA, the GPU's
    compute capability."""
    torch: str
    platform: str
    device: str
    cpu_target: str
    vector_isa: str
    cpu_flags: tuple[str, ...]
    cuda_capability: str | None = None
    gpu: str | None = None

    SCHEMA = {"torch": TEXT, "platform": TEXT, "device": TEXT, "cpu_target": TEXT, "vector_isa": TEXT,
              "cpu_flags": (list,), "cuda_capability": (str, NULL), "gpu": (str, NULL)}

    def to_json(self) -> dict:
        return {"torch": self.torch, "platform": self.platform, "device": self.device,
                "cpu_target": self.cpu_target, "vector_isa": self.vector_isa, "cpu_flags": list(self.cpu_flags),
                "cuda_capability": self.cuda_capability, "gpu": self.gpu}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Requirements":
        v = values(obj, where, cls.SCHEMA)
        return cls(**{**v, "cpu_flags": items(v["cpu_flags"], f"{where}.cpu_flags", scalar(TEXT))})

    def problems(self, torch_version: str, cuda_capabilities: tuple[str, ...] = ()) -> list[str]:
        """Why this process cannot run the file (none: []): another torch release, platform or device, or
        CPU features it lacks (native code for them dies of SIGILL). ``cuda_capabilities``: the GPUs torch
        can use here, as ``major.minor``."""
        found = []
        if torch_release(torch_version) != torch_release(self.torch):
            found.append(f"it was compiled by torch {self.torch}, and this is torch {torch_version}")
        if self.platform != platform_tag():
            found.append(f"it was compiled for {self.platform}, and this is {platform_tag()}")
        have = cpu_flags()
        lacking = [f for f in self.cpu_flags if f not in have] if have else []
        if lacking:
            found.append(f"it was compiled for CPU features this CPU lacks ({', '.join(lacking)}; cpu target "
                         f"{self.cpu_target})")
        if self.device == "cuda" and self.cuda_capability not in cuda_capabilities:
            gpus = f"GPUs of compute capability {', '.join(cuda_capabilities)}" if cuda_capabilities else "no GPU"
            found.append(f"it was compiled for a CUDA GPU of compute capability {self.cuda_capability} "
                         f"({self.gpu}), and torch sees {gpus}")
        return found


@dataclass(frozen=True)
class FileWriter:
    """What wrote one file of a bundle: the tool and the versions of what it used, the seconds of the step
    that wrote it (files written together share it), the device it is for (``any``: it runs anywhere its
    runtime does), the native compiler (None: not compiled to native code), and for compiled files what
    they need to run."""
    tool: str
    versions: dict[str, str]
    seconds: float
    device: str
    compiler: str | None = None
    requires: Requirements | None = None

    def to_json(self) -> dict:
        return {"tool": self.tool, "versions": dict(self.versions), "seconds": round(self.seconds, 3),
                "device": self.device, "compiler": self.compiler,
                "requires": self.requires.to_json() if self.requires else None}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "FileWriter":
        v = values(obj, where, {"tool": TEXT, "versions": (dict,), "seconds": NUMBER, "device": TEXT,
                                "compiler": (str, NULL), "requires": (dict, NULL)})
        versions = values(v["versions"], f"{where}.versions", {k: TEXT for k in v["versions"]})
        requires = Requirements.from_json(v["requires"], f"{where}.requires") if v["requires"] else None
        return cls(v["tool"], versions, v["seconds"], v["device"], v["compiler"], requires)


@dataclass(frozen=True)
class FileEntry:
    """What the manifest knows of one file: its sha256 and size, and what wrote it (None in bundles written
    before torchport recorded it)."""
    sha256: str
    bytes: int
    writer: FileWriter | None = None

    @classmethod
    def of(cls, path: Path, writer: FileWriter | None = None) -> "FileEntry":
        return cls(sha256_file(path), path.stat().st_size, writer)

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes, "writer": self.writer.to_json() if self.writer else None}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "FileEntry":
        v = values(obj, where, {"sha256": TEXT, "bytes": INT})
        writer = values(obj, where, {"writer": (dict, NULL)})["writer"] if "writer" in obj else None
        return cls(v["sha256"], v["bytes"], FileWriter.from_json(writer, f"{where}.writer") if writer else None)


@dataclass(frozen=True)
class GraphRewrite:
    """Another ONNX graph of the same function, rewritten for large batches (``model.large_batch.onnx``) or
    for runs on several threads (``model.threaded.onnx``)."""
    file: str
    rewrites: dict[str, int]
    ops: tuple[str, ...]

    def to_json(self) -> dict:
        return {"file": self.file, "rewrites": dict(self.rewrites), "ops": list(self.ops)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "GraphRewrite":
        v = values(obj, where, {"file": TEXT, "rewrites": (dict,), "ops": (list,)})
        rewrites = {k: values(v["rewrites"], f"{where}.rewrites", {k: INT})[k] for k in v["rewrites"]}
        return cls(v["file"], rewrites, items(v["ops"], f"{where}.ops", scalar(TEXT)))


@dataclass(frozen=True)
class ExportRecord:
    """How the model files were written: ONNX opset and exporter, the graph's op types, the large-batch
    graph if any, the versions of the tools, the model formats the bundle holds (``FORMAT_FILES``' names)
    and those asked for but not written, with why (bundles from before formats were chosen lack both), and
    the threaded graph if any (bundles from before it lack it)."""
    opset: int
    opset_imports: dict[str, int]
    exporter: str
    ops: tuple[str, ...]
    large_batch_graph: GraphRewrite | None
    versions: dict[str, str]
    formats: tuple[str, ...] = ()
    not_written: dict[str, str] = field(default_factory=dict)
    threaded_graph: GraphRewrite | None = None

    def to_json(self) -> dict:
        return {"opset": self.opset, "opset_imports": dict(self.opset_imports), "exporter": self.exporter,
                "ops": list(self.ops),
                "large_batch_graph": self.large_batch_graph.to_json() if self.large_batch_graph else None,
                "versions": dict(self.versions), "formats": list(self.formats), "not_written": dict(self.not_written),
                "threaded_graph": self.threaded_graph.to_json() if self.threaded_graph else None}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ExportRecord":
        v = values(obj, where, {"opset": INT, "opset_imports": (dict,), "exporter": TEXT, "ops": (list,),
                                "large_batch_graph": (dict, NULL), "versions": (dict,)})
        later = values(obj, where, {k: kinds for k, kinds in (("formats", (list,)), ("not_written", (dict,)),
                                                              ("threaded_graph", (dict, NULL))) if k in obj})
        threaded = later.get("threaded_graph")
        large = v["large_batch_graph"]
        imports = v["opset_imports"]
        not_written = later.get("not_written", {})
        return cls(v["opset"], values(imports, f"{where}.opset_imports", {k: INT for k in imports}), v["exporter"],
                   items(v["ops"], f"{where}.ops", scalar(TEXT)),
                   GraphRewrite.from_json(large, f"{where}.large_batch_graph") if large else None,
                   values(v["versions"], f"{where}.versions", {k: TEXT for k in v["versions"]}),
                   items(later.get("formats", []), f"{where}.formats", scalar(TEXT)),
                   values(not_written, f"{where}.not_written", {k: TEXT for k in not_written}),
                   GraphRewrite.from_json(threaded, f"{where}.threaded_graph") if threaded else None)


@dataclass(frozen=True)
class WorstElement:
    """The element of a comparison that is furthest out of tolerance (or closest to it)."""
    case: str
    row: int
    column: int
    reference: float | None
    value: float | None
    abs: float | None
    rel: float | None

    def to_json(self) -> dict:
        return {"case": self.case, "row": self.row, "column": self.column, "reference": _number(self.reference),
                "value": _number(self.value), "abs": _number(self.abs), "rel": _number(self.rel)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "WorstElement":
        maybe = (*NUMBER, NULL)
        return cls(**values(obj, where, {"case": TEXT, "row": INT, "column": INT, "reference": maybe,
                                         "value": maybe, "abs": maybe, "rel": maybe}))


@dataclass(frozen=True)
class PairResult:
    """One backend (``candidate``) against what it is checked against (``reference``: the float64 run of the
    same module; in format-1 and early format-2 manifests, torch). ``vs_torch`` is the candidate's largest
    error over float32 torch's own, per target, at its worst; ``of_bound`` its largest error as a share of
    the bound it had to stay within (at most 1 passes)."""
    reference: str
    candidate: str
    max_abs: float | None
    max_rel: float | None
    max_scaled: float | None
    passed: bool
    worst: WorstElement
    vs_torch: float | None = None
    of_bound: float | None = None

    @property
    def name(self) -> str:
        return f"{self.reference} vs {self.candidate}"

    def to_json(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate, "max_abs": _number(self.max_abs),
                "max_rel": _number(self.max_rel), "max_scaled": _number(self.max_scaled), "passed": self.passed,
                "worst": self.worst.to_json(), "vs_torch": _number(self.vs_torch), "of_bound": _number(self.of_bound)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "PairResult":
        maybe = (*NUMBER, NULL)
        v = values(obj, where, {"reference": TEXT, "candidate": TEXT, "max_abs": maybe, "max_rel": maybe,
                                "max_scaled": maybe, "passed": FLAG, "worst": (dict,)})
        extra = present(obj, where, {"vs_torch": maybe, "of_bound": maybe})
        return cls(**{**v, **extra, "worst": WorstElement.from_json(v["worst"], f"{where}.worst")})


@dataclass(frozen=True)
class ParityCase(Flat):
    """One batch of rows every backend answered."""
    name: str
    rows: int

    SCHEMA = {"name": TEXT, "rows": INT}


@dataclass(frozen=True)
class ParityReport:
    """Whether every exported copy answers like the torch model: the cases run, the criterion, one result
    per backend, problems (names, shapes, dtypes) that are not about values, and notes on files that
    were not run (a TorchScript file the installed torch cannot load, a CUDA package without a GPU).

    The criterion (``criterion``, in words): each float32 backend against a float64 run of the same module
    (``reference``), within ``bound`` per target: ``multiple`` times float32 torch's own largest error
    there (``torch_error``) plus ``floor_ulps`` float32 ulps of the target's largest answer; or, where
    ``atol`` and ``rtol`` are set, within atol + rtol * |float64 answer|. Manifests from before the float64
    reference have atol and rtol only, and torch as the reference."""
    passed: bool
    atol: float | None
    rtol: float | None
    dtype: str
    cases: tuple[ParityCase, ...]
    providers: tuple[str, ...]
    pairs: tuple[PairResult, ...]
    problems: tuple[str, ...] = ()
    training_rows: str | None = None
    criterion: str | None = None
    reference: str | None = None
    multiple: float | None = None
    floor_ulps: float | None = None
    torch_error: tuple[float | None, ...] = ()
    bound: tuple[float | None, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.cases)

    def to_json(self) -> dict:
        return {"passed": self.passed, "criterion": self.criterion, "reference": self.reference,
                "multiple": _number(self.multiple), "floor_ulps": _number(self.floor_ulps),
                "atol": _number(self.atol), "rtol": _number(self.rtol), "dtype": self.dtype,
                "torch_error": [_number(v) for v in self.torch_error], "bound": [_number(v) for v in self.bound],
                "cases": [c.to_json() for c in self.cases],
                "providers": list(self.providers), "pairs": [p.to_json() for p in self.pairs],
                "problems": list(self.problems), "training_rows": self.training_rows, "notes": list(self.notes)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "ParityReport":
        maybe = (*NUMBER, NULL)
        v = values(obj, where, {"passed": FLAG, "atol": maybe, "rtol": maybe, "dtype": TEXT, "cases": (list,),
                                "providers": (list,), "pairs": (list,), "problems": (list,),
                                "training_rows": (str, NULL)})
        extra = present(obj, where, {"criterion": (str, NULL), "reference": (str, NULL), "multiple": maybe,
                                     "floor_ulps": maybe, "torch_error": (list,), "bound": (list,)})
        for key in ("torch_error", "bound"):
            if key in extra:
                extra[key] = items(extra[key], f"{where}.{key}", scalar(maybe))
        return cls(v["passed"], v["atol"], v["rtol"], v["dtype"],
                   items(v["cases"], f"{where}.cases", ParityCase.from_json),
                   items(v["providers"], f"{where}.providers", scalar(TEXT)),
                   items(v["pairs"], f"{where}.pairs", PairResult.from_json),
                   items(v["problems"], f"{where}.problems", scalar(TEXT)), v["training_rows"],
                   notes=items(obj.get("notes", []), f"{where}.notes", scalar(TEXT)), **extra)


@dataclass(frozen=True)
class GoldenCases:
    """Rows kept in the bundle (``file``, listed in ``files``) with their float64 answers and, per target,
    how far a correct float32 run may be from them (``bound``, the parity bound of the export): what
    ``Predictor.self_check`` runs where the model runs, without torch."""
    file: str
    rows: int
    bound: tuple[float, ...]

    def to_json(self) -> dict:
        return {"file": self.file, "rows": self.rows, "bound": list(self.bound)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "GoldenCases":
        v = values(obj, where, {"file": TEXT, "rows": INT, "bound": (list,)})
        return cls(v["file"], v["rows"], items(v["bound"], f"{where}.bound", scalar(NUMBER)))


# The dtypes a bundle's graphs may take and answer: float32 by default, float64 where float32 cannot hold the fit.
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Precision:
    """Which precision the bundle's graphs compute in (``dtype``, also that of the input and output tensors)
    and why: the float32 model's largest distance from the float64 fit on the training rows
    (``float32_error``, per target), the float64 model's (``float64_error``, None when float32 held it), and
    the most either may be off (``bound``: max(1e-3 x the residual standard error, 1e-7 x the largest |y|)).
    ``reference`` names the float64 fit; ``reason`` says it in words."""
    dtype: str
    reason: str
    reference: str
    rows: int
    bound: tuple[float, ...]
    float32_error: tuple[float, ...]
    float64_error: tuple[float, ...] | None = None

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "reason": self.reason, "reference": self.reference, "rows": self.rows,
                "bound": [_number(v) for v in self.bound], "float32_error": [_number(v) for v in self.float32_error],
                "float64_error": None if self.float64_error is None else [_number(v) for v in self.float64_error]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Precision":
        maybe = (*NUMBER, NULL)
        v = values(obj, where, {"dtype": TEXT, "reason": TEXT, "reference": TEXT, "rows": INT, "bound": (list,),
                                "float32_error": (list,), "float64_error": (list, NULL)})
        if v["dtype"] not in DTYPES:
            raise DataError(f"{where}.dtype must be one of {', '.join(DTYPES)}, got {v['dtype']!r}")
        wide = v["float64_error"]
        return cls(v["dtype"], v["reason"], v["reference"], v["rows"],
                   items(v["bound"], f"{where}.bound", scalar(maybe)),
                   items(v["float32_error"], f"{where}.float32_error", scalar(maybe)),
                   None if wide is None else items(wide, f"{where}.float64_error", scalar(maybe)))


def golden_json(inputs: Any, answers: Any, bound: Any, features: Any, targets: Any) -> dict:
    """The content of golden.json: the rows (float32 values; null for a missing cell an encoding imputes),
    their float64 answers, the bound per target."""
    return {"format": "torchport.golden", "features": list(features), "targets": list(targets),
            "bound": [float(b) for b in bound],
            "inputs": [[None if math.isnan(v) else float(v) for v in row] for row in inputs],  # None: a missing cell
            "answers": [[float(v) for v in row] for row in answers]}


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the names and tensors of the model, every file with its sha256, and how the
    bundle was trained, exported and verified."""
    features: tuple[str, ...]
    targets: tuple[str, ...]
    input: TensorSpec
    output: TensorSpec
    files: dict[str, FileEntry]
    model: dict
    export: ExportRecord
    training: dict | None = None
    parity: ParityReport | None = None
    created: str = ""
    format_version: int = FORMAT_VERSION
    golden: GoldenCases | None = None
    precision: Precision | None = None  # None: a bundle from before the precision was chosen (float32)
    intervals: IntervalRecord | None = None  # what prediction intervals need (None: bundles from before them)
    encoding: Encoding | None = None  # categorical and imputed columns (None: every feature a plain number)

    def with_parity(self, parity: ParityReport) -> "Manifest":
        return replace(self, parity=parity)

    @property
    def dtype(self) -> str:
        """The dtype the graphs take and answer ("float32" or "float64")."""
        return self.input.dtype

    @property
    def parity_failed(self) -> bool:
        """Whether the bundle's recorded parity check failed (it was published with publish_failed)."""
        return self.parity is not None and not self.parity.passed

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "created": self.created,
                "features": list(self.features), "targets": list(self.targets),
                "inputs": [self.input.to_json()], "outputs": [self.output.to_json()],
                "files": {name: entry.to_json() for name, entry in self.files.items()},
                "model": self.model, "training": self.training, "export": self.export.to_json(),
                "parity": self.parity.to_json() if self.parity else None,
                "golden": self.golden.to_json() if self.golden else None,
                **({"precision": self.precision.to_json()} if self.precision else {}),
                "intervals": self.intervals.to_json() if self.intervals else None,
                **({"encoding": self.encoding.to_json()} if self.encoding else {})}

    @classmethod
    def from_json(cls, obj: Any, where: str = MANIFEST) -> "Manifest":
        """Validate a parsed manifest (format 1, from torchport before the typed manifest, is migrated); a
        BundleError names the field it refuses."""
        try:
            return cls._read(obj, where)
        except DataError as e:
            raise BundleError(f"{e}; re-export the bundle") from None

    @classmethod
    def _read(cls, obj: Any, where: str) -> "Manifest":
        if json_object(obj, where).get("format") != FORMAT:
            raise BundleError(f"{where} is not a torchport manifest (its 'format' is not {FORMAT!r})")
        version = obj.get("format_version")
        if type(version) is not int or version < 1:
            raise BundleError(f"{where} has format version {version!r}, which is not a version number; "
                              "re-export the bundle")
        if version > FORMAT_VERSION:
            raise BundleError(f"{where} has format version {version}, newer than this torchport reads "
                              f"(1 to {FORMAT_VERSION}); upgrade torchport")
        if version == 1:
            obj = _migrate_v1(obj)
        v = values(obj, where, {"features": (list,), "targets": (list,), "inputs": (list,), "outputs": (list,),
                                "files": (dict,), "model": (dict,), "export": (dict,), "training": (dict, NULL),
                                "parity": (dict, NULL), "created": (str, NULL)})
        features = items(v["features"], f"{where}.features", scalar(TEXT))
        targets = items(v["targets"], f"{where}.targets", scalar(TEXT))
        if len(v["inputs"]) != 1 or len(v["outputs"]) != 1:
            raise DataError(f"{where} must name exactly one input and one output tensor")
        tin = TensorSpec.from_json(v["inputs"][0], f"{where}.inputs[0]")
        tout = TensorSpec.from_json(v["outputs"][0], f"{where}.outputs[0]")
        if tin.width != len(features) or tout.width != len(targets):
            raise DataError(f"{where}: the tensors' widths ({tin.width}, {tout.width}) disagree with the "
                            f"{len(features)} features and {len(targets)} targets it names")
        files = {name: FileEntry.from_json(entry, f"{where}.files[{name!r}]") for name, entry in v["files"].items()}
        for name in files:
            if name.startswith("/") or ".." in Path(name).parts or name == MANIFEST:
                raise DataError(f"{where}.files names {name!r}, which is not a file inside the bundle")
        parity = v["parity"]
        golden = present(obj, where, {"golden": (dict, NULL)}).get("golden")
        golden = GoldenCases.from_json(golden, f"{where}.golden") if golden else None
        if golden is not None and (golden.file not in files or len(golden.bound) != len(targets)):
            raise DataError(f"{where}.golden names {golden.file!r} with {len(golden.bound)} bound(s); expected a "
                            f"file the manifest lists and one bound per target ({len(targets)})")
        precision = present(obj, where, {"precision": (dict,)}).get("precision")
        precision = Precision.from_json(precision, f"{where}.precision") if precision else None
        for tensor in (tin, tout):
            if tensor.dtype not in DTYPES or tensor.dtype != (precision.dtype if precision else "float32"):
                raise DataError(f"{where}: tensor {tensor.name!r} has dtype {tensor.dtype!r}; expected "
                                f"{precision.dtype if precision else 'float32'} (the manifest's precision)")
        encoding = present(obj, where, {"encoding": (dict, NULL)}).get("encoding")
        encoding = Encoding.from_json(encoding, f"{where}.encoding") if encoding else None
        if encoding is not None and tuple(encoding.features) != features:
            raise DataError(f"{where}.encoding describes the columns {encoding.features}, not the features "
                            f"{list(features)}")
        design = len(encoding.design_names()) if encoding is not None else len(features)  # what intervals see
        intervals = present(obj, where, {"intervals": (dict, NULL)}).get("intervals")
        intervals = IntervalRecord.from_json(intervals, f"{where}.intervals", design, len(targets)) \
            if intervals else None
        return cls(features, targets, tin, tout, files, json_object(v["model"], f"{where}.model"),
                   ExportRecord.from_json(v["export"], f"{where}.export"), v["training"],
                   ParityReport.from_json(parity, f"{where}.parity") if parity else None, v["created"] or "",
                   golden=golden, precision=precision, intervals=intervals, encoding=encoding)


def _migrate_v1(obj: dict) -> dict:
    """A format-1 manifest (torchport before the typed manifest) in format 2's layout: the model spec only
    at the top level, training settings as the Regressor's parameters, parity pairs as a list."""
    out = dict(obj, format_version=FORMAT_VERSION)
    training = obj.get("training")
    if isinstance(training, dict):
        t = dict(training)
        t.pop("model", None)
        t.pop("seed", None)
        hyper = dict(t.pop("hyperparameters", None) or {})
        settings = {k: v for k, v in hyper.items() if k != "loss" and v is not None}
        if settings.get("batch_size") == "full":
            settings["batch_size"] = None
        if isinstance(settings.get("scale"), bool):
            settings["scale"] = "on" if settings["scale"] else "off"
        t["settings"] = settings
        t["optimizer"], t["lr"] = hyper.get("optimizer"), hyper.get("lr")
        t["epochs_run"] = t.pop("epochs", None)
        for key in ("metrics", "exact_least_squares"):
            if isinstance(t.get(key), dict):
                values = dict(t[key])
                undefined = {k: "not a finite number (format-1 manifest)" for k in ("mse", "r2")
                             if isinstance(values.get(k), float) and not math.isfinite(values[k])}
                values.update({k: None for k in undefined})
                t[key] = {**values, "undefined": undefined}
        inference = t.get("inference")
        if isinstance(inference, dict) and "unavailable" in inference:
            t["inference"], t["inference_unavailable"] = None, inference["unavailable"]
        else:
            t.setdefault("inference_unavailable", None)
        out["training"] = t
    parity = obj.get("parity")
    if isinstance(parity, dict) and isinstance(parity.get("pairs"), dict):
        pairs = []
        for key, p in parity["pairs"].items():
            reference, _, candidate = key.partition("~")
            worst = dict(p.get("worst") or {})
            worst["value"] = worst.pop("a", None)
            pairs.append({**p, "reference": reference, "candidate": candidate, "worst": worst})
        out["parity"] = {**parity, "pairs": pairs, "providers": parity.get("onnxruntime_providers", [])}
    return out


@dataclass
class Bundle:
    """A bundle directory opened once: the manifest parsed and validated, each file read and checked against
    its sha256 at most once (``read``), so what is loaded is what was checked."""
    path: Path
    manifest: Manifest
    _checked: dict[str, bytes] = field(default_factory=dict, repr=False)
    manifest_bytes: bytes = field(default=b"", repr=False)  # as read from disk: what a signature covers

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Bundle":
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"{path} is not a bundle directory (no such directory); give the directory "
                              "written by `torchport train` or `torchport export`")
        try:
            raw = read_bounded(path / MANIFEST, MAX_MANIFEST_BYTES, "is too large for a manifest")
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise BundleError(f"{path / MANIFEST} is missing: {path} is not a torchport bundle") from None
        except UnicodeDecodeError as e:
            raise BundleError(f"{path / MANIFEST} is not UTF-8 text ({e}); re-export the bundle") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise BundleError(f"{path / MANIFEST} is not valid JSON ({e}); re-export the bundle") from None
        return cls(path, Manifest.from_json(obj, str(path / MANIFEST)), manifest_bytes=raw)

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    def read(self, name: str) -> bytes:
        """The bytes of one file, refused unless it is a regular file of at most the size the manifest
        records (at most that many bytes are read) and they match the manifest's sha256."""
        if name in self._checked:
            return self._checked[name]
        where = self.path / name
        entry = self.manifest.files.get(name)
        if entry is None:
            raise BundleError(f"{where}: the manifest has no sha256 for this file; re-export the bundle")
        try:
            data = read_bounded(where, entry.bytes, "does not match the manifest (its size)")
        except FileNotFoundError:
            raise BundleError(f"{where} is missing from the bundle; re-export the bundle") from None
        digest = sha256_bytes(data)
        if digest != entry.sha256:
            raise BundleError(f"{where} does not match the manifest (sha256 {digest[:16]}..., expected "
                              f"{entry.sha256[:16]}...): the file was changed or corrupted; re-export the bundle")
        self._checked[name] = data
        return data


def load_manifest(bundle: str | os.PathLike) -> Manifest:
    """The validated manifest of a bundle directory."""
    return Bundle.open(bundle).manifest


def refuse_failed_parity(bundle: Bundle) -> ParityError:
    """The error for loading a bundle whose parity check failed, without allow_failed_parity."""
    failing = [p.candidate for p in bundle.manifest.parity.pairs if not p.passed] or ["see its problems"]
    return ParityError(f"{bundle.path}: this bundle failed its parity check ({', '.join(failing)} beyond the "
                       "criterion) and was published marked failed; re-export it, or load it anyway for "
                       "inspection", parameter="allow_failed_parity",
                       fixes=(Fix({"allow_failed_parity": True}, "to use it as it is"),))
