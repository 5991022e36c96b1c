"""The worker's stages on an in-memory transport: a delivery stage waits (paused, its
wait reported) while its sink cannot take a batch, dead-letters what the sink refuses,
commits only after; a stage's loop is started again after a surprise and stopped for
good only by a fatal error; the stages a worker runs follow its roles."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from detector.connection import key_partition
from streams.app import worker_stages
from streams.deliver import DeliveryLoop, TemplateGate, alert_items, document_items, page_items
from streams.errors import Fatal, Unavailable
from streams.loop import StageLoop
from streams.metrics import METRICS
from streams.model_sync import ModelWatcher
from streams.retry import RetrySettings, Stopped
from streams.score import HEADS_HEADER
from streams.settings import Settings
from streams.sinks import Item, Sink, Written
from streams.webhooks import WebhookTarget

from .memory_kafka import Broker, MemoryProducer, in_memory

FAST = RetrySettings(initial_seconds=0.01, max_seconds=0.02)


def _settings(**extra: Any) -> Settings:
    return Settings(retry=FAST, **extra)


class FlakySink(Sink):
    """Cannot take anything for its first ``down`` attempts; refuses items named bad."""

    kind = "memory"

    def __init__(self, down: int, stage: list[StageLoop]) -> None:
        self.name, self.dependency = "flaky", "memory target"
        self.down, self.stage = down, stage
        self.taken: list[str] = []
        self.indices: set[str | None] = set()  # where the taken items were to go
        self.seen_waiting: list[dict[str, Any] | None] = []

    def write(self, items: Sequence[Item]) -> Written:
        self.seen_waiting.append(self.stage[0].waiting.report())
        if self.down > 0:
            self.down -= 1
            raise Unavailable(self.dependency, "connection refused")
        written = Written()
        for item in items:
            if item.id.startswith("bad"):
                written.refused.append((item, "the target refuses bad ones"))
            else:
                self.taken.append(item.id)
                self.indices.add(item.index)
        return written


def _until(condition: Any, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.01)
    assert condition()


def test_a_delivery_stage_waits_for_its_target_then_delivers_dead_letters_and_commits() -> None:
    settings = _settings()
    broker = Broker()
    for fingerprint in ("a", "bad-b", "c"):
        doc = {"segwatch": {"alert": {"fingerprint": fingerprint}}}
        broker.append("alerts", orjson.dumps(doc))
    broker.append("alerts", b"not an alert")
    holder: list[StageLoop] = []
    sink = FlakySink(down=3, stage=holder)
    stage = DeliveryLoop(settings, "alerts-index", "alerts", lambda: sink, alert_items)
    holder.append(in_memory(stage, broker))
    before = METRICS.retries.labels("flaky")._value.get()  # type: ignore[attr-defined]
    stage.start()
    try:
        _until(lambda: broker.committed.get(("segwatch-alerts-index", "alerts")) == 4)
    finally:
        stage.stop()
    assert sink.taken == ["a", "c"]  # in order, each once
    assert sink.seen_waiting[0] is None and sink.seen_waiting[-1] is not None
    waited = sink.seen_waiting[-1]
    assert waited["on"] == "memory target" and waited["retries"] == 3
    assert "connection refused" in waited["reason"]
    assert stage.waiting.report() is None  # the wait ended with the delivery
    assert METRICS.retries.labels("flaky")._value.get() == before + 3  # type: ignore[attr-defined]
    assert broker.consumers[0].pauses == 3  # each wait kept the membership, partitions paused
    letters = [orjson.loads(v) for v in broker.values(settings.topics.dlq)]
    assert [(d["stage"], d["reason"][:24]) for d in letters] == [
        ("alerts-index", "not what alerts-index ta"),
        ("alerts-index", "the target refuses bad o"),
    ]
    assert orjson.loads(letters[1]["raw"])["segwatch"]["alert"]["fingerprint"] == "bad-b"
    assert stage.failed is None and stage.restarts == 0


def test_a_stage_says_what_it_owns_without_calling_into_its_consumer() -> None:
    """The worker's lag timer asks from the event loop's thread; a call into a consumer
    inside ``poll`` on the stage's thread would block that loop (and /healthz with it)."""
    broker = Broker()
    broker.append("alerts", orjson.dumps({"segwatch": {"alert": {"fingerprint": "a"}}}))
    sink = FlakySink(down=0, stage=[])
    stage = in_memory(DeliveryLoop(_settings(), "alerts-index", "alerts", lambda: sink,
                                   alert_items), broker)  # fmt: skip
    assert stage.owned() == []
    sink.stage.append(stage)
    stage.start()
    try:
        _until(lambda: stage.owned() == [("alerts", 0)])
    finally:
        stage.stop()
    assert stage.owned() == []  # revoked when it closed
    assert stage.restarts == 0


