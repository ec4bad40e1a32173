"""How many CPUs this process may use: the one count every part of torchport sizes its threads by."""
from __future__ import annotations

import os
import time
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


class Neighbours:
    """How many CPUs other processes kept busy lately, from /proc/stat's busy time of the CPUs this process
    may run on (its affinity mask) less this process's own (os.times), measured over the time since the last
    look and looked at most every ``every_s`` seconds, so that asking costs a clock read. A multi-threaded session whose threads would wait for a core another
    process holds (ONNX Runtime's threads spin, and split the work evenly up front) is then not used."""

    def __init__(self, every_s: float = 0.25):
        self.every_s = every_s
        self.cpus = usable_cpus()
        self._next = 0.0
        self._last: tuple[float, float, float] | None = None
        self.busy_cpus = 0.0
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _sample(self) -> tuple[float, float, float] | None:
        """(now, seconds of CPU time every process used, seconds this process used), or None off Linux."""
        try:
            with open("/proc/stat", "rb") as f:
                lines = [line.split() for line in f if line[:3] == b"cpu" and line[3:4].isdigit()]
        except OSError:
            return None
        mine = self._mine()
        busy = 0.0
        for fields in lines:
            if mine is None or int(fields[0][3:]) in mine:
                ticks = [int(v) for v in fields[1:9]]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                busy += sum(ticks) - idle  # user..steal; guest time is counted in user already
        busy /= self._tick
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    @staticmethod
    def _mine() -> set[int] | None:
        try:
            return os.sched_getaffinity(0)
        except AttributeError:
            return None

    def free(self) -> float:
        """CPUs of this process's share that no other process used over the last interval measured."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            sample = self._sample()
            if sample is not None and self._last is not None and sample[0] > self._last[0]:
                wall = sample[0] - self._last[0]
                self.busy_cpus = max(0.0, (sample[1] - self._last[1]) - (sample[2] - self._last[2])) / wall
            self._last = sample
        return self.cpus - self.busy_cpus

    def crowded(self, threads: int) -> bool:
        """True when other processes left fewer than ``threads`` CPUs free, less a slack of a quarter of them
        (at least half a CPU): on 2 CPUs, when others took more than half of one."""
        threads = min(threads, self.cpus)  # more threads than CPUs would never find enough free
        return self.free() < threads - max(0.5, threads / 4)
