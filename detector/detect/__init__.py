"""Anomaly detectors, risk scoring and alerts over placed events.

:class:`Engine` runs every detector on an event, scores it, matches the
detection rules and keeps the alert book::

    engine = Engine(compiled_model, DetectorSettings(), rules=load_rules("detector/assets/rules"))
    placement = engine.place(event)      # the connection's zones and verdict
    score, alert = engine.process(event, placement, event_id)

Replies (the answers on a connection, ``placement.reply``) share their connection's
verdict and risk, teach the server ports they answer from, and never reach a
detector, a rule or an alert of their own.
"""

from __future__ import annotations

from typing import Any

from detector.connection import STRONG_EVIDENCE
from detector.detect.alerts import Alert, AlertBook, risk
from detector.detect.base import (
    Context,
    Contribution,
    DetectorSettings,
    Evidence,
    ZoneMemory,
    event_time,
)
from detector.detect.detectors import (
    NewPathDetector,
    OddPortDetector,
    OffHoursDetector,
    VolumeDetector,
    hour_profiles,
    port_counts,
)
from detector.detect.lateral import DnsDetector, LateralMovementDetector
from detector.detect.ml import MLDetector
from detector.detect.rules import DetectionRule, RuleSet, load_rules
from detector.detect.scans import BlockedSeriesDetector, ScanDetector
from detector.model.compile import CompiledModel, Placement

__all__ = [
    "Alert",
    "DetectionRule",
    "DetectorSettings",
    "Engine",
    "Evidence",
    "MLDetector",
    "ZoneMemory",
    "event_time",
    "load_rules",
]


_SUSPICIOUS = frozenset({"violation", "blocked_attempt"})