def test_dead_letters_are_written_again_until_kafka_takes_them() -> None:
    settings = _settings()
    broker = Broker()
    stage = in_memory(DeliveryLoop(settings, "x", "in", lambda: FlakySink(0, []), alert_items),
                      broker)  # fmt: skip
    before = METRICS.retries.labels("x-kafka")._value.get()  # type: ignore[attr-defined]
    stage._write(MemoryProducer(broker, fail_first=2), "dlq", [(None, b"letter")], "dead letters")
    assert broker.values("dlq") == [b"letter"]  # once, after two failed deliveries
    assert METRICS.retries.labels("x-kafka")._value.get() == before + 2  # type: ignore[attr-defined]


class _Surprised(StageLoop):
    name = "surprised"

    def __init__(self, settings: Settings, errors: list[BaseException]) -> None:
        super().__init__(settings)
        self.errors = errors
        self.runs = 0

    def _loop(self) -> None:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)


def test_a_stage_starts_again_after_a_surprise_and_stops_only_for_a_fatal_error() -> None:
    stage = _Surprised(_settings(), [RuntimeError("a bug"), KeyError("another")])
    stage.start()
    _until(lambda: not stage.running)
    assert stage.runs == 3 and stage.restarts == 2 and stage.failed is None
    fatal = _Surprised(_settings(), [Fatal("elasticsearch", "version 7 is not supported")])
    fatal.start()
    _until(lambda: not fatal.running)
    assert fatal.runs == 1 and fatal.status()["state"] == "failed"
    assert "version 7 is not supported" in fatal.status()["error"]


def test_stages_wait_for_the_templates_and_stop_with_the_gate() -> None:
    settings = _settings()
    gate = TemplateGate(settings)
    stage = _Surprised(settings, [])
    threading.Timer(0.2, gate.ready.set).start()
    gate.wait(stage)  # returns once the templates are in
    assert stage.waiting.report() is None
    failed = TemplateGate(settings)
    failed.failed = Fatal("elasticsearch", "lifecycle ilm is not run here")
    with pytest.raises(Fatal, match="templates cannot be installed"):
        failed.wait(stage)
    stopped = _Surprised(settings, [])
    stopped._stop.set()
    with pytest.raises(Stopped):
        TemplateGate(settings).wait(stopped)


def test_the_stages_follow_the_roles() -> None:
    hooks = tuple(WebhookTarget(name=n, kind="slack", url="https://hooks.example/x")
                  for n in ("a", "b"))  # fmt: skip
    models = ModelWatcher(None, "model")

    def names(*roles: str) -> list[str]:
        settings = _settings(webhooks=hooks, worker={"roles": roles})
        return [s.name for s in worker_stages(settings, models, None)]

    assert names("normalize") == ["normalize"]
    assert names("score") == ["zones"]  # and faust's agent
    assert names("index") == ["templates", "index"]
    assert names("alert") == ["templates", "incidents", "alerts-index", "incidents-index",
                              "page-a", "page-b"]  # fmt: skip


def test_what_each_delivery_stage_takes_of_its_topic() -> None:
    doc = {"segwatch": {"incident": {"id": "i1", "severity": "high"}}}
    page = {"id": "i1-2-trigger", "incident": "i1", "action": "trigger", "why": "", "doc": doc}
    index = {"id": "i1-2", "incident": "i1", "action": "index", "why": "", "doc": doc}
    where = ("t", 0, 5)
    assert [i.id for i in page_items(orjson.dumps(page), where)] == ["i1-2-trigger"]
    assert page_items(orjson.dumps(index), where) == []
    (item,) = document_items(orjson.dumps(index), where)
    assert item.id == "i1" and orjson.loads(item.body) == doc and item.source == where
    assert document_items(orjson.dumps(page), where) == []
    for bad in (b"[]", b'{"action": "trigger", "doc": [1]}', b"{"):
        with pytest.raises((ValueError, TypeError, KeyError)):
            page_items(bad, where)
    with pytest.raises((KeyError, TypeError)):
        alert_items(b'{"segwatch": {}}', where)


