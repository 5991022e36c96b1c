"""Incidents: what a person is paged for — one attacker, one campaign, its story.

Alerts (``detector.detect.alerts``) are findings about one initiating host; an
:class:`IncidentBook` groups them as they come:

- one incident per attacker (a source host) and campaign: an alert joins the open
  incident of its source host while that incident was active within ``gap_seconds``;
- the **pivot chain**: a host an incident *reached* (traffic got through) that later
  becomes a source itself joins the same incident — A reaches B, B reaches C;
- each incident holds its ordered **steps**, one per (source host, destination zone):
  when, from and to which host and zone, the services, the strongest finding
  ("vertical scan of 10.50.2.1 by 10.50.10.1: 200 ports in 40 s, 180 rejected") and
  whether the network let it through; the zones in the order they were reached (the
  lateral-movement path); the time from its first step to the most sensitive zone
  it reached; a severity — the worst step's, ``critical`` only for an incident that
  got into a restricted zone or across environments or tenants; and a state:
  ``open``, ``updated``, ``resolved`` after ``resolve_seconds`` without a new alert.

Paging (:class:`Page`): a ``trigger`` when an incident opens; an ``update`` when it
escalates (at once) or has changed, at most every ``update_seconds``; a ``resolve``
when it resolves. A page that reaches a person (``page``) is a trigger or an
escalation; plain updates refresh what the receivers show.

Everything runs on event time (``tick(now)``): the stream passes its own clock.
State is plain data (``state()`` / ``load()``), so the worker can keep it in Kafka.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detector.definitions import ECS_VERSION, stream_fields
from detector.detect.rules import SEVERITIES
from detector.events import iso_ms, parse_stamp

__all__ = ["Incident", "IncidentBook", "IncidentSettings", "Page", "Step"]

_RANK = {"internet": -1, "low": 0, "medium": 1, "high": 2, "restricted": 3}
_MAX_STEPS = 64
_MAX_HOSTS = 64
_MAX_SERVICES = 32
_MAX_CLOSED = 20_000  # fingerprints of resolved incidents remembered


class IncidentSettings(BaseModel):
    """How alerts are grouped and paged (``incidents:`` in the configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gap_seconds: int = Field(
        default=3600, ge=0, description="A campaign ends after this long without an alert."
    )
    update_seconds: int = Field(
        default=900, ge=0,
        description="An incident's changes are sent at most this often (escalations at once).",
    )  # fmt: skip
    resolve_seconds: int = Field(
        default=3600, ge=1, description="An incident resolves after this long without an alert."
    )
    max_open: int = Field(default=10_000, ge=1, description="Open incidents kept at most.")


@dataclass
class _Finding:
    """What an incident keeps of one alert: its latest state."""

    fingerprint: str
    rule_id: str
    rule_name: str
    severity: str
    score: int
    count: int
    denied: int
    first_seen: float
    last_seen: float
    headline: str
    hosts: list[str]
    host_count: int
    services: list[str]
    sensitivity: str
    crosses: list[str]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> _Finding:
        alert = doc["segwatch"]["alert"]
        seg = doc.get("segmentation") or {}
        hosts = (doc.get("destination") or {}).get("ip") or []
        return cls(
            alert["fingerprint"],
            doc["rule"]["id"],
            doc["rule"]["name"],
            alert["severity"],
            int(doc["event"]["risk_score"]),
            int(alert["count"]),
            int(alert.get("denied", 0)),
            parse_stamp(alert["first_seen"]),
            parse_stamp(alert.get("last_activity") or alert["last_seen"]),
            alert.get("headline") or doc.get("message") or doc["rule"]["name"],
            list(hosts) if isinstance(hosts, list) else [hosts],
            int(alert.get("hosts", len(hosts))),
            list(alert.get("services", ())),
            seg.get("destination_sensitivity", "internet"),
            list(seg.get("crosses", ())),
        )

    @property
    def reached(self) -> bool:
        """Some of its connections got through."""
        return self.count > self.denied


@dataclass
class Step:
    """One hop of an attack: a source host into one zone, with what it did there."""

    source_ip: str
    source_zone: str
    destination_zone: str
    findings: dict[str, _Finding] = field(default_factory=dict)
    # kept as findings come, for the incident's cheap questions
    severity: str = "info"
    sensitivity: str = "internet"
    boundary: bool = False  # it got into a restricted zone, or across environments or tenants

    def add(self, found: _Finding) -> None:
        """Take a finding (a new alert, or a newer state of one)."""
        self.findings[found.fingerprint] = found
        findings = self.findings.values()
        self.severity = max((f.severity for f in findings), key=SEVERITIES.index)
        self.sensitivity = max((f.sensitivity for f in findings), key=_RANK.__getitem__)
        self.boundary = any(f.reached and (f.sensitivity == "restricted" or bool(f.crosses))
                            for f in findings)  # fmt: skip

    @property
    def first_seen(self) -> float:
        return min(f.first_seen for f in self.findings.values())

    @property
    def last_seen(self) -> float:
        return max(f.last_seen for f in self.findings.values())

    @property
    def reached(self) -> bool:
        return any(f.reached for f in self.findings.values())

    @property
    def strongest(self) -> _Finding:
        return max(self.findings.values(), key=lambda f: (f.score, SEVERITIES.index(f.severity),
                                                          f.last_seen))  # fmt: skip

    def hosts(self) -> list[str]:
        seen: dict[str, None] = {}
        for f in self.findings.values():
            seen.update(dict.fromkeys(f.hosts))
        return list(seen)[:_MAX_HOSTS]

    def to_dict(self) -> dict[str, Any]:
        top = self.strongest
        services: dict[str, None] = {}
        for f in self.findings.values():
            services.update(dict.fromkeys(f.services))
        hosts = self.hosts()
        return {
            "time": iso_ms(self.first_seen),
            "last_seen": iso_ms(self.last_seen),
            "from_ip": self.source_ip,
            "from_zone": self.source_zone,
            "to_zone": self.destination_zone,
            "to_hosts": hosts,
            "host_count": max(len(hosts), max(f.host_count for f in self.findings.values())),
            "services": list(services)[:_MAX_SERVICES],
            "finding": top.rule_id,
            "title": top.rule_name,
            "description": top.headline,
            "verdict": "reached" if self.reached else "blocked",
            "count": sum(f.count for f in self.findings.values()),
            "denied": sum(f.denied for f in self.findings.values()),
            "severity": self.severity,
            "alerts": sorted(self.findings),
        }


IncidentState = Literal["open", "updated", "resolved"]


@dataclass
class Incident:
    """The alerts of one attacker and campaign, as a story."""

    id: str
    attacker: str
    attacker_zone: str
    first_seen: float
    last_seen: float
    steps: dict[str, Step] = field(default_factory=dict)  # "ip>zone", in order of arrival
    actors: dict[str, float] = field(default_factory=dict)  # source hosts, first acting
    reached: dict[str, float] = field(default_factory=dict)  # hosts reached, when
    state: IncidentState = "open"
    version: int = 0
    paged_severity: str = "info"
    paged_at: float = 0.0
    changed: bool = False  # since the last page
    quarantine: dict[str, Any] | None = None  # the attacker's, from its alerts

    @property
    def ordered(self) -> list[Step]:
        return sorted(self.steps.values(), key=lambda s: s.first_seen)

    @property
    def severity(self) -> str:
        steps = self.steps.values()
        worst = max((s.severity for s in steps), key=SEVERITIES.index)
        if worst == "info":
            return "info"  # audit records: allowed on purpose
        if any(s.boundary for s in steps):
            return "critical"
        return worst if worst != "critical" else "high"

    @property
    def audit(self) -> bool:
        """Only audit records (severity info: access allowed on purpose)."""
        return all(s.severity == "info" for s in self.steps.values())

    @property
    def score(self) -> int:
        return max(f.score for s in self.steps.values() for f in s.findings.values())

    def path(self) -> list[str]:
        """The attacker's zone, then each zone the incident went into, in the order it
        first got there (a pivot's zone comes in with the step that reached it)."""
        zones = dict.fromkeys([self.attacker_zone])
        for step in self.ordered:
            zones.update(dict.fromkeys((step.source_zone, step.destination_zone)))
        return list(zones)

    def most_sensitive(self) -> tuple[str | None, float | None]:
        """(the most sensitive zone reached, seconds from the first step to reaching it)."""
        reached = [s for s in self.ordered if s.reached]
        if not reached:
            return None, None
        top = max(_RANK[s.sensitivity] for s in reached)
        first = next(s for s in reached if _RANK[s.sensitivity] == top)
        return first.destination_zone, max(first.first_seen - self.first_seen, 0.0)

    def title(self) -> str:
        """What happened, in a line: the worst step's finding, or the pivot chain."""
        origin = f"{self.attacker} ({self.attacker_zone})"
        if len(self.actors) > 1:
            zone, _ = self.most_sensitive()
            into = f" into {zone}" if zone is not None else ""
            return f"Pivot through {len(self.actors) - 1} host(s){into} from {origin}"
        worst = max(self.steps.values(), key=lambda s: (SEVERITIES.index(s.severity),
                                                        s.strongest.score))  # fmt: skip
        return f"{worst.strongest.rule_name} from {origin}"

    def to_document(self) -> dict[str, Any]:
        """The incident as an ECS alert document (upserted by id)."""
        zone, seconds = self.most_sensitive()
        steps = [s.to_dict() for s in self.ordered]
        severity = self.severity
        path = self.path()
        hosts = list(dict.fromkeys([*self.actors, *self.reached]))
        title = self.title()
        summary = f"{title}: {' -> '.join(path)}"
        return {
            "@timestamp": iso_ms(self.last_seen),
            "event": {
                "kind": "alert",
                "category": ["network", "intrusion_detection"],
                "type": ["info"],
                "severity": SEVERITIES.index(severity),
                "risk_score": self.score,
                "start": iso_ms(self.first_seen),
                "end": iso_ms(self.last_seen),
                "dataset": "segwatch.incidents",
                "module": "segwatch",
            },
            "ecs": {"version": ECS_VERSION},
            "data_stream": stream_fields("segwatch.incidents"),
            "message": summary,
            "rule": {"name": title},
            "source": {"ip": self.attacker},
            "related": {"ip": hosts[:_MAX_HOSTS]},
            "segwatch": {
                "incident": {
                    "id": self.id,
                    "state": self.state,
                    "severity": severity,
                    "title": title,
                    "summary": summary,
                    "attacker": self.attacker,
                    "attacker_zone": self.attacker_zone,
                    "first_seen": iso_ms(self.first_seen),
                    "last_seen": iso_ms(self.last_seen),
                    "path": path,
                    "reached_zones": list(
                        dict.fromkeys(s.destination_zone for s in self.ordered if s.reached)
                    ),
                    "most_sensitive_zone": zone,
                    "time_to_most_sensitive_s": seconds,
                    "hosts": list(self.actors),
                    "reached_hosts": list(self.reached)[:_MAX_HOSTS],
                    "step_count": len(steps),
                    "steps": steps,
                    "alerts": sorted(f for s in self.steps.values() for f in s.findings),
                    "version": self.version,
                    **({"quarantine": self.quarantine} if self.quarantine else {}),
                }
            },
        }

    def dump(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "steps"}
        out["steps"] = [
            {"source_ip": s.source_ip, "source_zone": s.source_zone,
             "destination_zone": s.destination_zone,
             "findings": [f.__dict__ for f in s.findings.values()]}
            for s in self.steps.values()
        ]  # fmt: skip
        return out

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Incident:
        values = dict(data)
        steps = values.pop("steps")
        incident = cls(**values)
        for s in steps:
            step = Step(s["source_ip"], s["source_zone"], s["destination_zone"])
            for f in s["findings"]:
                step.add(_Finding(**f))
            incident.steps[f"{step.source_ip}>{step.destination_zone}"] = step
        return incident


@dataclass(frozen=True)
class Page:
    """A webhook delivery an incident asks for."""

    action: Literal["trigger", "update", "resolve"]
    incident: dict[str, Any]  # the incident document
    time: float  # event time
    why: str  # "opened", "escalated to critical", "changed", "resolved after 1 h quiet"

    @property
    def page(self) -> bool:
        """It reaches a person: the opening trigger, or an escalation."""
        return self.action == "trigger" or self.why.startswith("escalated")

    @property
    def incident_id(self) -> str:
        return str(self.incident["segwatch"]["incident"]["id"])


class IncidentBook:
    """Open incidents, fed alert documents in (roughly) time order."""

    def __init__(self, settings: IncidentSettings | None = None) -> None:
        self.settings = settings or IncidentSettings()
        self.open: dict[str, Incident] = {}
        self.owner: dict[str, str] = {}  # alert fingerprint -> incident id
        self.closed: dict[str, int] = {}  # fingerprints of resolved incidents -> their count
        self._actors: dict[tuple[str, bool], str] = {}  # (host, audit) -> its latest incident
        self._reached: dict[str, tuple[str, float]] = {}  # host -> (attack incident, when)
        self._due: list[tuple[float, str]] = []  # a heap: (when something is due, incident)

    def observe(self, doc: dict[str, Any]) -> list[Page]:
        """Take one alert document (a new alert or an update of one); the pages it asks for."""
        found = _Finding.of(doc)
        seg = doc.get("segmentation") or {}
        source = ((doc.get("source") or {}).get("ip")) or "?"
        src_zone = seg.get("source_zone") or "(none)"
        dst_zone = seg.get("destination_zone") or "(none)"
        pages = self.tick(found.last_seen)
        if self.closed.get(found.fingerprint) == found.count:
            return pages  # only later activity of a resolved incident's host: no new story
        incident = self._incident_for(found, source, src_zone)
        if incident.quarantine is None and source == incident.attacker:
            incident.quarantine = ((doc.get("segwatch") or {}).get("alert") or {}).get("quarantine")
        before = incident.severity if incident.steps else None
        key = f"{source}>{dst_zone}"
        step = incident.steps.get(key)
        if step is None:
            if len(incident.steps) >= _MAX_STEPS:
                return pages  # an incident this long is told by its first steps
            step = incident.steps[key] = Step(source, src_zone, dst_zone)
        step.add(found)
        self.owner[found.fingerprint] = incident.id
        incident.actors.setdefault(source, found.first_seen)
        audit = incident.audit
        self._actors[(source, audit)] = incident.id
        if found.reached and found.severity != "info":  # an audited access is no foothold
            for host in found.hosts:
                if host not in incident.reached and len(incident.reached) < 4 * _MAX_HOSTS:
                    incident.reached[host] = found.first_seen
                    self._reached[host] = (incident.id, found.first_seen)
        incident.first_seen = min(incident.first_seen, found.first_seen)
        incident.last_seen = max(incident.last_seen, found.last_seen)
        incident.version += 1
        now = found.last_seen
        after = incident.severity
        if before is None:
            incident.paged_severity, incident.paged_at = after, now
            pages.append(Page("trigger", incident.to_document(), now, "opened"))
        elif SEVERITIES.index(after) > SEVERITIES.index(incident.paged_severity):
            incident.state, incident.changed = "updated", False
            incident.paged_severity, incident.paged_at = after, now
            pages.append(Page("update", incident.to_document(), now, f"escalated to {after}"))
        else:
            incident.state, incident.changed = "updated", True
            if now - incident.paged_at >= self.settings.update_seconds:
                pages.append(self._update(incident, now))
        heapq.heappush(self._due, (self._next(incident), incident.id))
        return pages

    def tick(self, now: float) -> list[Page]:
        """Resolve the incidents quiet since ``resolve_seconds`` before ``now`` and send
        the changes due; cheap when nothing is due."""
        pages: list[Page] = []
        due = self._due
        while due and due[0][0] <= now:
            _, ident = heapq.heappop(due)
            incident = self.open.get(ident)
            if incident is None or self._next(incident) > now:
                continue  # gone, or a newer entry stands for it
            if now - incident.last_seen >= self.settings.resolve_seconds:
                pages.append(self._resolve(incident, now))
                continue
            pages.append(self._update(incident, now))
            heapq.heappush(due, (self._next(incident), ident))
        return pages

    def _resolve(self, incident: Incident, now: float) -> Page:
        incident.state = "resolved"
        incident.version += 1
        self._forget(incident)
        for step in incident.steps.values():
            for fingerprint, finding in step.findings.items():
                self.closed[fingerprint] = finding.count
        while len(self.closed) > _MAX_CLOSED:
            del self.closed[next(iter(self.closed))]
        minutes = self.settings.resolve_seconds / 60
        when = f"{minutes / 60:.0f} h" if minutes >= 60 else f"{minutes:.0f} min"
        return Page("resolve", incident.to_document(), now, f"resolved after {when} quiet")

    def _forget(self, incident: Incident) -> None:
        """Take an incident out of the open ones and the indices."""
        del self.open[incident.id]
        for step in incident.steps.values():
            for fingerprint in step.findings:
                self.owner.pop(fingerprint, None)
        for host in incident.actors:
            for key in ((host, True), (host, False)):
                if self._actors.get(key) == incident.id:
                    del self._actors[key]
        for host in incident.reached:
            if self._reached.get(host, ("",))[0] == incident.id:
                del self._reached[host]

    def _update(self, incident: Incident, now: float) -> Page:
        incident.changed, incident.paged_at = False, now
        return Page("update", incident.to_document(), now, "changed")

    def _next(self, incident: Incident) -> float:
        due = incident.last_seen + self.settings.resolve_seconds
        if incident.changed:
            due = min(due, incident.paged_at + self.settings.update_seconds)
        return due

    def _incident_for(self, found: _Finding, source: str, zone: str) -> Incident:
        """The incident an alert belongs to: its own (an update), its source's open one,
        the one that reached its source (a pivot), or a new one."""
        owner = self.owner.get(found.fingerprint)
        if owner is not None and owner in self.open:
            return self.open[owner]
        gap = self.settings.gap_seconds
        audit = found.severity == "info"  # audit records and attacks are told apart
        mine = self.open.get(self._actors.get((source, audit), ""))
        if mine is not None and found.first_seen - mine.last_seen <= gap:
            return mine
        if not audit:
            ident, when = self._reached.get(source, ("", 0.0))
            pivot = self.open.get(ident)
            if (pivot is not None and when <= found.first_seen + 60
                    and found.first_seen - pivot.last_seen <= gap):  # fmt: skip
                return pivot
        if len(self.open) >= self.settings.max_open:
            self._forget(min(self.open.values(), key=lambda i: i.last_seen))
        raw = f"{source}|{found.fingerprint}|{found.first_seen:.3f}"
        ident = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:20]
        incident = self.open[ident] = Incident(ident, source, zone, found.first_seen,
                                               found.last_seen)  # fmt: skip
        return incident

    def documents(self) -> list[dict[str, Any]]:
        """The open incidents' documents, worst first."""
        ranked = sorted(self.open.values(), key=lambda i: (-SEVERITIES.index(i.severity),
                                                           i.first_seen))  # fmt: skip
        return [i.to_document() for i in ranked]

    def state(self) -> dict[str, Any]:
        return {"open": [i.dump() for i in self.open.values()], "closed": self.closed}

    def load(self, state: dict[str, Any]) -> None:
        self.open = {}
        self.owner, self._actors, self._reached, self._due = {}, {}, {}, []
        for data in state.get("open", ()):
            incident = Incident.restore(data)
            self.open[incident.id] = incident
            for step in incident.steps.values():
                self.owner.update(dict.fromkeys(step.findings, incident.id))
            for host in incident.actors:
                self._actors[(host, incident.audit)] = incident.id
            if not incident.audit:
                self._reached.update((h, (incident.id, t)) for h, t in incident.reached.items())
            heapq.heappush(self._due, (self._next(incident), incident.id))
        self.closed = {str(f): int(n) for f, n in state.get("closed", {}).items()}
