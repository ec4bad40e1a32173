"""What machine a benchmark ran on, described the same way for every benchmark: the CPU (model name, and
the family/model numbers that name the part when a VM hides the name; core counts; SIMD features), the
GPUs, whether torch and ONNX Runtime can use CUDA, versions and thread settings.

torch is asked only when the benchmark has imported it: a benchmark of the runtime alone does not load
torch (and its thread pools) beside the code it measures just to describe the machine."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort

from torchport.runtime.jsonfields import FLAG, INT, NULL, NUMBER, TEXT, Flat, items, json_object, scalar, values
from torchport.runtime.cpus import cpu_flags, physical_cores, usable_cpus
from torchport.runtime.providers import CUDA, cuda_driver_present


@dataclass(frozen=True)
class Cpu(Flat):
    """The CPU: its model name, and the family/model/stepping numbers that name the part when a VM hides
    the name (None where the system does not say); logical CPUs, those this process may use, physical
    cores; SIMD features."""
    model: str
    logical_cpus: int
    usable_cpus: int
    physical_cores: int
    vendor_id: str | None
    cpu_family: str | None
    cpuid_model: str | None
    stepping: str | None
    hypervisor: bool | None
    simd: tuple[str, ...]

    SCHEMA = {"model": TEXT, "logical_cpus": INT, "usable_cpus": INT, "physical_cores": INT,
              "vendor_id": (str, NULL), "cpu_family": (str, NULL), "cpuid_model": (str, NULL),
              "stepping": (str, NULL), "hypervisor": (bool, NULL), "simd": (list,)}

    def to_json(self) -> dict:
        return {**asdict(self), "simd": list(self.simd)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Cpu":
        v = values(obj, where, cls.SCHEMA)
        return cls(**{**v, "simd": items(v["simd"], f"{where}.simd", scalar(TEXT))})


@dataclass(frozen=True)
class Gpu(Flat):
    """One NVIDIA GPU as torch and nvidia-smi name it (what either did not say is None)."""
    name: str
    driver: str | None
    cuda_runtime: str | None
    memory_gib: float | None

    SCHEMA = {"name": TEXT, "driver": (str, NULL), "cuda_runtime": (str, NULL), "memory_gib": (*NUMBER, NULL)}


@dataclass(frozen=True)
class CudaStatus(Flat):
    """Whether torch and ONNX Runtime can each use CUDA here, and why not (``torch`` is None where the
    benchmark did not load torch to ask)."""
    torch: bool | None
    onnxruntime: bool
    torch_reason: str | None
    onnxruntime_reason: str | None

    SCHEMA = {"torch": (bool, NULL), "onnxruntime": FLAG, "torch_reason": (str, NULL),
              "onnxruntime_reason": (str, NULL)}

    @property
    def usable(self) -> bool:
        return bool(self.torch) or self.onnxruntime


@dataclass(frozen=True)
class BlasLibrary(Flat):
    """One BLAS library numpy (or torch) loaded, as threadpoolctl reports it."""
    internal_api: str | None
    version: str | None
    num_threads: int | None

    SCHEMA = {"internal_api": (str, NULL), "version": (str, NULL), "num_threads": (int, NULL)}


@dataclass(frozen=True)
class Environment:
    """What a reader needs to compare runs: versions, platform, CPU and GPUs, CUDA's status, the BLAS
    libraries, and the thread settings the benchmark used (its own record, or a JSON object)."""
    python: str
    platform: str
    versions: dict[str, str | None]
    onnxruntime_providers: tuple[str, ...]
    cpu: Cpu
    gpus: tuple[Gpu, ...]
    cuda: CudaStatus
    numpy_blas: tuple[BlasLibrary, ...]
    threads: Any

    def to_json(self) -> dict:
        threads = self.threads.to_json() if hasattr(self.threads, "to_json") else dict(self.threads)
        return {"python": self.python, "platform": self.platform, "versions": dict(self.versions),
                "onnxruntime_providers": list(self.onnxruntime_providers), "cpu": self.cpu.to_json(),
                "gpus": [g.to_json() for g in self.gpus], "cuda": self.cuda.to_json(),
                "numpy_blas": [b.to_json() for b in self.numpy_blas], "threads": threads}

    @classmethod
    def from_json(cls, obj: Any, where: str, threads: Callable[[Any, str], Any] = json_object) -> "Environment":
        """``threads`` reads the thread settings (default: any JSON object)."""
        v = values(obj, where, {"python": TEXT, "platform": TEXT, "versions": (dict,),
                                "onnxruntime_providers": (list,), "cpu": (dict,), "gpus": (list,),
                                "cuda": (dict,), "numpy_blas": (list,), "threads": (dict,)})
        versions = {k: scalar((str, NULL))(value, f"{where}.versions.{k}") for k, value in v["versions"].items()}
        return cls(v["python"], v["platform"], versions,
                   items(v["onnxruntime_providers"], f"{where}.onnxruntime_providers", scalar(TEXT)),
                   Cpu.from_json(v["cpu"], f"{where}.cpu"), items(v["gpus"], f"{where}.gpus", Gpu.from_json),
                   CudaStatus.from_json(v["cuda"], f"{where}.cuda"),
                   items(v["numpy_blas"], f"{where}.numpy_blas", BlasLibrary.from_json),
                   threads(v["threads"], f"{where}.threads"))


def _torch():
    """The torch module when this process has imported it, else None."""
    return sys.modules.get("torch")


def cpu_description() -> Cpu:
    """The CPU, from /proc/cpuinfo where there is one."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        first = ""
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = cpu_flags()
    return Cpu(model=fields.get("model name") or platform.processor() or platform.machine(),
               logical_cpus=os.cpu_count() or 1, usable_cpus=usable_cpus(), physical_cores=physical_cores(),
               vendor_id=fields.get("vendor_id"), cpu_family=fields.get("cpu family"),
               cpuid_model=fields.get("model"), stepping=fields.get("stepping"),
               hypervisor=("hypervisor" in flags) if flags else None,
               simd=tuple(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags))


