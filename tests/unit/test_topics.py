"""The pipeline's topic layout (pure: no broker needed)."""

from __future__ import annotations

from streams.settings import TopicSettings
from streams.topics import pipeline_topics


def test_every_pipeline_topic_is_declared() -> None:
    names = [s.name for s in pipeline_topics(TopicSettings())]
    assert names == [
        "flows.raw.vpcflow",
        "flows.raw.calico",
        "flows.raw.iptables",
        "flows.raw.hubble",
        "flows.raw.zeek",
        "flows.normalized",
        "flows.events",
        "flows.alerts",
        "flows.incidents",
        "flows.dlq",
        "segmentation.model",
    ]


def test_partitions_and_replication_come_from_settings() -> None:
    specs = pipeline_topics(TopicSettings(partitions=12, replication_factor=3))
    by_name = {s.name: s for s in specs}
    assert by_name["flows.events"].partitions == 12
    assert by_name["flows.alerts"].partitions == by_name["flows.incidents"].partitions == 1
    assert all(s.replication_factor == 3 for s in specs)
    model = by_name["segmentation.model"]
    assert model.partitions == 1, "the model topic is one ordered log"
    assert model.config == {"cleanup.policy": "compact"}