class Engine:
    """Detectors + scoring + rules + alerts for one model (state included).

    What it learns about zones, services and servers is in ``memory`` (a
    :class:`ZoneMemory`), which the engines of other partitions may share
    (:meth:`sibling`); the rest (scan windows, alerts, ...) is about initiators and
    its own."""

    def __init__(
        self,
        model: CompiledModel,
        settings: DetectorSettings | None = None,
        rules: list[DetectionRule] | None = None,
        ml: MLDetector | None = None,
        memory: ZoneMemory | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or DetectorSettings()
        settings = self.settings
        self.memory = memory = memory if memory is not None else ZoneMemory()
        self.new_paths = NewPathDetector(settings, memory)
        self._hours = hours = OffHoursDetector(settings, model, memory)
        self._odd_port = OddPortDetector(settings, memory)
        self.detectors: list[Any] = [
            self._odd_port,
            hours,
            self.new_paths,
            ScanDetector(settings, memory),
            BlockedSeriesDetector(settings, model, memory),
            LateralMovementDetector(settings, hours),
            DnsDetector(settings, model, memory),
            VolumeDetector(settings, memory),
        ]
        self.rules = RuleSet(rules or [], model)
        self.ml = ml
        self.book = AlertBook(self.settings.alert_update_seconds, model.zones)
        self.server_ports = memory.server_ports
        self._observers = [d.observe for d in self.detectors]
        self._sensitivity = {n: z.tags.sensitivity for n, z in model.zones.items()}

    def sibling(self, model: CompiledModel | None = None) -> Engine:
        """A new engine for another partition (or, given ``model``, for the next model):
        the same settings, rules and learnt model, sharing this one's memory."""
        return Engine(model or self.model, self.settings, self.rules.rules, self.ml, self.memory)

    def place(self, event: dict[str, Any]) -> Placement:
        """Place an event on the model, with the server ports learned so far."""
        return self.model.place(event, self.server_ports)

    def process(
        self, event: dict[str, Any], placement: Placement, event_id: str
    ) -> tuple[int, Alert | None]:
        """Score one placed event (its ``segmentation`` fields gain ``risk_score``,
        ``reasons``, ``anomalies`` (the detectors that found something) and
        ``detections``); return the score and the alert to send, if any."""
        ctx = Context.of(event, placement)
        seg = event.get("segmentation")
        if seg is None or seg.get("model_version") != placement.model_version:
            seg = event["segmentation"] = placement.to_fields()
        sensitivity = self._sensitivity.get(placement.destination_zone or "", "internet")
        monitor = placement.mode == "monitor"
        evidence: list[Evidence] = []
        matched: list[DetectionRule] = []
        if ctx.reply:  # part of its connection: scored by its verdict, never alerted on
            self._learn_server(ctx, event)
            score, reasons = risk(placement.verdict, evidence, sensitivity, monitor, matched)
        else:
            for observe in self._observers:
                found = observe(ctx)
                if found:
                    evidence += found
            if self.ml is not None:
                new = any(e.detector == "new_path" for e in evidence)
                evidence += self.ml.observe(ctx, new)
            score, reasons = risk(placement.verdict, evidence, sensitivity, monitor, matched)
            if self.rules.rules:
                hour = int(ctx.time // 3600 % 24)
                matched = self.rules.matches(event, score, hour)
                if matched:
                    score, reasons = risk(placement.verdict, evidence, sensitivity, monitor,
                                          matched)  # fmt: skip
        seg["risk_score"] = score
        if reasons:
            seg["reasons"] = reasons
        if evidence:
            seg["anomalies"] = sorted({e.detector for e in evidence})
        if matched:
            seg["detections"] = [r.id for r in matched]
        event.setdefault("event", {})["risk_score"] = score
        if ctx.reply:
            return score, None
        alert = None
        if matched or score >= self.settings.alert_score:
            alert = self.book.record(ctx, score, reasons, evidence, matched, event_id)
        elif placement.verdict in _SUSPICIOUS:
            alert = self.book.active(ctx, self.settings.slow_scan_window_seconds)
        return score, alert

    def _learn_server(self, ctx: Context, event: dict[str, Any]) -> None:
        """A reply whose initiator the log or the model told: its source answers from
        that port (``ctx`` is the connection's, so that is ``ctx.dst_ip``)."""
        if ctx.placement.evidence in STRONG_EVIDENCE and ctx.port is not None and ctx.dst_ip:
            iana = (event.get("network") or {}).get("iana_number")
            proto = int(iana) if iana else None
            zone = ctx.placement.destination_zone
            self.server_ports.learn(ctx.dst_ip, zone, proto, ctx.port, int(ctx.time))

    def flush(self, now: float | None = None) -> list[Alert]:
        """The alerts whose latest changes were not sent yet and are due at ``now`` (every
        one without it: the end of a file): send them too."""
        return self.book.flush(now)

    def own(self) -> Contribution:
        """This engine's own port and hour counts (the memory sums every engine's)."""
        return (self._odd_port.own_counts, self._odd_port.own_totals, self._hours.own)

    @staticmethod
    def contribution(state: dict[str, Any]) -> Contribution:
        """The own port and hour counts in a :meth:`state`."""
        counts, totals = port_counts(state["odd_port"]) if "odd_port" in state else ({}, {})
        return counts, totals, hour_profiles(state["off_hours"]) if "off_hours" in state else {}

    def state(self, paths: bool = True) -> dict[str, Any]:
        """Every detector's state and the alerts' send times, JSON-ready;
        ``paths=False`` leaves out the new-path memory (see ``NewPathDetector.journal``)."""
        state = {d.name: d.state() for d in self.detectors if d is not self.new_paths}
        state[self.new_paths.name] = self.new_paths.state(paths)
        state["alerts"] = self.book.state()
        state[self.server_ports.name] = self.server_ports.state()
        return state

    def load(self, state: dict[str, Any], share: bool = True) -> None:
        """Restore ``state`` (of :meth:`state`); its own port and hour counts are added
        to the memory's unless ``share`` is False (this partition's, there already)."""
        for detector in self.detectors:
            if detector.name in state:
                if isinstance(detector, OddPortDetector | OffHoursDetector):
                    detector.load(state[detector.name], share)
                else:
                    detector.load(state[detector.name])
        if "alerts" in state:
            self.book.load(state["alerts"])
        if self.server_ports.name in state:
            self.server_ports.load(state[self.server_ports.name])
