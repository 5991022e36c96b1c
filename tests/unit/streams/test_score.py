"""The score stage apart from faust: a normalized message in, its scored events, the
alerts and the dead letters out; a model switch changes the verdicts from then on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from detector.detect import DetectorSettings
from detector.model import compile_model, model_from_text
from streams.pipeline import Scorer, pack, spans
from streams.score import HEADS_HEADER, ScoreStage
from streams.settings import TopicSettings

from ..detect.conftest import MONDAY, RULES, event, example

ROOT = Path(__file__).resolve().parents[3]


class _State:
    def __init__(self) -> None:
        self.saved: list[int] = []

    def save(self, partition: int, engine: Any) -> None:
        self.saved.append(partition)


def _stage(name: str = "three_tier_vpc.yaml") -> tuple[ScoreStage, _State]:
    state = _State()
    scorer = Scorer(example(name), DetectorSettings(learning_seconds=0), str(RULES))
    return ScoreStage(TopicSettings(), scorer, state), state


def _message(*events: dict[str, Any]) -> bytes:
    for i, e in enumerate(events):
        e.setdefault("event", {})["id"] = f"t-0-{i}-0"
    return orjson.dumps(list(events))


def test_a_message_gives_its_scored_events_alerts_and_dead_letters() -> None:
    stage, state = _stage()
    poison = event("10.0.1.10", "10.0.3.30", 5432, MONDAY)
    poison["source"]["ip"] = ["10.0.1.10"]  # past every parser check: the scorer refuses it
    value = _message(event("10.0.1.10", "10.0.2.20", 8080, MONDAY),
                     event("10.0.1.10", "10.0.3.30", 5432, MONDAY + 1), poison)  # fmt: skip
    sends = stage.message(value, b"dmz", 1, 42)
    by_topic: dict[str, list[Any]] = {}
    for topic, key, body, partition, headers in sends:
        by_topic.setdefault(topic, []).append((key, orjson.loads(body), partition, headers))
    ((key, scored, _, headers),) = by_topic["flows.events"]
    assert key == b"dmz" and [e["segmentation"]["verdict"] for e in scored] == [
        "allowed", "violation"]  # fmt: skip
    ((name, heads),) = headers  # each scored event's id and dataset, for the index stage
    assert name == HEADS_HEADER and orjson.loads(heads) == [
        [e["event"]["id"], e["event"].get("dataset", "")] for e in scored]  # fmt: skip
    ((_, letter, _, _),) = by_topic["flows.dlq"]
    assert letter["stage"] == "score" and "could not be scored: TypeError" in letter["reason"]
    assert letter["source"] == {"topic": "flows.normalized", "partition": 1, "offset": 42}
    alerts = by_topic["flows.alerts"]
    assert alerts and all(partition == 0 for _, _, partition, _ in alerts)  # one partition
    assert state.saved == [1]


def test_what_is_not_an_array_of_events_is_a_dead_letter() -> None:
    stage, state = _stage()
    for value in (b"{not json", b'{"a": 1}', b"[1, 2]"):
        ((topic, _, body, _, _),) = stage.message(value, None, 0, 7)
        assert topic == "flows.dlq" and orjson.loads(body)["raw"] == value.decode()
    assert state.saved == []


def test_a_switch_changes_the_verdicts_from_the_next_message_on() -> None:
    stage, _ = _stage()
    db = event("10.0.1.10", "10.0.3.30", 5432, MONDAY)

    def verdict() -> str:
        sends = stage.message(_message(dict(db, source=dict(db["source"]))), None, 0, 0)
        (scored,) = [orjson.loads(b) for t, _, b, *_ in sends if t == "flows.events"]
        return str(scored[0]["segmentation"]["verdict"])

    assert verdict() == "violation"
    before = stage.scorer.model.version
    stage.switch(None)
    stage.switch(stage.scorer.model)
    assert stage.scorer.model.version == before  # nothing to switch to
    text = (ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml").read_text()
    opened = text + "  - {id: dmz-to-db, from: dmz, to: db, protocol: tcp, ports: [5432]}\n"
    stage.switch(compile_model(model_from_text(opened, "opened")))
    assert stage.scorer.model.version != before
    assert verdict() == "allowed"


def test_what_other_scorers_learnt_is_taken_in_and_a_bad_snapshot_left_out() -> None:
    stage, _ = _stage()
    good = {"odd_port": {"started": MONDAY - 60, "counts": {"db": {"5432": 7}},
                         "totals": {"db": 7}}}  # fmt: skip
    feed = [({11: MONDAY}, {3: {"odd_port": {"counts": 1}}, 4: good})]  # 3: not ours
    stage.learnt = lambda: feed.pop() if feed else ({}, {})
    sends = stage.message(_message(event("10.0.1.10", "10.0.2.20", 8080, MONDAY)), None, 0, 0)
    assert [t for t, *_ in sends].count("flows.events") == 1  # scored all the same
    memory = stage.scorer.memory
    assert memory.paths[11] == MONDAY and memory.port_totals["db"] == 7
    assert memory.port_counts["db"][5432] == 7 and memory.started["odd_port"] == MONDAY - 60


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=60), st.integers(10, 1_000))
def test_packed_arrays_keep_every_event_in_order_within_the_limit(
    parts: list[bytes], limit: int
) -> None:
    """Each run of events is one array of at most ``limit`` bytes, or a single event
    larger than that on its own; together the runs are the events, in order."""
    runs = list(spans(parts, limit))
    assert [p for start, end in runs for p in parts[start:end]] == parts
    for (start, end), packed in zip(runs, pack(parts, limit), strict=True):
        assert packed == b"[" + b",".join(parts[start:end]) + b"]"
        assert len(packed) <= limit or end - start == 1
