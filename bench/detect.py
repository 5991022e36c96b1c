"""Detectors, incidents and the simulator: scoring throughput with every detector on
(and with placement and incidents too), the incident book's throughput, the
new-path state per path at 1M paths, simulator output, and how well risk and
incidents separate attacks from benign traffic on a simulated week.

Events are simulated for the retail model (3 days, after a 1-hour learning
period), parsed and placed before the clock starts; the prepared inputs are
moved out of the collector's way (``gc.freeze``) as a stream's short-lived
events would be.
"""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import Row
from detector.analyze import Analysis
from detector.assets import RULES
from detector.detect import DetectorSettings, Engine, load_rules
from detector.detect.detectors import NewPathDetector
from detector.errors import ParseError
from detector.evaluate import evaluate
from detector.incidents import IncidentBook
from detector.model import CompiledModel, compile_model, load_model
from detector.parsers import ParseOptions, Parser, make_parser
from detector.simulate import SCENARIOS, Label, SimulationError, Simulator

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()


def run(scale: float) -> list[Row]:
    rows = []
    model = compile_model(load_model(ROOT / "detector" / "assets" / "models" / "retail_store.yaml"))
    days = max(3 * scale, 0.2)
    sim = Simulator(model, "vpcflow", seed=2)
    records = []
    with tempfile.TemporaryFile("w") as out:
        started = time.perf_counter()
        for record, _ in sim.run(START, days * 86_400, 1.0, ["port-scan", "dev-to-prod"]):
            out.write(record + "\n")
            records.append(record)
        elapsed = time.perf_counter() - started
    rows.append(
        Row(
            "simulate (vpcflow, retail model)",
            len(records) / elapsed,
            "records/s",
            f"{len(records):,} records written to a file; target >= 200,000/s",
        )
    )
    parser = make_parser("vpcflow", ParseOptions(reference_time=START + 30 * 86_400))
    events = [e for r in records for e in parser.parse(r)]
    placed = [(e, model.place(e)) for e in events if not isinstance(e, ParseError)]
    if len(placed) != len(events):
        raise RuntimeError(f"{len(events) - len(placed)} simulated records did not parse")
    gc.collect()
    gc.freeze()
    engine = Engine(model, DetectorSettings(learning_seconds=3600), load_rules(RULES))
    started = time.perf_counter()
    for event, placement in placed:
        engine.process(event, placement, "bench")
    rate = len(placed) / (time.perf_counter() - started)
    rows.append(
        Row(
            "score, all detectors + rules + alerts",
            rate,
            "events/s",
            f"{len(placed):,} placed events, 1 core; target >= 100,000/s",
        )
    )
    gc.unfreeze()
    del placed
    rows += _with_incidents(model, parser, records)
    del records
    rows += _incident_book(scale)
    rows += _separation(model, scale)

    n = max(int(1_000_000 * scale), 10_000)
    detector = NewPathDetector(DetectorSettings(max_paths=n + 1))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        detector.paths[NewPathDetector.path_key(f"z{i % 997}", f"z{i % 991}", f"tcp/{i}")] = (
            1_700_000_000 + i
        )
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rows.append(
        Row(
            "new-path state per tracked path",
            used / n,
            "bytes",
            f"{n:,} paths (64-bit hash -> last-seen second); target <= 200",
        )
    )
    return rows


def _with_incidents(model: CompiledModel, parser: Parser, records: list[str]) -> list[Row]:
    """Place, score, alert and group into incidents: what ``analyze`` does per event."""
    events = [e for r in records for e in parser.parse(r) if isinstance(e, dict)]
    engine = Engine(model, DetectorSettings(learning_seconds=3600),
                    load_rules(RULES))  # fmt: skip
    run = Analysis(model, engine)
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for event in events:
        run.process(event, "bench")
    run.finish()
    rate = len(events) / (time.perf_counter() - started)
    gc.unfreeze()
    return [Row("place + score + alerts + incidents", rate, "events/s",
                f"{len(events):,} events (both directions of each connection), "
                f"{len(run.incident_documents())} incidents, 1 core")]  # fmt: skip


