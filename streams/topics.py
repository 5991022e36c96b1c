"""The pipeline's Kafka topics: what they are, and creating them idempotently."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.settings import KafkaSettings, TopicSettings

__all__ = ["TopicResult", "TopicSpec", "ensure_topics", "list_topics", "pipeline_topics"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic the pipeline needs."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


@dataclass(frozen=True)
class TopicResult:
    """What :func:`ensure_topics` did with one topic: ``created`` or ``exists``."""

    spec: TopicSpec
    outcome: str
    partitions: int
    note: str = ""


def pipeline_topics(topics: TopicSettings) -> list[TopicSpec]:
    """Every topic of the pipeline, with its layout and purpose."""
    p, r = topics.partitions, topics.replication_factor
    specs = [
        TopicSpec(topics.raw(f), p, r, purpose=f"raw {f} flow-log records, one per message")
        for f in topics.families
    ]
    specs += [
        TopicSpec(topics.normalized, p, r, purpose="parsed events keyed by initiator host"),
        TopicSpec(topics.events, p, r, purpose="enriched ECS flow events"),
        TopicSpec(
            topics.alerts,
            1,
            r,
            purpose="alerts (new or changed), keyed by fingerprint, "
            "on one partition: the incident stage reads them all in order",
        ),
        TopicSpec(
            topics.incidents,
            1,
            r,
            purpose="incident changes keyed by incident: the latest documents for the "
            "incidents index and the pages, each read by its own sink's consumer group",
        ),
        TopicSpec(topics.dlq, p, r, purpose="records that failed, with the raw bytes and reason"),
        TopicSpec(
            topics.model,
            1,
            r,
            config={"cleanup.policy": "compact"},
            purpose="the active segmentation model (compacted, latest wins)",
        ),
    ]
    return specs


def ensure_topics(
    kafka: KafkaSettings, specs: list[TopicSpec], timeout: float = 30.0
) -> list[TopicResult]:
    """Create the topics that are missing; leave existing ones as they are.

    Running it twice is harmless: the second run reports every topic as
    ``exists``. An existing topic with fewer partitions than asked for is
    reported in the result's ``note`` (Kafka can add partitions, but doing so
    reshuffles keys, so that is left to the operator).

    :raises KafkaException: the broker refused a topic for another reason.
    """
    admin = AdminClient(kafka.client_config())
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication_factor,
            config=s.config,
        )
        for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    outcomes: dict[str, str] = {}
    for name, fut in futures.items():
        try:
            fut.result()
            outcomes[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            outcomes[name] = "exists"
    existing = _wait_for_metadata(kafka, [s.name for s in specs], timeout)
    results = []
    for spec in specs:
        partitions = existing.get(spec.name, 0)
        note = ""
        if partitions < spec.partitions:
            note = f"has {partitions} partitions, {spec.partitions} configured"
        results.append(TopicResult(spec, outcomes[spec.name], partitions, note))
    return results


def _wait_for_metadata(kafka: KafkaSettings, names: list[str], timeout: float) -> dict[str, int]:
    """Topic metadata, once every named topic shows up in it (new ones take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        existing = list_topics(kafka, timeout)
        if all(existing.get(n) for n in names) or time.monotonic() > deadline:
            return existing
        time.sleep(0.2)


def list_topics(kafka: KafkaSettings, timeout: float = 10.0) -> dict[str, int]:
    """The cluster's topics (internal ones left out) with their partition counts."""
    admin = AdminClient(kafka.client_config())
    meta = admin.list_topics(timeout=timeout)
    return {
        name: len(t.partitions)
        for name, t in sorted(meta.topics.items())
        if not name.startswith("__")
    }