def test_the_normalize_stage_dead_letters_what_a_record_causes_and_goes_on() -> None:
    """Poison pills from the hostile-input review, among good records: each bad one is
    a dead letter with its reason, the good ones are keyed and carried, the batch is
    committed, and the stage never restarts."""
    from pathlib import Path

    from detector.model import compile_model, load_model
    from streams.normalize import NormalizeLoop

    root = Path(__file__).resolve().parents[3]
    model = compile_model(
        load_model(root / "detector" / "assets" / "models" / "three_tier_vpc.yaml")
    )
    settings = _settings(worker={"normalize_ahead": 0})
    topics = settings.topics
    broker = Broker(partitions=6)
    t = 1764064800
    good = f"2 123456789012 eni-1 10.0.1.10 10.0.2.20 40000 8080 6 1 60 {t} {t + 30} ACCEPT OK"
    kernel = "Nov 25 09:00:00 host kernel: DROP: IN=eth0 OUT= SRC=10.0.1.10 DST=10.0.3.5 LEN=60 "
    poison = {
        topics.raw("iptables"): [
            kernel + "PROTO=TCP SPT=40000 DPT=22 MARK=0x" + "f" * 20,  # beyond 64 bits
            orjson.dumps({"__REALTIME_TIMESTAMP": "1" * 20,
                          "MESSAGE": "DROP: IN=eth0 SRC=10.0.0.5 DST=10.0.0.6 PROTO=UDP"}).decode(),
        ],
        topics.raw("calico"): [
            orjson.dumps({"start_time": t, "end_time": t + 1, "source_ip": "10.0.1.1",
                          "dest_ip": "10.0.2.2", "proto": "6", "action": "allow",
                          "source_namespace": ["shop"], "reporter": "src"}).decode(),
            "[" * 1000 + "]" * 1000,
        ],
        topics.raw("vpcflow"): [good, good.replace("40000", "9" * 5000)],
    }  # fmt: skip
    for topic, records in poison.items():
        for record in records:
            broker.append(topic, record.encode())
    stage = in_memory(NormalizeLoop(settings, lambda: model), broker)
    stage.start()
    try:
        _until(lambda: sum(v for (g, _), v in broker.committed.items()
                           if g.endswith("-normalize")) == 6)  # fmt: skip
    finally:
        stage.stop()
    letters = [orjson.loads(v) for v in broker.values(topics.dlq)]
    assert len(letters) == 5 and all(d["reason"] and d["raw"] for d in letters)
    assert any("cannot be carried" in d["reason"] for d in letters)  # the 64-bit mark
    (carried,) = broker.topics[topics.normalized]
    # on the partition the connection's initiator hashes to (one message per partition)
    assert carried.partition() == key_partition(b"10.0.1.10", 6) != 0
    assert carried.key() is None and len(orjson.loads(carried.value())) == 1
    assert stage.restarts == 0 and stage.failed is None


def test_a_vpc_header_holds_for_its_own_producer_only() -> None:
    """One producer declares a custom layout (destination first); another's records,
    and keyless ones, keep the default layout: a header is never global."""
    from streams.pipeline import Normalizer

    normalizer = Normalizer("vpcflow")
    t = 1764064800
    header = b"version dstaddr srcaddr account-id interface-id srcport dstport protocol packets " \
             b"bytes start end action log-status"  # fmt: skip
    custom = f"2 10.0.2.20 10.0.1.10 123456789012 eni-1 40000 443 6 1 60 {t} {t + 1} ACCEPT OK"
    plain = f"2 123456789012 eni-1 10.0.1.10 10.0.2.20 40000 443 6 1 60 {t} {t + 1} ACCEPT OK"

    def source_of(raw: str, key: bytes | None) -> str:
        (event,), _ = normalizer.normalize(raw.encode(), "t", 0, 1, key)
        return str(event["source"]["ip"])

    assert normalizer.normalize(header, "t", 0, 0, b"host-a:/var/log/a.log") == ([], [])
    assert source_of(custom, b"host-a:/var/log/a.log") == "10.0.1.10"  # its header applies
    assert source_of(plain, b"host-b:/var/log/b.log") == "10.0.1.10"  # another producer's does not
    assert source_of(plain, None) == "10.0.1.10"  # nor a keyless record's
    assert normalizer.normalize(header, "t", 0, 2) == ([], [])  # a keyless header ...
    assert source_of(plain, None) == "10.0.1.10"  # ... holds for nothing after it