def _incident_book(scale: float) -> list[Row]:
    """Alert documents (new and changed) through the incident book: 2,000 attackers in
    200 zones, each alert updated ten times, pivots among them."""
    n = max(int(100_000 * scale), 5_000)

    def target(attacker: int, i: int) -> str:
        if i % 50 == 0:  # now and then, another attacker: a pivot
            other = (attacker + 1) % 2000
            return f"10.{other // 250}.{other % 250}.1"
        return f"10.200.{attacker % 250}.{i % 200 + 2}"

    docs = []
    for i in range(n):
        attacker = i % 2000
        at = START + i * 0.5
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        docs.append({
            "event": {"risk_score": 60 + i % 40},
            "rule": {"id": "verdict.violation", "name": "Segmentation violation"},
            "message": "violation",
            "segwatch": {"alert": {
                "fingerprint": f"f{attacker}-{(i // 2000) % 10}", "severity": "high",
                "count": 1 + i // 20_000, "denied": 0, "first_seen": stamp, "last_seen": stamp,
                "last_activity": stamp, "headline": "violation", "hosts": 1,
                "services": ["tcp/22"]}},
            "segmentation": {"source_zone": f"z{attacker % 200}",
                             "destination_zone": f"z{(attacker + 1) % 200}",
                             "destination_sensitivity": "high", "crosses": []},
            "source": {"ip": f"10.{attacker // 250}.{attacker % 250}.1"},
            "destination": {"ip": [target(attacker, i)]},
        })  # fmt: skip
    book = IncidentBook()
    started = time.perf_counter()
    pages = 0
    for doc in docs:
        pages += len(book.observe(doc))
    rate = n / (time.perf_counter() - started)
    started = time.perf_counter()
    size = len(zlib.compress(orjson.dumps(book.state()), 1))
    write = time.perf_counter() - started
    return [
        Row("incident book (the incident stage's core)", rate, "alerts/s",
            f"{n:,} alert documents, 2,000 attackers, {pages:,} pages (most of them updates)"),
        Row("incident state, encoded per batch", write * 1000, "ms",
            f"{len(book.open):,} open incidents, {size / 1e6:.1f} MB compressed; the stage "
            "writes it once per batch of up to 100 alerts"),
    ]  # fmt: skip


def _separation(model: CompiledModel, scale: float) -> list[Row]:
    """A simulated week of the retail model with every scenario that fits: how often a
    benign and an attack finding reach the alert score, benign incidents per 100k."""
    fits = []
    for name in SCENARIOS:
        try:
            list(Simulator(model, "vpcflow").run(START, 3 * 3600, 0.01, [name]))
        except SimulationError:
            continue
        fits.append(name)
    days = max(7 * scale, 4.0)
    labels: dict[str, Label] = {}
    lines = []
    for line, (record, label) in enumerate(
        Simulator(model, "vpcflow", seed=7).run(START, days * 86_400, 0.45, fits),
        1,
    ):
        lines.append(record)
        if label is not None:
            labels.setdefault(label.scenario, label).lines.append(line)
    parser = make_parser("vpcflow", ParseOptions(reference_time=START + 30 * 86_400))
    run = Analysis(model, Engine(model, DetectorSettings(),
                                 load_rules(RULES)))  # fmt: skip

    def events() -> Iterator[tuple[str, dict[str, Any]]]:
        for number, record in enumerate(lines, 1):
            for event in parser.parse(record):
                if isinstance(event, dict):
                    yield f"sim:{number}", event

    result = evaluate(run, events(), [lb.to_dict() for lb in labels.values()])
    share = {k: 100 * sum(v[6:]) / max(sum(v), 1) for k, v in result.risk.items()}
    single = sum(len(s.incidents) == 1 for s in result.scenarios)
    return [
        Row("benign findings at risk >= 60", share["benign"], "%",
            f"{sum(result.risk['benign']):,} benign findings, retail model, {days:.0f} days"),
        Row("attack findings at risk >= 60", share["attack"], "%",
            f"{sum(result.risk['attack']):,} findings of {len(fits)} scenarios"),
        Row("scenarios that made exactly one incident", single, "scenarios",
            f"of {len(fits)}; pages per scenario "
            f"{max((s.pages for s in result.scenarios), default=0)} at most"),
        Row("benign incidents after learning", result.benign_incidents_per_100k, "per 100k",
            f"{result.benign_flows_after_learning:,} benign flows after learning; target <= 1"),
    ]  # fmt: skip
