"""The pipeline's stages as plain objects, so they can be tested without Kafka:
normalize (raw record -> events or a dead letter), score (event -> enriched
event and alerts), and the dead-letter record itself. ``streams.app`` wires
them into faust agents.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from detector.detect import Alert, DetectorSettings, Engine, ZoneMemory, load_rules
from detector.errors import ParseError
from detector.events import is_flow
from detector.model import CompiledModel
from detector.parsers import ParseOptions, make_parser
from streams.metrics import METRICS

__all__ = ["Normalizer", "Scorer", "dead_letter", "pack", "parse_source_id", "source_id",
           "spans"]  # fmt: skip

MAX_BATCH_BYTES = 512 * 1024  # half Kafka's default message.max.bytes
MAX_LAYOUTS = 4096  # VPC header layouts kept, one per producer
Normalized = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (events, dead letters)


def pack(encoded: Iterable[bytes], limit: int = MAX_BATCH_BYTES) -> Iterator[bytes]:
    """Encoded events as JSON arrays of at most ``limit`` bytes each (half what the broker
    takes, so batched messages never exceed it; an event larger than that travels alone)."""
    parts = list(encoded)
    for start, end in spans(parts, limit):
        yield b"[" + b",".join(parts[start:end]) + b"]"


def spans(encoded: list[bytes], limit: int = MAX_BATCH_BYTES) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of ``encoded`` that :func:`pack` makes one array of."""
    start, size = 0, 2
    for i, part in enumerate(encoded):
        if i > start and size + len(part) + 1 > limit:
            yield start, i
            start, size = i, 2
        size += len(part) + 1
    if start < len(encoded):
        yield start, len(encoded)


def source_id(topic: str, partition: int, offset: int, index: int = 0) -> str:
    """The id of the ``index``-th event of a record: replays give the same id."""
    return f"{topic}-{partition}-{offset}-{index}"


def parse_source_id(event_id: str) -> tuple[str, int, int]:
    """(topic, partition, offset) back from an id made by :func:`source_id`."""
    topic, partition, offset, _ = event_id.rsplit("-", 3)
    return topic, int(partition), int(offset)


def dead_letter(
    raw: bytes,
    topic: str,
    partition: int,
    offset: int,
    stage: str,
    reason: str,
    family: str | None = None,
    position: str | None = None,
) -> dict[str, Any]:
    """A dead-letter record: the raw bytes (text and base64), where it came from, why."""
    return {
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stage": stage,
        "reason": reason,
        "family": family,
        "position": position,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "raw": raw.decode("utf-8", "backslashreplace"),
        "raw_base64": base64.b64encode(raw).decode(),
    }


@dataclass
class Normalizer:
    """Raw records of one family -> events (with ids) and dead letters.

    A VPC header line changes the layout of the lines after it *from the same
    producer*: the layout is kept per message key (the producer or file; `segwatch
    ship` keys a file with a header by host and path), at most :data:`MAX_LAYOUTS`
    of them, and a header in a message without a key applies to that message only
    — never to another producer's records."""

    family: str
    options_factory: Any = None  # () -> ParseOptions; "now" moves on in a long-running worker
    refresh_seconds: float = 60.0
    _parser: Any = None
    _made: float = 0.0
    _layouts: dict[bytes, Any] = field(default_factory=dict)
    _stateful: bool = False

    def parser(self) -> Any:
        now = time.time()
        if self._parser is None or now - self._made > self.refresh_seconds:
            options = self.options_factory() if self.options_factory else ParseOptions()
            self._parser, self._made = make_parser(self.family, options), now
            self._stateful = hasattr(self._parser, "use_layout")  # VPC: header lines
        return self._parser

    def normalize(self, raw: bytes, topic: str, partition: int, offset: int,
                  key: bytes | None = None) -> Normalized:  # fmt: skip
        """(events, dead letters) of one raw record; ``key`` is its message key."""
        parser = self.parser()
        stateful = self._stateful
        if stateful:
            parser.use_layout(self._layouts.get(key) if key else None)
        results = parser.parse(raw)
        if stateful and key:
            layout = parser.layout()
            if layout is not None and self._layouts.get(key) != layout:
                if len(self._layouts) >= MAX_LAYOUTS:
                    del self._layouts[next(iter(self._layouts))]
                self._layouts[key] = layout
        events, dead = [], []
        for index, result in enumerate(results):
            if isinstance(result, ParseError):
                dead.append(dead_letter(raw, topic, partition, offset, "normalize",
                                        result.reason, result.family, result.position))  # fmt: skip
            else:
                result.setdefault("event", {})["id"] = source_id(topic, partition, offset, index)
                events.append(result)
        return events, dead


@dataclass
class Scorer:
    """Places and scores events with the active model; one :class:`Engine` per
    partition of the normalized topic, so what a partition's initiators did can move
    between workers whole, all sharing one :class:`ZoneMemory` (what the worker learnt
    about zones, services and servers). ``restore(partition, engine)`` fills a new
    engine."""

    model: CompiledModel
    settings: DetectorSettings = field(default_factory=DetectorSettings)
    rules_folder: str | None = None
    restore: Callable[[int, Engine], None] | None = None
    engines: dict[int, Engine] = field(init=False, default_factory=dict)
    memory: ZoneMemory = field(init=False, default_factory=ZoneMemory)

    def __post_init__(self) -> None:
        self._rules = load_rules(self.rules_folder) if self.rules_folder else []

    def engine(self, partition: int) -> Engine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = Engine(self.model, self.settings, self._rules,
                                                      memory=self.memory)  # fmt: skip
            self.memory.remote(partition, None)  # its counts come from its engine now
            if self.restore is not None:
                self.restore(partition, engine)
        return engine

    def keep(self, partitions: set[int]) -> None:
        """Forget the engines of partitions this worker no longer has (their counts
        stay in the memory's sums until their next worker snapshots them)."""
        for partition in set(self.engines) - partitions:
            self.memory.handed_over(partition, self.engines.pop(partition).own())

    def remote(self, partition: int, state: dict[str, Any]) -> None:
        """A snapshot of ``partition`` by the worker that scores it (ignored if it is
        scored here: this worker's own, or older than its engine)."""
        if partition in self.engines:
            return
        self.memory.remote(partition, Engine.contribution(state))
        self.memory.merge_started({name: part["started"] for name, part in state.items()
                                   if isinstance(part, dict) and part.get("started")})  # fmt: skip

    def switch(self, model: CompiledModel) -> None:
        """Use a new model from the next event on; the detectors keep what they learned."""
        self.model = model
        for partition, old in self.engines.items():
            engine = self.engines[partition] = old.sibling(model)  # the memory stays as it is
            engine.load(old.state(paths=False), share=False)

    def score(
        self, event: dict[str, Any], partition: int = 0
    ) -> tuple[dict[str, Any], Alert | None]:
        if not is_flow(event):  # a state record (VPC NODATA): indexed as it is, never placed
            METRICS.state_records.labels(event["event"].get("dataset", "")).inc()
            return event, None
        engine = self.engine(partition)
        _, alert = engine.process(event, engine.place(event), event["event"]["id"])
        return event, alert
