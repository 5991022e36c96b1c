"""What ``segwatch analyze`` reports: flows by zone pair and verdict, top violations,
and the declared allow rules that traffic never used (least-privilege candidates).

:class:`Summary` is explicit state fed one placed event at a time, so the same
object serves a file run and, later, a window of the stream.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from detector.connection import key_partition
from detector.detect import Engine, event_time
from detector.detect.alerts import Alert
from detector.events import is_flow
from detector.incidents import IncidentBook, Page
from detector.model.compile import VERDICTS, CompiledModel, Placement
from detector.model.schema import INTERNET, SENSITIVITY_ORDER

__all__ = ["Analysis", "Summary", "UnusedRule"]


@dataclass(frozen=True)
class UnusedRule:
    """A declared allow rule no observed flow used, and what it exposes."""

    rule_id: str
    source: str
    destination: str
    exposes: str  # the destination zone's sensitivity
    description: str


@dataclass
class Summary:
    """Counts over placed events, by connection: a reply record (the answer on a
    connection its destination opened) is part of its connection, counted in
    ``replies`` and nowhere else, so no connection is counted twice or backwards."""

    model: CompiledModel
    events: int = 0
    replies: int = 0
    matrix: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    violations: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    used_rules: set[str] = field(default_factory=set)
    # violations of monitor zones: what enforcing them would deny (src, dst, service)
    would_block: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    timeline: Counter[tuple[int, str]] = field(default_factory=Counter)  # (hour, verdict|alert)
    # records that are no flow (VPC NODATA/SKIPDATA intervals), by what they say
    states: Counter[str] = field(default_factory=Counter)

    def observe(self, event: dict[str, Any], placement: Placement, when: float = 0.0) -> None:
        """Count one placed event (``when``: its time, for the timeline)."""
        self.events += 1
        if placement.rule_id is not None:
            self.used_rules.add(placement.rule_id)
        if placement.reply:
            self.replies += 1
            return
        hour = int(when // 3600)
        self.timeline[(hour, placement.verdict)] += 1
        src = placement.source_zone or "(none)"
        dst = placement.destination_zone or "(none)"
        self.matrix[(src, dst, placement.verdict)] += 1
        self.verdicts[placement.verdict] += 1
        if placement.verdict == "violation":
            service = placement.service or "?"
            self.violations[(src, dst, service, placement.reason)] += 1
            if placement.mode == "monitor":
                self.would_block[(src, dst, service)] += 1

    def alert_sent(self, when: float) -> None:
        self.timeline[(int(when // 3600), "alert")] += 1

    def zone_pairs(self) -> list[tuple[str, str, dict[str, int]]]:
        """(source zone, destination zone, {verdict: count}) for every pair seen."""
        pairs: dict[tuple[str, str], dict[str, int]] = {}
        for (src, dst, verdict), count in self.matrix.items():
            pairs.setdefault((src, dst), dict.fromkeys(VERDICTS, 0))[verdict] = count
        return [(s, d, counts) for (s, d), counts in sorted(pairs.items())]

    def top_violations(self, n: int = 10) -> list[tuple[tuple[str, str, str, str], int]]:
        return self.violations.most_common(n)

    def unused_rules(self) -> list[UnusedRule]:
        """Declared rules never used, most sensitive exposure first."""
        doc = self.model.model.document
        zones = self.model.zones
        out = []
        for flow in doc.flows:
            if flow.id in self.used_rules:
                continue
            exposed = [zones[d].tags.sensitivity for d in flow.destination if d in zones]
            worst = max(exposed, key=SENSITIVITY_ORDER.__getitem__, default="low")
            if INTERNET in flow.destination and not exposed:
                worst = "low"
            out.append(
                UnusedRule(
                    flow.id,
                    ",".join(flow.source),
                    ",".join(flow.destination),
                    worst,
                    flow.describe(),
                )
            )
        out.sort(key=lambda r: (-SENSITIVITY_ORDER[r.exposes], r.rule_id))
        return out

    def zones_never_seen(self) -> list[str]:
        """Declared zones no connection came from or went to: where logging may not
        reach (the checklist's "is all cross-boundary traffic logged?")."""
        seen = {zone for src, dst, _ in self.matrix for zone in (src, dst)}
        return [name for name in self.model.zones if name not in seen]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``analyze --summary --json``)."""
        return {
            "events": self.events,
            "connections": self.events - self.replies,
            "replies": self.replies,
            "state_records": dict(self.states),
            "model_version": self.model.version,
            "verdicts": dict(self.verdicts),
            "zone_pairs": [
                {"source_zone": s, "destination_zone": d, **counts}
                for s, d, counts in self.zone_pairs()
            ],
            "top_violations": [
                {"source_zone": s, "destination_zone": d, "service": svc, "reason": r, "count": c}
                for (s, d, svc, r), c in self.top_violations()
            ],
            "unused_rules": [r.__dict__ for r in self.unused_rules()],
            "zones_never_seen": self.zones_never_seen(),
            "enforcing_would_block": [
                {"source_zone": s, "destination_zone": d, "service": svc, "count": c}
                for (s, d, svc), c in self.would_block.most_common()
            ],
        }


_FLUSH_SECONDS = 10.0  # event time between asking the alert book for due updates


class Analysis:
    """Place, score and count a stream of events, and group its alerts into incidents:
    the core of ``analyze``, the report and ``evaluate``. Call :meth:`finish` at the
    end of the input.

    With ``partitions`` above 1 the events are scored as a worker scores a topic of
    that many partitions: each event by the engine of the partition its initiator's
    address is keyed to (``engine`` and its siblings, sharing one zone memory).
    ``touched`` is the alert the last event opened or added to, if any."""

    def __init__(
        self,
        model: CompiledModel,
        engine: Engine,
        incidents: IncidentBook | None = None,
        partitions: int = 1,
    ) -> None:
        self.model = model
        self.engine = engine
        self.engines = [engine, *(engine.sibling() for _ in range(partitions - 1))]
        self.touched: Alert | None = None
        self.incidents = incidents if incidents is not None else IncidentBook()
        self.summary = Summary(model)
        self.sent: list[Alert] = []
        self.pages: list[Page] = []
        self._paged: dict[str, dict[str, Any]] = {}  # incident id -> its last paged document
        self._flushed = 0.0  # event time the alert book was last asked for due updates

    def process(
        self, event: dict[str, Any], event_id: str
    ) -> tuple[Placement | None, int, Alert | None]:
        """Place and score one event (enriched in place); the alert it sends, if any. A
        record that is no flow (``event.kind: state``) is counted, never placed."""
        if not is_flow(event):
            event.setdefault("event", {})["id"] = event_id
            self.summary.states[str(event["event"].get("reason", "state")).split(":")[0]] += 1
            return None, 0, None
        engines = self.engines
        engine = engines[0]
        if len(engines) > 1:
            engine = engines[key_partition(self.model.initiator_host(event).encode(),
                                           len(engines))]  # fmt: skip
        placement = engine.place(event)
        event.setdefault("event", {})["id"] = event_id
        engine.book.touched = None
        score, alert = engine.process(event, placement, event_id)
        self.touched = engine.book.touched
        when = event_time(event)
        self.summary.observe(event, placement, when)
        if alert is not None:
            self._alert(alert)
        if when - self._flushed >= _FLUSH_SECONDS:
            self._flushed = when
            for each in engines:
                for due in each.flush(when):
                    self._alert(due)
            self._page(self.incidents.tick(when))
        return placement, score, alert

    def finish(self) -> None:
        """The end of the input: the alerts' last changes go to their incidents."""
        for engine in self.engines:
            for alert in engine.flush():
                self._alert(alert)

    def _alert(self, alert: Alert) -> None:
        self.sent.append(alert)
        self.summary.alert_sent(alert.last_seen)
        self._page(self.incidents.observe(alert.to_document()))

    def _page(self, pages: list[Page]) -> None:
        for page in pages:
            self.pages.append(page)
            self._paged[page.incident_id] = page.incident

    def alert_documents(self) -> list[dict[str, Any]]:
        """Every alert in its final state, highest risk first."""
        every = (a for engine in self.engines for a in engine.book.alerts.values())
        alerts = sorted(every, key=lambda a: (-a.score, a.first_seen))
        return [a.to_document() for a in alerts]

    def incident_documents(self) -> list[dict[str, Any]]:
        """Every incident in its latest state (open ones as they are now), worst first."""
        docs = dict(self._paged)
        for doc in self.incidents.documents():
            docs[doc["segwatch"]["incident"]["id"]] = doc
        return sorted(docs.values(), key=lambda d: (-d["event"]["severity"],
                                                   d["event"]["start"]))  # fmt: skip
