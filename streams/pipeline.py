"""The pipeline's stages as plain objects, so they can be tested without Kafka:
normalize (raw record -> events or a dead letter), score (event -> enriched
event and alerts), and the dead-letter record itself. ``streams.app`` wires
them into faust agents.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from detector.detect import Alert, DetectorSettings, Engine, load_rules
from detector.errors import ParseError
from detector.model import CompiledModel
from detector.parsers import ParseOptions, make_parser

__all__ = ["Normalizer", "Scorer", "dead_letter", "parse_source_id", "source_id"]


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
    """Raw records of one family -> events (with ids) and dead letters."""

    family: str
    options_factory: Any = None  # () -> ParseOptions; "now" moves on in a long-running worker
    refresh_seconds: float = 60.0
    _parser: Any = None
    _made: float = 0.0

    def parser(self) -> Any:
        now = time.time()
        if self._parser is None or now - self._made > self.refresh_seconds:
            options = self.options_factory() if self.options_factory else ParseOptions()
            self._parser, self._made = make_parser(self.family, options), now
        return self._parser

    def normalize(self, raw: bytes, topic: str, partition: int,
                  offset: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
        events, dead = [], []
        for index, result in enumerate(self.parser().parse(raw)):
            if isinstance(result, ParseError):
                dead.append(dead_letter(raw, topic, partition, offset, "normalize",
                                        result.reason, result.family, result.position))  # fmt: skip
            else:
                result.setdefault("event", {})["id"] = source_id(topic, partition, offset, index)
                events.append(result)
        return events, dead


@dataclass
class Scorer:
    """Places and scores events with the active model; keeps the detectors' state."""

    model: CompiledModel
    settings: DetectorSettings = field(default_factory=DetectorSettings)
    rules_folder: str | None = None
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        rules = load_rules(self.rules_folder) if self.rules_folder else []
        self.engine = Engine(self.model, self.settings, rules)

    def switch(self, model: CompiledModel) -> None:
        """Use a new model from the next event on; the detectors keep what they learned."""
        state = self.engine.state()
        rules = self.engine.rules.rules
        self.model = model
        self.engine = Engine(model, self.settings, rules)
        self.engine.load(state)

    def score(self, event: dict[str, Any]) -> tuple[dict[str, Any], Alert | None]:
        placement = self.model.place(event)
        _, alert = self.engine.process(event, placement, event["event"]["id"])
        return event, alert
