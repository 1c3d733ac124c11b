"""Prometheus metrics of one service process (its own registry)."""
from __future__ import annotations

from .store import STATUSES, JobStore, StoreUnavailable


class ServiceMetrics:
    """Jobs by status and queue depth (read from the store when scraped: the whole service's), this process's
    workers by state, the analysis-duration histogram, worker errors by where they happened, and uploads refused by
    reason."""

    def __init__(self, store: JobStore, worker_states=lambda: {}) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.duration = Histogram("hcsi_analysis_seconds", "Time to analyse one job", registry=self.registry,
                                  buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
        self.refusals = Counter("hcsi_uploads_refused", "Uploads refused at job creation", ["reason"],
                                registry=self.registry)
        self.worker_errors = Counter("hcsi_worker_errors", "Errors a worker survived (store, purge, analysis "
                                                           "bookkeeping)", ["where"], registry=self.registry)

        class StoreCollector:
            def collect(self):
                try:
                    counts = store.counts()
                except StoreUnavailable:
                    counts = None
                yield GaugeMetricFamily("hcsi_store_up", "1 when the job store answers", value=counts is not None)
                if counts is not None:
                    jobs = GaugeMetricFamily("hcsi_jobs", "Jobs in the store by status", labels=["status"])
                    for status in STATUSES:
                        jobs.add_metric([status], counts[status])
                    yield jobs
                    yield GaugeMetricFamily("hcsi_queue_depth", "Jobs waiting for a worker", value=counts["queued"])
                workers = GaugeMetricFamily("hcsi_workers", "This process's workers by state", labels=["state"])
                for state, n in worker_states().items():
                    workers.add_metric([state], n)
                yield workers

        self.registry.register(StoreCollector())

    def observe(self, seconds: float) -> None:
        self.duration.observe(seconds)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def worker_error(self, where: str) -> None:
        self.worker_errors.labels(where).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
