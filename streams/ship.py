"""``segwatch ship``: produce raw flow-log records to Kafka, one record per message.

confluent-kafka does the batching (``linger.ms``), compression (lz4) and
retries; every delivery report is counted, and the command fails when any
record was not acknowledged by the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from streams.settings import KafkaSettings

__all__ = ["ShipResult", "producer_config", "ship"]


@dataclass
class ShipResult:
    """What happened to the records: sent and acknowledged, or failed (with the first
    distinct reasons)."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def producer_config(kafka: KafkaSettings, timeout_ms: int = 60_000) -> dict[str, object]:
    """librdkafka settings for shipping: idempotent, acks from all replicas, batched, lz4."""
    return {
        **kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "message.timeout.ms": timeout_ms,
    }


def ship(
    kafka: KafkaSettings,
    topic: str,
    records: Iterable[bytes | tuple[bytes | None, bytes]],
    progress: Callable[[int], None] = lambda n: None,
    timeout_ms: int = 60_000,
) -> ShipResult:
    """Produce every record to ``topic`` and wait for every delivery report.

    :param records: raw records, or (key, record) pairs.
    :param progress: called with the byte count of each record queued.
    """
    result = ShipResult()
    producer = Producer(producer_config(kafka, timeout_ms))

    def report(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            result.delivered += 1
            return
        result.failed += 1
        reason = err.str()
        if reason not in result.errors and len(result.errors) < 5:
            result.errors.append(reason)

    for item in records:
        key, record = item if isinstance(item, tuple) else (None, item)
        while True:
            try:
                producer.produce(topic, record, key=key, on_delivery=report)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.1)
        result.sent += 1
        progress(len(record) + 1)
        producer.poll(0)
    remaining = producer.flush(timeout_ms / 1000 + 5)
    if remaining:
        result.failed += remaining
        result.errors.append(f"{remaining} records still queued when the flush timed out")
    return result
