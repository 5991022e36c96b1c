"""Session fixtures for the real local stack (`make services-up`).

The services are never mocked and a test that needs one never skips: when
Kafka or Elasticsearch does not answer, the test fails and says how to start
them. `make test` starts them before pytest runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

from streams.health import check_elasticsearch, check_kafka
from streams.settings import ElasticsearchSettings, KafkaSettings, Settings, load_settings

_HINT = "start the local stack with `make services-up` (or run `make test`)"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> KafkaSettings:
    ok, detail = check_kafka(settings.kafka)
    if not ok:
        pytest.fail(f"Kafka is not reachable: {detail}; {_HINT}", pytrace=False)
    return settings.kafka


@pytest.fixture(scope="session")
def es_settings(settings: Settings) -> ElasticsearchSettings:
    ok, detail = check_elasticsearch(settings.elasticsearch)
    if not ok:
        pytest.fail(f"Elasticsearch is not healthy: {detail}; {_HINT}", pytrace=False)
    return settings.elasticsearch


@pytest.fixture(scope="session")
def es(es_settings: ElasticsearchSettings) -> Iterator[Elasticsearch]:
    client = Elasticsearch(**es_settings.client_kwargs())
    yield client
    client.close()


def events_index(namespace: str) -> str:
    """Every events stream of one namespace, as one index expression (its alerts and
    incidents, named in the same scheme, left out)."""
    return ElasticsearchSettings(namespace=namespace).events_pattern()


@pytest.fixture
def unique() -> str:
    """A short random name part, so tests never see each other's topics or indices."""
    return uuid.uuid4().hex[:10]