def test_the_index_stage_writes_after_the_gate_dead_letters_refusals_and_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams import index

    settings = _settings()
    broker = Broker()
    events = settings.topics.events
    for start in (0, 3):  # the score stage's ids in a header, or (a stranger's) without
        batch = [{"event": {"id": f"flows.raw.vpcflow-0-{i}-0", "dataset": "segwatch.vpcflow"},
                  "n": i} for i in range(start, start + 3)]  # fmt: skip
        heads = [(e["event"]["id"], e["event"]["dataset"]) for e in batch]
        broker.append(events, orjson.dumps(batch),
                      headers=[(HEADS_HEADER, orjson.dumps(heads))] if start else None)  # fmt: skip
    broker.append(events, b'{"not": "a batch"}')
    broker.append(events, orjson.dumps([
        {"event": {"id": "bad-mapping", "dataset": "segwatch.calico"}, "port": "https"},
        {"event": {"id": "flows.raw.x-0-9-0", "dataset": "other"}}]))  # fmt: skip
    holder: list[StageLoop] = []
    sink = FlakySink(down=2, stage=holder)
    monkeypatch.setattr(index, "make_sink", lambda *args: sink)
    monkeypatch.setattr(index, "Elasticsearch", lambda **kwargs: None)
    gate = TemplateGate(settings)
    stage = in_memory(index.IndexLoop(settings, gate), broker)
    holder.append(stage)
    stage.start()
    time.sleep(0.3)
    assert sink.taken == [] and stage.waiting.report()["on"] == "elasticsearch index templates"
    gate.ready.set()
    try:
        _until(lambda: broker.committed.get(("segwatch-index", events)) == 4)
    finally:
        stage.stop()
    assert sink.taken == [f"flows.raw.vpcflow-0-{i}-0" for i in range(6)]
    assert sink.indices == {"logs-segwatch.vpcflow-default"}  # each family to its own stream
    letters = [orjson.loads(v) for v in broker.values(settings.topics.dlq)]
    assert [d["reason"][:40] for d in letters] == [
        "not a JSON array of events with event.id", "event.dataset is 'other', not one of seg",
        "the target refuses bad ones"]  # fmt: skip
    assert letters[2]["source"]["offset"] == 3  # where the refused event was read
    assert orjson.loads(letters[2]["raw"])["port"] == "https"
    assert stage.failed is None


def test_the_index_stage_reads_ids_from_the_header_only_if_it_fits() -> None:
    from streams.index import _heads

    from .memory_kafka import Message

    heads = [["a-0-1-0", "segwatch.vpcflow"], ["a-0-2-0", "segwatch.calico"]]

    def message(*headers: tuple[str, bytes]) -> Message:
        return Message("flows.events", 0, 0, b"[]", None, list(headers))

    assert _heads(message((HEADS_HEADER, orjson.dumps(heads))), 2) == [tuple(h) for h in heads]
    assert _heads(message((HEADS_HEADER, orjson.dumps(heads))), 3) is None  # not these events'
    assert _heads(message((HEADS_HEADER, b"[[1, 2]]")), 1) is None  # not strings
    assert _heads(message((HEADS_HEADER, b"{broken")), 1) is None
    assert _heads(message(("other", orjson.dumps(heads))), 2) is None
    assert _heads(Message("flows.events", 0, 0, b"[]"), 0) is None  # no headers at all


def test_the_incident_stage_pages_once_across_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alerts in; the trigger page and the incident document out on flows.incidents,
    the book in the state topic, a stranger's message dead-lettered; a new stage takes
    the state over and pages the same incident's next alert as no second trigger."""
    from streams import incidents
    from tests.unit.detect.conftest import MONDAY
    from tests.unit.test_incidents import alert

    from .memory_kafka import MemoryConsumer

    settings = _settings()
    topics = settings.topics
    broker = Broker()
    monkeypatch.setattr(incidents, "ensure_topics", lambda *args, **kwargs: [])
    monkeypatch.setattr(incidents, "Consumer",
                        lambda conf: MemoryConsumer(broker, conf["group.id"]))  # fmt: skip
    monkeypatch.setattr(incidents, "Producer", lambda conf: MemoryProducer(broker))

    def run(count: int) -> None:
        stage = in_memory(incidents.IncidentLoop(settings), broker)
        stage.start()
        try:
            _until(lambda: broker.committed.get(("segwatch-incidents", topics.alerts)) == count)
        finally:
            stage.stop()
        assert stage.failed is None and stage.restarts == 0

    scan = dict(src="10.50.10.1", src_zone="dmz", dst_zone="pos", hosts=["10.50.2.1"])
    broker.append(topics.alerts, orjson.dumps(alert("f1", at=MONDAY, **scan)))
    broker.append(topics.alerts, b"not an alert")
    run(2)
    changes = [orjson.loads(v) for v in broker.values(topics.incidents)]
    assert [c["action"] for c in changes] == ["trigger", "index"]
    assert changes[0]["id"].endswith("-trigger") and changes[0]["doc"]["segwatch"]["incident"]
    (letter,) = [orjson.loads(v) for v in broker.values(topics.dlq)]
    assert letter["stage"] == "incidents" and "not an alert document" in letter["reason"]
    assert broker.values(incidents.state_topic(settings))  # the book, before the commit
    broker.append(topics.alerts, orjson.dumps(alert("f2", at=MONDAY + 60, **scan)))
    run(3)  # a new stage: the book comes back from the state topic
    later = [orjson.loads(v)["action"] for v in broker.values(topics.incidents)][2:]
    assert "trigger" not in later and "index" in later  # the same incident, grown


