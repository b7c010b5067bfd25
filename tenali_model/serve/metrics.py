"""Prometheus metrics of the server, in a registry of its own (several apps may live in one process).

What the engine thread records on every decoding step (token latencies, counts, batch size, queue
depth) goes into plain Python numbers that `_EngineCollector` turns into metric families when
/metrics is scraped: a prometheus_client Histogram takes locks on each observation, which measured
0.17 ms of a 4.5 ms decoding step of the demo model on the development VM. The rest (requests,
rejections, finish reasons: once per request, on the event loop) are ordinary prometheus_client
metrics.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Latency buckets in seconds: TTFT spans a cached short prompt to a long prefill on a busy server;
# inter-token latency is one decoding step of the batch.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class _Hist:
    """Cumulative-bucket histogram for one writer thread: observe() is a bisect and two additions."""

    def __init__(self, name: str, doc: str, buckets):
        self.name, self.doc, self.bounds = name, doc, [float(b) for b in buckets]
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus buckets are "less or equal"
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        counts, total = list(self.counts), self.sum  # a copy: the engine may write meanwhile
        cumulative = list(itertools.accumulate(counts))
        buckets = [(_bound(b), c) for b, c in zip(self.bounds, cumulative)] + [("+Inf", cumulative[-1])]
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


def _bound(b: float) -> str:
    return str(int(b)) + ".0" if b == int(b) else repr(b)


class _EngineCollector:
    def __init__(self, metrics: "Metrics"):
        self.m = metrics

    def collect(self):
        m = self.m
        yield m.ttft.family()
        yield m.itl.family()
        yield m.batch_hist.family()
        yield CounterMetricFamily("tenali_generated_tokens", "Tokens generated", value=m.generated)
        yield GaugeMetricFamily("tenali_queue_depth", "Requests waiting for a slot", value=m.queue_depth)
        yield GaugeMetricFamily("tenali_batch_size", "Sequences in the last decoding step", value=m.batch_size)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tenali_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("tenali_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.rejected = Counter("tenali_rejected_requests", "Requests refused because the queue was full",
                                registry=r)
        self.finished = Counter("tenali_finished_generations", "Generations by how they ended",
                                ["reason"], registry=r)
        # written by the engine thread, read when scraped
        self.ttft = _Hist("tenali_time_to_first_token_seconds",
                          "From a request's arrival to its first token (prefill and queueing included)", TTFT_BUCKETS)
        self.itl = _Hist("tenali_inter_token_latency_seconds", "Time between consecutive tokens of a request",
                         ITL_BUCKETS)
        self.batch_hist = _Hist("tenali_decode_batch_size", "Sequences per decoding step",
                                (1, 2, 4, 8, 16, 32, 64, 128))
        self.generated = 0
        self.queue_depth = 0
        self.batch_size = 0
        r.register(_EngineCollector(self))

    # hooks called by the engine thread
    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def tokens(self, n: int) -> None:
        self.generated += n

    def queue(self, depth: int) -> None:
        self.queue_depth = depth

    def batch(self, size: int) -> None:
        self.batch_size = size
        self.batch_hist.observe(size)
