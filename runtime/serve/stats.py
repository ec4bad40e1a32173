"""What the server counts, per served model version, on the event loop's thread (plain integers, no locks):
request outcomes, Triton's statistics (success, fail, queue, compute_input, compute_infer and
compute_output as count and nanoseconds, batch statistics per batch size) and the histograms /metrics
shows. ``snapshot`` turns the counters into plain JSON so that the workers of one server can be added up
(``merge``); ``/v2/models/stats``, gRPC's ModelStatistics and ``/metrics`` are all drawn from the same
merged snapshots, so they agree."""
from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Outcomes of inference requests that reached a model: success, or the status class of the answer.
OUTCOMES = ("success", "bad_request", "body_timeout", "too_large", "disconnected", "overloaded", "timeout", "error")
# Requests answered before any model was chosen.
REJECTIONS = ("not_found", "unauthenticated", "bad_request", "overloaded")
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


class Histogram:
    """Cumulative-bucket counts (Prometheus ``histogram``): ``observe`` a value in seconds or rows."""
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: Iterable[float]):
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum, "count": self.count}


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Bucket bounds for rows (or requests) per model call, up to ``max_batch_size``."""
    sizes = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, max_batch_size}
    return tuple(s for s in sorted(sizes) if s <= max_batch_size)


class ModelStats:
    """The counters of one served model version. A version that is reloaded keeps its counters; one that
    is unloaded takes them with it (as in Triton)."""

    def __init__(self, name: str, version: str, max_batch_size: int):
        self.name, self.version = name, version
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.success = [0, 0]  # [count, ns]: the whole request, from its headers to its answer
        self.fail = [0, 0]
        self.phase_counts = 0  # requests counted in each phase (the same for all four)
        self.phase_ns = [0, 0, 0, 0]  # per PHASES; each request of a batch counts the batch's time
        self.inference_count = 0  # rows answered
        self.execution_count = 0  # model calls (batches)
        self.last_inference_ms = 0
        self.batches: dict[int, list[int]] = {}  # rows -> [calls, input ns, infer ns, output ns]
        self.queued = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.queue_wait = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(batch_buckets(max_batch_size))
        self.batch_requests = Histogram(batch_buckets(max_batch_size))

    def finished(self, outcome: str, ns: int) -> None:
        """Count one inference request that reached this model, answered after ``ns`` nanoseconds."""
        self.outcomes[outcome] += 1
        counter = self.success if outcome == "success" else self.fail
        counter[0] += 1
        counter[1] += ns
        self.latency.observe(ns * 1e-9)

    def batch(self, rows: int, waits_ns: list[int], input_ns: int, infer_ns: int, output_ns: int,
              now_ms: int) -> None:
        """Count one model call of ``rows`` rows for ``len(waits_ns)`` requests that waited that long."""
        n = len(waits_ns)
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = now_ms
        entry = self.batches.get(rows)
        if entry is None:
            entry = self.batches[rows] = [0, 0, 0, 0]
        entry[0] += 1
        entry[1] += input_ns
        entry[2] += infer_ns
        entry[3] += output_ns
        self.phase_counts += n  # every request of the batch counts once in each phase
        ns = self.phase_ns
        ns[0] += sum(waits_ns)
        ns[1] += n * input_ns
        ns[2] += n * infer_ns
        ns[3] += n * output_ns
        self.batch_rows.observe(rows)
        self.batch_requests.observe(n)
        observe = self.queue_wait.observe
        for wait in waits_ns:
            observe(wait * 1e-9)

    def snapshot(self) -> dict:
        """The counters as plain JSON (what ``merge`` adds up across workers)."""
        return {"name": self.name, "version": self.version, "outcomes": dict(self.outcomes),
                "success": list(self.success), "fail": list(self.fail),
                "phases": {p: [self.phase_counts, ns] for p, ns in zip(PHASES, self.phase_ns)},
                "inference_count": self.inference_count, "execution_count": self.execution_count,
                "last_inference": self.last_inference_ms,
                "batches": {str(k): list(v) for k, v in self.batches.items()}, "queued": self.queued,
                "latency": self.latency.snapshot(), "queue_wait": self.queue_wait.snapshot(),
                "batch_rows": self.batch_rows.snapshot(), "batch_requests": self.batch_requests.snapshot()}


class ServerStats:
    """Requests answered before a model was chosen: an unknown model or path, a missing or wrong key."""

    def __init__(self) -> None:
        self.rejected = dict.fromkeys(REJECTIONS, 0)

    def snapshot(self) -> dict:
        return {"rejected": dict(self.rejected)}


def _add(into: dict, other: dict) -> None:
    """Add the counters of ``other`` into ``into`` (two snapshots of the same model version)."""
    for key, value in other.items():
        mine = into.get(key)
        if key == "last_inference":
            into[key] = max(mine, value)
        elif key in ("name", "version", "buckets"):
            continue
        elif isinstance(value, dict):
            if mine is None:
                into[key] = value
            else:
                _add(mine, value)
        elif isinstance(value, list):
            into[key] = value if mine is None else [a + b for a, b in zip(mine, value)]
        else:
            into[key] = value if mine is None else mine + value


def merge(snapshots: Iterable[dict]) -> list[dict]:
    """Model snapshots from several workers, added up per (name, version), sorted by name and version."""
    out: dict[tuple[str, str], dict] = {}
    for snap in snapshots:
        key = (snap["name"], snap["version"])
        if key in out:
            _add(out[key], snap)
        else:
            out[key] = _copy(snap)
    return [out[k] for k in sorted(out, key=lambda k: (k[0], _version_key(k[1])))]


def merge_server(snapshots: Iterable[dict]) -> dict:
    """Server snapshots from several workers, added up."""
    total = {"rejected": dict.fromkeys(REJECTIONS, 0)}
    for snap in snapshots:
        _add(total, snap)
    return total


def _copy(snap: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v for k, v in snap.items()}


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _duration(pair: list[int]) -> dict:
    return {"count": pair[0], "ns": pair[1]}


def triton_statistics(snap: dict) -> dict:
    """One merged snapshot as an entry of Triton's statistics extension (``model_stats``)."""
    batches = sorted(snap["batches"].items(), key=lambda kv: int(kv[0]))
    return {"name": snap["name"], "version": snap["version"], "last_inference": snap["last_inference"],
            "inference_count": snap["inference_count"], "execution_count": snap["execution_count"],
            "inference_stats": {"success": _duration(snap["success"]), "fail": _duration(snap["fail"]),
                                **{p: _duration(snap["phases"][p]) for p in PHASES},
                                "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0}},
            "batch_stats": [{"batch_size": int(rows), "compute_input": {"count": v[0], "ns": v[1]},
                             "compute_infer": {"count": v[0], "ns": v[2]},
                             "compute_output": {"count": v[0], "ns": v[3]}} for rows, v in batches],
            "memory_usage": [], "response_stats": {}}
