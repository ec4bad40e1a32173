"""How many CPUs this process may use: the one count every part of torchport sizes its threads by."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the usable CPUs (what ONNX Runtime's default thread count counts)."""
    logical = usable_cpus()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return logical
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields and "physical id" in fields:
            cores.add((fields["physical id"], fields["core id"]))
    return max(1, min(logical, len(cores) or logical))


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them in /proc/cpuinfo (``flags``, or ``Features`` on Arm);
    empty where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
