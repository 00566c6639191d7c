"""Prometheus metrics of one service instance, served at ``GET /metrics``.

Each app gets its own registry, so several apps in one process (tests) do not clash.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from paddlevision.serving.protocol import ErrNo

__all__ = ["CONTENT_TYPE_LATEST", "ServingMetrics"]

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServingMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "serving_requests", "Prediction requests answered, successful or not", registry=self.registry
        )
        self.images = Counter("serving_images", "Images classified", registry=self.registry)
        self.errors = Counter(
            "serving_errors", "Error answers by kind (the lower-case err_no name)", ["kind"], registry=self.registry
        )
        self.images_in_progress = Gauge(
            "serving_images_in_progress", "Images admitted and not yet answered (the queue limit bounds it)",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "serving_batch_size", "Images per predictor run", buckets=BATCH_SIZE_BUCKETS, registry=self.registry
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "Time from a prediction request's arrival to its answer",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Every kind exported from the start, at 0, so rates work before the first error.
        for err_no in ErrNo:
            if err_no != ErrNo.OK:
                self.errors.labels(kind=err_no.kind)

    def exposition(self):
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