def gpu_description() -> tuple[Gpu, ...]:
    """Name, driver, CUDA runtime and memory of each NVIDIA GPU (from torch, when imported, and from
    nvidia-smi); empty without one."""
    torch = _torch()
    gpus: list[dict[str, Any]] = []
    if torch is not None and torch.cuda.is_available():
        gpus = [{"name": torch.cuda.get_device_name(i), "cuda_runtime": torch.version.cuda,
                 "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                for i in range(torch.cuda.device_count())]
    lines: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            lines = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            lines = []
    for i, line in enumerate(lines):
        name, _, driver = line.partition(",")
        if i < len(gpus):
            gpus[i]["driver"] = driver.strip()
        else:
            gpus.append({"name": name.strip(), "driver": driver.strip()})
    return tuple(Gpu(g["name"], g.get("driver"), g.get("cuda_runtime"), g.get("memory_gib")) for g in gpus)


def cuda_status() -> CudaStatus:
    """Whether torch (when imported) and ONNX Runtime can each use CUDA here, and why not."""
    torch = _torch()
    torch_ok = None if torch is None else bool(torch.cuda.is_available())
    has_provider = CUDA in ort.get_available_providers()
    ort_ok = has_provider and cuda_driver_present()
    torch_reason = (None if torch_ok else "not asked: this benchmark does not load torch" if torch is None
                    else f"torch {torch.__version__}: torch.cuda.is_available() is False")
    ort_reason = None if ort_ok else (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider"
                                      if not has_provider else "no NVIDIA driver (libcuda) on this machine")
    return CudaStatus(torch_ok, ort_ok, torch_reason, ort_reason)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _blas() -> tuple[BlasLibrary, ...]:
    """The BLAS libraries loaded in this process and their thread counts (threadpoolctl, where installed)."""
    try:
        import threadpoolctl
    except ImportError:
        return ()
    return tuple(BlasLibrary(p.get("internal_api"), p.get("version"), p.get("num_threads"))
                 for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas")


def environment(threads: Any) -> Environment:
    """The machine and software a benchmark ran on, with ``threads``: the thread settings it used (a
    record with ``to_json`` or a JSON object)."""
    torch = _torch()
    versions = {"torch": torch.__version__ if torch is not None else _version("torch"),
                "onnxruntime": ort.__version__, "numpy": np.__version__}
    return Environment(python=platform.python_version(), platform=platform.platform(), versions=versions,
                       onnxruntime_providers=tuple(ort.get_available_providers()), cpu=cpu_description(),
                       gpus=gpu_description(), cuda=cuda_status(), numpy_blas=_blas(), threads=threads)
