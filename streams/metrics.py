"""Prometheus metrics of the worker (served at ``/metrics`` on the worker's web port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["METRICS", "Metrics"]


@dataclass
class Metrics:
    """Every metric, on one registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.records_in = Counter("segwatch_records_in", "Records read", ["topic"], registry=r)
        self.records_out = Counter("segwatch_records_out", "Records written", ["topic"], registry=r)
        self.parse_errors = Counter("segwatch_parse_errors", "Records that did not parse",
                                    ["family"], registry=r)  # fmt: skip
        self.dlq_writes = Counter("segwatch_dlq_writes", "Dead letters written", ["stage"],
                                  registry=r)  # fmt: skip
        self.sink_batch_seconds = Histogram("segwatch_sink_batch_seconds",
                                            "Elasticsearch bulk latency", registry=r)  # fmt: skip
        self.bulk_rejected = Counter("segwatch_bulk_rejected", "Documents Elasticsearch refused",
                                     registry=r)  # fmt: skip
        self.alerts_raised = Counter("segwatch_alerts_raised", "Alerts sent by the scorer",
                                     registry=r)  # fmt: skip
        self.alerts_sent = Counter("segwatch_alerts_sent", "Alerts delivered", ["target"],
                                   registry=r)  # fmt: skip
        self.webhook_failures = Counter("segwatch_webhook_failures", "Deliveries to retry",
                                        ["target"], registry=r)  # fmt: skip
        self.model_reload_failures = Counter("segwatch_model_reload_failures",
                                             "Published models refused", registry=r)  # fmt: skip
        self.model_info = Gauge("segwatch_model_info", "The active model", ["name", "version"],
                                registry=r)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = Metrics()