def test_the_normalize_stage_redoes_a_batch_kafka_did_not_take_after_the_policy_wait() -> None:
    from pathlib import Path

    from detector.model import compile_model, load_model
    from streams.normalize import NormalizeLoop

    root = Path(__file__).resolve().parents[3]
    model = compile_model(
        load_model(root / "detector" / "assets" / "models" / "three_tier_vpc.yaml")
    )
    settings = _settings(worker={"normalize_ahead": 0})
    broker = Broker()
    t = 1764064800
    record = f"2 123456789012 eni-1 10.0.1.10 10.0.2.20 40000 8080 6 1 60 {t} {t + 30} ACCEPT OK"
    broker.append(settings.topics.raw("vpcflow"), record.encode())
    before = METRICS.retries.labels("normalize-kafka")._value.get()  # type: ignore[attr-defined]
    stage = in_memory(NormalizeLoop(settings, lambda: model), broker, fail_first=1)
    stage.start()
    try:
        _until(lambda: broker.committed.get(("segwatch-normalize", "flows.raw.vpcflow")) == 1)
    finally:
        stage.stop()
    assert METRICS.retries.labels("normalize-kafka")._value.get() == before + 1  # type: ignore[attr-defined]
    (carried,) = broker.topics[settings.topics.normalized]  # the failed delivery, done again
    assert orjson.loads(carried.value())[0]["event"]["id"] == "flows.raw.vpcflow-0-0-0"
    assert stage.waiting.report() is None and stage.restarts == 0


def test_the_zones_stage_hands_over_other_partitions_snapshots_and_every_path() -> None:
    """The changelog holds snapshots of partitions 0 and 1 (0 twice) and paths: a worker
    that scores partition 0 takes partition 1's snapshot, never its own, and each
    path's latest sighting; an unreadable snapshot is left out."""
    import zlib

    from streams.state import ZoneFeed, state_changelog

    from .memory_kafka import MemoryConsumer

    settings = _settings()
    broker = Broker()
    topic = state_changelog(settings)
    for partition, n in ((0, 1), (1, 2), (0, 3)):
        broker.append(topic, zlib.compress(orjson.dumps({"n": n})), b"%d" % partition)
    broker.append(topic, b"not zlib", b"2")
    for key, seen in ((b"1/path/77", b"100"), (b"0/path/77", b"90"), (b"1/path/78", b"5")):
        broker.append(topic, seen, key)
    stage = ZoneFeed(settings, scored=lambda: [0])
    stage._reader = lambda: MemoryConsumer(broker, "zones")
    stage.start()
    try:
        _until(lambda: stage._snapshots != {} and len(stage._paths) == 2)
    finally:
        stage.stop()
    assert stage.take() == ({77: 100, 78: 5}, {1: {"n": 2}})
    assert stage.take() == ({}, {})  # taken once
    assert stage.failed is None and stage.restarts == 0


def test_the_normalize_stage_follows_partitions_added_and_keeps_its_count_if_unread() -> None:
    from confluent_kafka import KafkaException

    from streams.normalize import NormalizeLoop

    broker = Broker(partitions=6)
    producer = MemoryProducer(broker)
    stage = NormalizeLoop(_settings(worker={"hot_key_share": 0.1}), lambda: None)  # type: ignore[arg-type, return-value]
    assert stage._spread(producer) == 6 and stage.hot is not None and stage.hot.spread == 6
    broker.partitions = 12  # partitions added to the topic
    assert stage._spread(producer) == 6  # read again once a minute
    stage._counted -= 61
    assert stage._spread(producer) == 12 and stage.hot.spread == 12

    def broken(topic: str, timeout: float = 0) -> Any:
        raise KafkaException("the broker is away")

    producer.list_topics = broken  # type: ignore[method-assign]
    stage._counted -= 61
    assert stage._spread(producer) == 12  # a failed read keeps the count
