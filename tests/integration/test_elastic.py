"""Templates and sinks against the real Elasticsearch node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import Elasticsearch

from detector.analyze import Analysis
from detector.definitions import ECS_VERSION, FAMILIES
from detector.detect import DetectorSettings, Engine
from detector.files import iter_records
from detector.model import compile_model, load_model
from detector.parsers import ParseOptions, make_parser
from streams.elastic import index_templates, install_templates, load_components
from streams.errors import Fatal
from streams.retry import RetryPolicy
from streams.settings import ElasticsearchSettings
from streams.sinks import Item, deliver, make_sink
from tests.integration.conftest import events_index

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def installed(es: Elasticsearch) -> Any:
    return install_templates(es)


def _events() -> list[tuple[str, dict[str, Any]]]:
    """Every golden record of every family, placed and scored on the three-tier model."""
    model = compile_model(
        load_model(ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml")
    )
    run = Analysis(model, Engine(model, DetectorSettings()))
    out = []
    for folder in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        parser = make_parser(
            folder.name, ParseOptions(reference_time=2_000_000_000, syslog_year=2026)
        )
        for path in sorted(folder.iterdir()):
            if path.name.endswith("-expected.json"):
                continue
            for number, raw in iter_records(str(path)):
                for i, result in enumerate(parser.parse(raw)):
                    if isinstance(result, dict):
                        event_id = f"{folder.name}-{path.name}-{number}-{i}"
                        run.process(result, event_id)
                        out.append((event_id, result))
    return out


def test_templates_install_idempotently_and_say_what_they_adapted(
    es: Elasticsearch, installed: Any
) -> None:
    again = install_templates(es)
    assert again.installed == installed.installed
    assert installed.server_version.startswith(("8.", "9."))
    for name in load_components():
        assert es.cluster.get_component_template(name=name)["component_templates"]
    for name, body in index_templates().items():
        (got,) = es.indices.get_index_template(name=name)["index_templates"]
        assert got["index_template"]["index_patterns"] == body["index_patterns"]
    # one data stream template per family, regular-index ones for alerts and incidents,
    # above the built-in logs-*-* template (priority 100)
    names = set(index_templates())
    assert names == {f"logs-segwatch.{f}" for f in FAMILIES} | {
        "logs-segwatch.alerts",
        "logs-segwatch.incidents",
    }
    # this node has no x-pack stack templates: segwatch's own ECS component serves
    assert "the server has no ecs@mappings: segwatch-ecs maps ECS" in installed.adaptations


def _stream_items(events: list[tuple[str, dict[str, Any]]], namespace: str) -> list[Item]:
    """Items routed as the index stage routes them: each family to its own stream."""
    return [Item(doc_id, orjson.dumps(event), index=f"logs-{event['event']['dataset']}-{namespace}")
            for doc_id, event in events]  # fmt: skip


def test_every_family_indexes_into_its_own_data_stream_and_queries_work(
    es: Elasticsearch, installed: Any, unique: str
) -> None:
    namespace = f"test{unique}"
    stream = events_index(namespace)
    events = _events()
    families = {e["event"]["dataset"] for _, e in events}
    assert families == {f"segwatch.{f}" for f in FAMILIES}
    sink = make_sink("elasticsearch-events", es, "unused")
    items = _stream_items(events, namespace)
    for start in range(0, len(items), 50):
        assert deliver(sink, items[start : start + 50], RetryPolicy()) == ([], 0)
    es.indices.refresh(index=stream)
    assert es.count(index=stream)["count"] == len(events)
    for family in FAMILIES:  # each stream is a data stream of its own, with its events only
        name = f"logs-segwatch.{family}-{namespace}"
        (backing,) = es.indices.get(index=name)
        assert backing.startswith(f".ds-{name}-")
        datasets = es.search(index=name, size=0, aggs={"d": {"terms": {
            "field": "data_stream.dataset"}}})["aggregations"]["d"]["buckets"]  # fmt: skip
        assert [b["key"] for b in datasets] == [f"segwatch.{family}"]
        ecs = es.count(index=name, query={"term": {"ecs.version": ECS_VERSION}})["count"]
        assert ecs == es.count(index=name)["count"] > 0
    cidr = es.count(index=stream, query={"term": {"source.ip": "10.0.0.0/8"}})["count"]
    assert 0 < cidr < len(events)
    ports = es.count(index=stream, query={"range": {"destination.port": {"gte": 1, "lte": 1023}}})[
        "count"
    ]
    assert ports > 0
    aggs = es.search(
        index=stream,
        size=0,
        aggs={
            "v": {"terms": {"field": "segmentation.verdict"}},
            "z": {"terms": {"field": "segmentation.source_zone"}},
            "ip": {"terms": {"field": "source.ip", "size": 500}},
            "labels": {"terms": {"field": "source.kubernetes.labels.app"}},
        },
    )
    assert aggs["aggregations"]["v"]["buckets"] and aggs["aggregations"]["z"]["buckets"]
    assert aggs["aggregations"]["labels"]["buckets"]  # flattened labels are searchable
    addresses = [b["key"] for b in aggs["aggregations"]["ip"]["buckets"]]
    assert any(":" in a for a in addresses) and any("." in a for a in addresses)  # v4 and v6
    # a replay writes nothing twice: each 409 counts as written
    assert deliver(sink, items, RetryPolicy()) == ([], 0)
    es.indices.refresh(index=stream)
    assert es.count(index=stream)["count"] == len(events)


def test_the_single_stream_of_segwatch_0_1_keeps_working_when_configured(
    es: Elasticsearch, unique: str
) -> None:
    stream = f"segwatch-events-legacy{unique}"
    settings = ElasticsearchSettings(
        events_stream=stream, alerts_index=f"segwatch-alerts-l{unique}"
    )
    report = install_templates(es, settings)
    assert "index template segwatch-events (segwatch-events*)" in report.installed
    assert "index template segwatch-alerts (segwatch-alerts*)" in report.installed
    events = _events()
    assert {settings.events_target(e["event"]["dataset"]) for _, e in events} == {stream}
    items = [Item(i, orjson.dumps(e), index=stream) for i, e in events]
    assert deliver(make_sink("elasticsearch-events", es, stream), items, RetryPolicy()) == ([], 0)
    es.indices.refresh(index=stream)
    (backing,) = es.indices.get(index=stream)
    assert backing.startswith(f".ds-{stream}-")  # a data stream, as before
    datasets = es.search(index=stream, size=0, aggs={"d": {"terms": {
        "field": "data_stream.dataset"}}})["aggregations"]["d"]["buckets"]  # fmt: skip
    assert len(datasets) == len(FAMILIES)  # every family in the one stream
    install_templates(es)  # back to the default names


def test_a_document_the_mapping_refuses_comes_back_with_the_reason(
    es: Elasticsearch, installed: Any, unique: str
) -> None:
    stream = f"logs-segwatch.vpcflow-test{unique}"
    sink = make_sink("elasticsearch-events", es, stream)
    good = {"@timestamp": "2026-11-25T10:00:00.000Z", "destination": {"port": 443}}
    bad = {"@timestamp": "2026-11-25T10:00:00.000Z", "destination": {"port": "https"}}
    refused, _ = deliver(sink, [Item("good", good), Item("bad", bad)], RetryPolicy())
    ((item, reason),) = refused
    assert item.id == "bad"
    assert "parsing_exception" in reason
    assert "destination.port" in reason
    es.indices.refresh(index=stream)
    assert es.count(index=stream)["count"] == 1


def test_with_the_servers_own_ecs_and_logs_components_the_templates_compose_them(
    es: Elasticsearch, unique: str
) -> None:
    """A server with x-pack's stack templates (ecs@mappings, logs@mappings, logs@settings):
    the index templates compose them, segwatch's ECS component stays out. This node has
    none, so stand-ins are made for the test and removed after it."""
    standins = {
        "ecs@mappings": {
            "template": {
                "mappings": {
                    "dynamic_templates": [
                        {"ecs_ip": {"path_match": ["ip", "*.ip"], "mapping": {"type": "ip"}}}
                    ]
                }
            }
        },
        "logs@mappings": {
            "template": {
                "mappings": {
                    "date_detection": False,
                    "properties": {"@timestamp": {"type": "date"}},
                }
            }
        },
        "logs@settings": {"template": {"settings": {"index": {"codec": "best_compression"}}}},
    }
    for name, body in standins.items():
        es.cluster.put_component_template(name=name, **body)
    try:
        report = install_templates(es)
        assert "composed with the server's ecs@mappings, logs@mappings, logs@settings" in (
            report.adaptations)  # fmt: skip
        (got,) = es.indices.get_index_template(name="logs-segwatch.vpcflow")["index_templates"]
        composed = got["index_template"]["composed_of"]
        assert composed[:3] == ["logs@mappings", "logs@settings", "ecs@mappings"]
        assert "segwatch-ecs" not in composed and "segwatch-fields" in composed
        assert composed[-2:] == ["logs@custom", "logs-segwatch.vpcflow@custom"]
        (alerts,) = es.indices.get_index_template(name="logs-segwatch.alerts")["index_templates"]
        assert "logs@settings" not in alerts["index_template"]["composed_of"]  # its ILM rolls over
        # what a new stream gets: Elastic's ECS dynamic templates, segwatch's own fields
        simulated = es.indices.simulate_index_template(name=f"logs-segwatch.hubble-std{unique}")
        mappings = simulated["template"]["mappings"]
        assert [next(iter(t)) for t in mappings["dynamic_templates"]] == ["ecs_ip"]
        assert "segmentation" in mappings["properties"] and "event" not in mappings["properties"]
    finally:
        for name, body in index_templates().items():  # let go of the stand-ins first
            es.indices.put_index_template(name=name, **body)
        for name in standins:
            es.cluster.delete_component_template(name=name)
        install_templates(es)  # back to what the other tests expect


def test_alerts_are_upserted_by_fingerprint(es: Elasticsearch, installed: Any, unique: str) -> None:
    index = f"logs-segwatch.alerts-test{unique}"
    doc = {
        "@timestamp": "2026-11-25T10:00:00.000Z",
        "event": {"kind": "alert", "risk_score": 80},
        "rule": {"id": "r", "name": "R"},
        "segwatch": {"alert": {"fingerprint": "abc", "count": 1, "severity": "high"}},
    }
    sink = make_sink("elasticsearch-docs", es, index)
    assert deliver(sink, [Item("abc", dict(doc))], RetryPolicy()) == ([], 0)
    later = {**doc, "segwatch": {"alert": {**doc["segwatch"]["alert"], "count": 7}}}
    newest = {**doc, "segwatch": {"alert": {**doc["segwatch"]["alert"], "count": 9}}}
    # a later state replaces the older one; within a batch the last one wins
    assert deliver(sink, [Item("abc", later), Item("abc", newest)], RetryPolicy()) == ([], 0)
    es.indices.refresh(index=index)
    hits = es.search(index=index, query={"term": {"segwatch.alert.fingerprint": "abc"}})["hits"][
        "hits"
    ]
    assert len(hits) == 1 and hits[0]["_source"]["segwatch"]["alert"]["count"] == 9
    es.indices.delete(index=index)


def test_es_setup_command() -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    result = CliRunner(mix_stderr=False).invoke(app, ["es", "setup"])
    assert result.exit_code == 0, result.stderr
    assert "installed index template logs-segwatch.vpcflow (logs-segwatch.vpcflow-*)" in (
        result.stdout)  # fmt: skip
    assert "lifecycle: " in result.stdout


def test_the_lifecycle_used_is_detected_and_said(es: Elasticsearch, installed: Any) -> None:
    runs_dsl = _answers(lambda: es.indices.get_data_lifecycle_stats())
    runs_ilm = _answers(lambda: es.ilm.get_status())
    expected = "dsl" if runs_dsl else "ilm" if runs_ilm else "none"
    assert installed.lifecycle == expected
    assert any(a.startswith(f"lifecycle: {expected} (") for a in installed.adaptations)
    template = es.indices.get_index_template(name="logs-segwatch.calico")["index_templates"][0]
    body = template["index_template"]["template"]
    assert ("lifecycle" in body) == (expected == "dsl")
    # asking for what the server does not run is refused, naming the setting
    missing = "ilm" if not runs_ilm else "dsl" if not runs_dsl else None
    if missing is not None:
        with pytest.raises(Fatal, match=f"elasticsearch.lifecycle is {missing}"):
            install_templates(es, ElasticsearchSettings(lifecycle=missing))
    none = install_templates(es, ElasticsearchSettings(lifecycle="none"))
    assert none.lifecycle == "none"
    install_templates(es)  # back to what the other tests expect


def _answers(call: Any) -> bool:
    from elasticsearch import ApiError

    try:
        call()
        return True
    except ApiError:
        return False
