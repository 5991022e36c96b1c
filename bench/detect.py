"""Detectors and the simulator: scoring throughput with every detector on, the
new-path state per path at 1M paths, and simulator output.

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
from datetime import UTC, datetime
from pathlib import Path

from bench import Row
from detector.detect import DetectorSettings, Engine, load_rules
from detector.detect.detectors import NewPathDetector
from detector.errors import ParseError
from detector.model import compile_model, load_model
from detector.parsers import ParseOptions, make_parser
from detector.simulate import Simulator

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()


def run(scale: float) -> list[Row]:
    rows = []
    model = compile_model(load_model(ROOT / "rules" / "models" / "retail_store.yaml"))
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
    engine = Engine(
        model, DetectorSettings(learning_seconds=3600), load_rules(ROOT / "rules" / "detections")
    )
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
    del placed, records

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
