"""Prometheus text-format counters and histograms, small enough to keep on the request path."""
from __future__ import annotations

from bisect import bisect_left


class Histogram:
    """Cumulative-bucket histogram (Prometheus ``histogram`` type): ``observe`` a value, ``render`` the text."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        self.name, self.help_text, self.buckets = name, help_text, tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, labels: str) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            lines.append(f'{self.name}_bucket{{{labels},le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum{{{labels}}} {self.sum:.9g}")
        lines.append(f"{self.name}_count{{{labels}}} {self.count}")
        return lines


_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
OUTCOMES = ("success", "bad_request", "not_found", "too_large", "error")


class ServerMetrics:
    """The server's metrics for one model: request outcomes, latency, batch sizes and queue time."""

    def __init__(self, model_name: str, max_batch_size: int):
        self.labels = f'model="{model_name}"'
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.queued = 0
        self.latency = Histogram("torchport_request_duration_seconds",
                                 "Time from a request's headers to its response, inference requests only.",
                                 _LATENCY_BUCKETS)
        self.queue = Histogram("torchport_queue_duration_seconds",
                               "Time a request waited in the batcher before its batch ran.", _LATENCY_BUCKETS)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, max_batch_size})
        self.batch_size = Histogram("torchport_batch_size",
                                    "Rows per ONNX Runtime call (the dynamic batcher's merged batches).",
                                    tuple(s for s in sizes if s <= max_batch_size))
        self.batch_requests = Histogram("torchport_batch_requests",
                                        "Requests merged into one ONNX Runtime call.",
                                        tuple(s for s in sizes if s <= max_batch_size))

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines = ["# HELP torchport_requests_total Inference requests by outcome.",
                 "# TYPE torchport_requests_total counter"]
        lines += [f'torchport_requests_total{{{self.labels},outcome="{k}"}} {v}' for k, v in self.requests.items()]
        lines += ["# HELP torchport_queued_requests Requests waiting in the batcher now.",
                  "# TYPE torchport_queued_requests gauge", f"torchport_queued_requests{{{self.labels}}} {self.queued}"]
        for h in (self.latency, self.queue, self.batch_size, self.batch_requests):
            lines += h.render(self.labels)
        return "\n".join(lines) + "\n"
