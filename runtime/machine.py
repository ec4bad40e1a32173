"""What machine a benchmark ran on: CPU model (and family/model numbers, which name the part when a VM hides
the name), core counts, SIMD features. No torch: runtime benchmarks use it too."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def physical_cores() -> int:
    """Physical cores this process may use (ONNX Runtime's default thread count counts physical cores)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return logical
    cores = {(block.split("physical id")[1].split("\n")[0], block.split("core id")[1].split("\n")[0])
             for block in text.split("\n\n") if "core id" in block and "physical id" in block}
    return max(1, min(logical, len(cores) or logical))


def cpu_description() -> dict:
    """CPU model name (and family/model/stepping, which name the part when a VM hides it), core counts."""
    info = {"model": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "physical_cores": physical_cores()}
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["model"] = fields.get("model name", info["model"])
    info.update({k.replace(" ", "_"): fields[k] for k in ("vendor_id", "cpu family", "model", "stepping")
                 if k in fields and k != "model"})
    info["cpuid_model"] = fields.get("model")
    flags = fields.get("flags", "").split()
    info["hypervisor"] = "hypervisor" in flags
    info["simd"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return info
