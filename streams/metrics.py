"""Prometheus metrics of the worker (served at ``/metrics`` on the worker's web port)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

__all__ = ["CONTENT_TYPE_LATEST", "METRICS", "LagMeter", "Metrics", "group_lag", "scrape"]


@dataclass
class Metrics:
    """Every metric, on one registry, with the client's standard process (CPU, memory,
    file descriptors), platform (Python version) and garbage-collector collectors."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.records_in = Counter("segwatch_records_in", "Records read", ["topic"], registry=r)
        self.records_out = Counter("segwatch_records_out", "Records written", ["topic"], registry=r)
        self.parse_errors = Counter("segwatch_parse_errors", "Records that did not parse",
                                    ["family"], registry=r)  # fmt: skip
        self.state_records = Counter("segwatch_state_records", "Records that are no flow "
                                     "(VPC NODATA/SKIPDATA), indexed, not scored",
                                     ["dataset"], registry=r)  # fmt: skip
        self.dlq_writes = Counter("segwatch_dlq_writes", "Dead letters written", ["stage"],
                                  registry=r)  # fmt: skip
        self.sink_batch_seconds = Histogram("segwatch_sink_batch_seconds",
                                            "Elasticsearch bulk latency", registry=r)  # fmt: skip
        self.bulk_rejected = Counter("segwatch_bulk_rejected", "Documents Elasticsearch refused",
                                     registry=r)  # fmt: skip
        self.alerts_raised = Counter("segwatch_alerts_raised", "Alerts sent by the scorer",
                                     registry=r)  # fmt: skip
        self.incidents_opened = Counter("segwatch_incidents_opened", "Incidents opened",
                                        registry=r)  # fmt: skip
        self.incidents_open = Gauge("segwatch_incidents_open", "Incidents open now", registry=r)
        self.pages_sent = Counter(
            "segwatch_pages_sent", "Incident pages delivered (index: documents upserted)",
            ["target", "action"], registry=r,
        )  # fmt: skip
        self.retries = Counter("segwatch_retries", "Calls to a dependency tried again",
                               ["sink"], registry=r)  # fmt: skip
        self.refused = Counter("segwatch_refused", "Items a target refused (dead-lettered)",
                               ["sink"], registry=r)  # fmt: skip
        self.stage_waiting = Gauge("segwatch_stage_waiting",
                                   "1 while a stage waits for a dependency", ["stage"],
                                   registry=r)  # fmt: skip
        self.stage_restarts = Counter("segwatch_stage_restarts",
                                      "A stage's loop started again after an unexpected error",
                                      ["stage"], registry=r)  # fmt: skip
        self.model_reload_failures = Counter("segwatch_model_reload_failures",
                                             "Published models refused", registry=r)  # fmt: skip
        self.consumer_lag = Gauge("segwatch_consumer_lag", "Records not yet consumed",
                                  ["topic", "partition"], registry=r)  # fmt: skip
        self.normalize_held = Gauge(
            "segwatch_normalize_held",
            "1 while the normalize stage waits for the score stage to catch up",
            registry=r,
        )
        self.model_info = Gauge("segwatch_model_info", "The active model", ["name", "version"],
                                registry=r)  # fmt: skip

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


METRICS = Metrics()


def group_lag(
    consumer: Consumer, partitions: list[TopicPartition], timeout: float = 10
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> high watermark minus the committed offset of the group of
    ``consumer`` (a confluent-kafka Consumer, which need not have joined it)."""
    lag = {}
    for tp in consumer.committed(partitions, timeout=timeout) if partitions else []:
        _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        lag[(tp.topic, tp.partition)] = max(high - max(tp.offset, 0), 0)
    return lag


class LagMeter:
    """Consumer lag (high watermark minus the committed offset) of the partitions this
    worker owns, per group, each group asked through one long-lived consumer that never
    joins it: no consumer is made per measurement, and no worker reports a partition
    another one reads, so sums over the workers are right.

    (Not the ``AdminClient``'s group-offset calls: their coordinator requests abort the
    whole process inside librdkafka when the broker goes away meanwhile.)"""

    def __init__(self, kafka_conf: dict[str, object], timeout: float = 10.0) -> None:
        self.conf = dict(kafka_conf)
        self.timeout = timeout
        self._clients: dict[str, Consumer] = {}

    def measure(self, group: str, owned: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> lag, for ``owned`` in ``group``."""
        from confluent_kafka import Consumer, TopicPartition

        if not owned:
            return {}
        client = self._clients.get(group)
        if client is None:
            client = self._clients[group] = Consumer(
                {**self.conf, "group.id": group, "enable.auto.commit": False}
            )
        partitions = [TopicPartition(t, p) for t, p in owned]
        return group_lag(client, partitions, self.timeout)


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> list[Sample]:
    """A worker's ``/metrics`` as samples (name, labels, value); none if it does not answer."""
    import urllib.request

    try:
        url = f"http://{host}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
