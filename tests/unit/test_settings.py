"""Configuration: defaults, file, environment, errors that name the field, masked secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SEGWATCH_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_local_stack() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.elasticsearch.url == "http://127.0.0.1:9200"
    assert s.topics.raw("calico") == "flows.raw.calico"


def test_file_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "segwatch.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: broker-a:9092\ntopics:\n  partitions: 12\n")
    assert load_settings(cfg).kafka.bootstrap_servers == "broker-a:9092"
    monkeypatch.setenv("SEGWATCH_KAFKA__BOOTSTRAP_SERVERS", "broker-b:9093")
    s = load_settings(cfg)
    assert s.kafka.bootstrap_servers == "broker-b:9093"  # environment wins over the file
    assert s.topics.partitions == 12  # the file still applies where the environment is silent


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("elasticsearch:\n  url: https://es.example:9200\n")
    monkeypatch.setenv("SEGWATCH_CONFIG", str(cfg))
    assert load_settings().elasticsearch.url == "https://es.example:9200"


def test_invalid_value_names_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("topics:\n  partitions: 0\n")
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert str(cfg) in str(err.value)
    assert "topics.partitions" in str(err.value)


@pytest.mark.parametrize(
    ("key", "name"), [("events_stream", "flows"), ("alerts_index", "Segwatch-alerts-x")]
)
def test_index_names_outside_the_templates_patterns_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, name: str
) -> None:
    # no shipped template would match them: Elasticsearch would guess the mappings
    monkeypatch.setenv(f"SEGWATCH_ELASTICSEARCH__{key.upper()}", name)
    with pytest.raises(SettingsError, match=rf"elasticsearch\.{key}"):
        load_settings()
    monkeypatch.setenv(f"SEGWATCH_ELASTICSEARCH__{key.upper()}", f"segwatch-{key[:6]}-prod")
    assert getattr(load_settings().elasticsearch, key) == f"segwatch-{key[:6]}-prod"


def test_names_follow_elastics_scheme_and_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    es = load_settings().elasticsearch
    assert es.namespace == "default" and es.events_stream is None
    assert es.events_target("segwatch.zeek") == "logs-segwatch.zeek-default"
    assert es.alerts_index == "logs-segwatch.alerts-default"
    assert es.incidents_index == "logs-segwatch.incidents-default"
    monkeypatch.setenv("SEGWATCH_ELASTICSEARCH__NAMESPACE", "eu_west")
    es = load_settings().elasticsearch
    assert es.alerts_index == "logs-segwatch.alerts-eu_west"
    assert "logs-segwatch.vpcflow-eu_west" in es.events_targets()
    assert es.events_pattern() == ("logs-segwatch.*-eu_west,-logs-segwatch.alerts-eu_west,"
                                   "-logs-segwatch.incidents-eu_west")  # fmt: skip
    for bad in ("eu-west", "Prod", ""):  # '-' separates the parts of the name
        monkeypatch.setenv("SEGWATCH_ELASTICSEARCH__NAMESPACE", bad)
        with pytest.raises(SettingsError, match=r"elasticsearch\.namespace"):
            load_settings()
    # segwatch 0.1's single stream, when asked for
    monkeypatch.setenv("SEGWATCH_ELASTICSEARCH__NAMESPACE", "default")
    monkeypatch.setenv("SEGWATCH_ELASTICSEARCH__EVENTS_STREAM", "segwatch-events")
    es = load_settings().elasticsearch
    assert es.events_targets() == ["segwatch-events"] == [es.events_pattern()]


def test_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("kafka:\n  bootstrap_server: x:1\n")
    with pytest.raises(SettingsError, match=r"kafka\.bootstrap_server"):
        load_settings(cfg)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_sasl_settings_reach_the_client_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEGWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SEGWATCH_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("SEGWATCH_KAFKA__SASL_PASSWORD", "s3cret-value")
    conf = load_settings().kafka.client_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cret-value"


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGWATCH_KAFKA__SASL_PASSWORD", "s3cret-value")
    monkeypatch.setenv("SEGWATCH_ELASTICSEARCH__API_KEY", "key-material")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cret-value" not in result.output and "key-material" not in result.output
    shown = json.loads(result.output)
    assert shown["kafka"]["sasl_password"] == "**********"


def test_cli_config_error_exits_2_with_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("kafka: [not, a, mapping]\n")
    result = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output
