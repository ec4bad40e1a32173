"""``/metrics``: the server's merged statistics (every worker added up) in Prometheus' text format, written by
prometheus_client from one collector, labelled by model and version."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from torchport.runtime.serve.stats import OUTCOMES, PHASES, REJECTIONS

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LABELS = ["model", "version"]


def _histogram(name: str, doc: str, snaps: list[dict], key: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=_LABELS)
    for snap in snaps:
        h = snap[key]
        running, buckets = 0, []
        for bound, n in zip(h["buckets"], h["counts"]):
            running += n
            buckets.append((f"{bound:g}", running))
        buckets.append(("+Inf", h["count"]))
        family.add_metric([snap["name"], snap["version"]], buckets, h["sum"])
    return family


class _Collector:
    """Yields every metric family from merged snapshots (``stats.merge``, ``stats.merge_server``)."""

    def __init__(self, models: list[dict], server: dict, workers: int):
        self.models, self.server, self.workers = models, server, workers

    def collect(self):
        snaps = self.models
        requests = CounterMetricFamily("torchport_requests", "Inference requests that reached a model, by outcome.",
                                       labels=[*_LABELS, "outcome"])
        for snap in snaps:
            for outcome in OUTCOMES:
                requests.add_metric([snap["name"], snap["version"], outcome], snap["outcomes"][outcome])
        yield requests
        rejected = CounterMetricFamily("torchport_rejected_requests",
                                       "Requests answered before a model was chosen, by reason.", labels=["reason"])
        for reason in REJECTIONS:
            rejected.add_metric([reason], self.server["rejected"][reason])
        yield rejected
        yield GaugeMetricFamily("torchport_workers_reporting", "Server processes whose counters these figures add up.",
                                value=self.workers)
        inferences = CounterMetricFamily("torchport_inferences", "Rows answered (Triton's inference_count).",
                                         labels=_LABELS)
        executions = CounterMetricFamily("torchport_executions", "Model calls (Triton's execution_count).",
                                         labels=_LABELS)
        phases = CounterMetricFamily("torchport_phase_seconds", "Time per request in each phase, summed "
                                     "(Triton's queue, compute_input, compute_infer and compute_output ns).",
                                     labels=[*_LABELS, "phase"])
        queued = GaugeMetricFamily("torchport_queued_requests", "Requests waiting in the batcher now.",
                                   labels=_LABELS)
        for snap in snaps:
            labels = [snap["name"], snap["version"]]
            inferences.add_metric(labels, snap["inference_count"])
            executions.add_metric(labels, snap["execution_count"])
            for phase in PHASES:
                phases.add_metric([*labels, phase], snap["phases"][phase][1] * 1e-9)
            queued.add_metric(labels, snap["queued"])
        yield from (inferences, executions, phases, queued)
        yield _histogram("torchport_request_duration_seconds",
                         "Time from an inference request's headers to its answer.", snaps, "latency")
        yield _histogram("torchport_queue_duration_seconds",
                         "Time a request waited in the batcher before its batch ran.", snaps, "queue_wait")
        yield _histogram("torchport_batch_size", "Rows per ONNX Runtime call (the dynamic batcher's merged "
                         "batches).", snaps, "batch_rows")
        yield _histogram("torchport_batch_requests", "Requests merged into one ONNX Runtime call.", snaps,
                         "batch_requests")


def render(models: list[dict], server: dict, workers: int = 1) -> bytes:
    """The Prometheus text exposition of merged model and server snapshots from ``workers`` processes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(models, server, workers))
    return generate_latest(registry)
