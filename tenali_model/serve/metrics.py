"""Prometheus metrics of the server, in a registry of its own (several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets in seconds: TTFT spans a cached short prompt to a long prefill on a busy server;
# inter-token latency is one decoding step of the batch.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tenali_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.ttft = Histogram("tenali_time_to_first_token_seconds",
                              "From a request's arrival to its first token (prefill and queueing included)",
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("tenali_inter_token_latency_seconds", "Time between consecutive tokens of a request",
                             buckets=ITL_BUCKETS, registry=r)
        self.generated = Counter("tenali_generated_tokens", "Tokens generated", registry=r)
        self.prompt_tokens = Counter("tenali_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.queue_depth = Gauge("tenali_queue_depth", "Requests waiting for a slot", registry=r)
        self.batch_size = Gauge("tenali_batch_size", "Sequences being decoded (0 while the engine is idle)",
                                registry=r)
        self.batch_hist = Histogram("tenali_decode_batch_size", "Sequences per decoding step",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.rejected = Counter("tenali_rejected_requests", "Requests refused because the queue was full",
                                registry=r)
        self.finished = Counter("tenali_finished_generations", "Generations by how they ended",
                                ["reason"], registry=r)

    # hooks called by the engine thread
    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def tokens(self, n: int) -> None:
        self.generated.inc(n)

    def queue(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def batch(self, size: int) -> None:
        self.batch_size.set(size)
        self.batch_hist.observe(size)

    def idle(self) -> None:
        """No sequence left: without this the gauge would show the last step's batch for ever."""
        self.batch_size.set(0)
