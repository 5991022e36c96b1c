"""deploy/compose agrees with deploy/local: same versions, ports and node settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    return data["services"]


def _pom(prop: str) -> str:
    text = (DEPLOY / "local" / "pom.xml").read_text()
    match = re.search(rf"<{re.escape(prop)}>([^<]+)</", text)
    assert match, f"pom.xml has no <{prop}>"
    return match.group(1)


def _local_properties() -> dict[str, str]:
    text = (DEPLOY / "local" / "kafka" / "server.properties").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    return {k.strip(): v.strip() for k, v in pairs}


def test_versions_match_the_local_stack() -> None:
    services = _compose()
    es_version = _pom("elasticsearch.version")
    assert services["kafka"]["image"].endswith(":" + _pom("kafka.version"))
    assert services["elasticsearch"]["image"].endswith(":" + es_version)
    assert services["kibana"]["image"].endswith(":" + es_version), "Kibana must match ES"


def test_ports_match_the_local_defaults() -> None:
    services = _compose()
    assert "127.0.0.1:9092:9092" in services["kafka"]["ports"]
    assert "127.0.0.1:9200:9200" in services["elasticsearch"]["ports"]
    assert (
        "PLAINTEXT://127.0.0.1:9092"
        in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )


def test_kafka_settings_match_server_properties() -> None:
    env = _compose()["kafka"]["environment"]
    local = _local_properties()
    for key in (
        "num.partitions",
        "offsets.topic.replication.factor",
        "group.initial.rebalance.delay.ms",
        "auto.create.topics.enable",
        "log.retention.hours",
    ):
        compose_key = "KAFKA_" + key.upper().replace(".", "_")
        assert str(env[compose_key]) == local[key], key


def test_elasticsearch_settings_match_the_local_node() -> None:
    env = _compose()["elasticsearch"]["environment"]
    local = yaml.safe_load(
        re.sub(
            r"@\w+@", "0", (DEPLOY / "local" / "elasticsearch" / "elasticsearch.yml").read_text()
        )
    )
    for key in (
        "cluster.name",
        "discovery.type",
        "xpack.security.enabled",
        "cluster.routing.allocation.disk.threshold_enabled",
    ):
        assert str(env[key]).lower() == str(local[key]).lower(), key
    assert "-Xmx1g" in env["ES_JAVA_OPTS"]


def test_the_segwatch_services_use_settings_the_worker_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()
    assert set(services) == {"kafka", "elasticsearch", "kibana", "setup", "worker",
                             "receiver", "demo"}  # fmt: skip
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, (name, needed)
    worker = services["worker"]
    for key, value in worker["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()  # refuses an unknown or invalid SEGWATCH_* variable
    kafka_env = services["kafka"]["environment"]
    assert (
        f"INTERNAL://{settings.kafka.bootstrap_servers}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert settings.elasticsearch.url == "http://elasticsearch:9200"
    port = settings.worker.web_port
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert f"http://worker:{port}" in services["demo"]["command"]
    (hook,) = settings.webhooks
    assert hook.url.startswith("http://receiver:8088")
    assert services["receiver"]["environment"]["SEGWATCH_RECEIVER_SECRET"] == hook.secret_value()
    assert "8088" in services["receiver"]["command"]
    source, target, _ = worker["volumes"][0].split(":")
    assert (DEPLOY / "compose" / source).resolve().is_file()
    command = worker["command"]
    assert command[0] == "worker" and command[command.index("--model") + 1] == target
    assert command[command.index("--processes") + 1] == "auto"  # the machine's cores
    assert services["setup"]["build"]["dockerfile"] == "Dockerfile"
    assert (DEPLOY / "compose" / services["setup"]["build"]["context"] / "Dockerfile").is_file()
