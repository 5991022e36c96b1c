"""``segwatch demo`` (what ``make run`` runs): the whole pipeline on the local stack.

Creates the topics, installs the templates, starts a worker (or watches one
that runs elsewhere: ``--worker-url``, as in the compose file), ships simulated
traffic for the retail model with a rotating attack scenario every cycle, and
shows throughput, the latest incidents and the alerts behind them live (one line per cycle off a
terminal). Ctrl-C stops the worker cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from elasticsearch import Elasticsearch
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from detector.model import compile_model, load_model
from detector.simulate import SCENARIOS, SimulationError, Simulator
from streams.elastic import install_templates
from streams.metrics import scrape
from streams.settings import Settings
from streams.ship import ship
from streams.topics import ensure_topics, pipeline_topics

__all__ = ["run_demo"]

CYCLE_HOURS = 2  # simulated time per cycle
SPAN = CYCLE_HOURS * 3600


def run_demo(
    settings: Settings,
    model_path: Path,
    rate: float,
    cycle_seconds: float,
    worker_url: str | None = None,
    processes: str = "1",
) -> None:
    """Ship a cycle of simulated traffic every ``cycle_seconds`` and show the pipeline.

    ``worker_url`` (http://host:port): a worker that runs elsewhere (compose, Kubernetes)
    whose metrics to show; none: start one here, of ``processes`` processes (``segwatch
    worker --processes``). Off a terminal, one line per cycle.
    """
    ensure_topics(settings.kafka, pipeline_topics(settings.topics))
    es = Elasticsearch(**settings.elasticsearch.client_kwargs())
    install_templates(es, settings.elasticsearch)
    model = compile_model(load_model(model_path))
    if worker_url is None:
        host, port = "127.0.0.1", settings.worker.web_port or 6066
        env = {**os.environ, "SEGWATCH_WORKER__WEB_PORT": str(port),
               "SEGWATCH_DETECTORS__LEARNING_SECONDS": str(4 * 3600)}  # fmt: skip
        worker: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-m", str(model_path),
             "--processes", processes, "--loglevel", "error"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    else:
        address = urlsplit(worker_url)
        host, port, worker = address.hostname or "127.0.0.1", address.port or 6066, None
    console = Console()
    families = [f for f in ("vpcflow",) if f in settings.topics.families]
    scenarios = [s for s in SCENARIOS if s != "tenant-crossing"]
    start = time.time() - 48 * 3600
    cycle = 0
    shipped = 0
    live = Live(_view(es, settings, host, port, shipped, "starting"), console=console,
                refresh_per_second=1) if console.is_terminal else None  # fmt: skip
    # Ctrl-C (or SIGTERM, as compose sends) ends the cycle in hand, not a Kafka call in
    # the middle: a KeyboardInterrupt inside the producer's flush came out as SystemError
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        if live is not None:
            live.start()
        while not stop.is_set():
            attack = scenarios[cycle % len(scenarios)]
            simulator = Simulator(model, families[0], seed=cycle)
            begin = start + cycle * CYCLE_HOURS * 3600
            if begin + CYCLE_HOURS * 3600 > time.time():
                start, cycle, begin = time.time() - 48 * 3600, 0, time.time() - 48 * 3600
            attacks = [attack] if cycle >= 2 else []  # let the detectors learn first
            try:
                records = [r.encode() for r, _ in simulator.run(begin, SPAN, rate, attacks)]
            except SimulationError:  # a scenario this model cannot host: plain traffic
                records = [r.encode() for r, _ in simulator.run(begin, SPAN, rate, [])]
            shipped += ship(settings.kafka, settings.topics.raw(families[0]), records).delivered
            cycle += 1
            if live is None:
                numbers = _metrics(host, port)
                indexed = numbers.get("segwatch_records_out_total", 0)
                opened = numbers.get("segwatch_incidents_opened_total", 0)
                raised = numbers.get("segwatch_alerts_raised_total", 0)
                console.print(f"cycle {cycle}: shipped {shipped:,} records ({attack}); "
                              f"worker: {indexed:,.0f} indexed, {opened:,.0f} incidents, "
                              f"{raised:,.0f} alert changes")  # fmt: skip
            deadline = time.time() + cycle_seconds
            while time.time() < deadline and not stop.is_set():
                if live is not None:
                    live.update(_view(es, settings, host, port, shipped, attack))
                stop.wait(1)
                if worker is not None and worker.poll() is not None and not stop.is_set():
                    raise RuntimeError("the worker stopped; run `segwatch worker` to see why")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if live is not None:
            live.stop()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()


def _metrics(host: str, port: int) -> dict[str, float]:
    """The worker's metrics, summed over their labels."""
    out: dict[str, float] = {}
    for sample in scrape(port, host, timeout=2):
        out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _view(
    es: Elasticsearch, settings: Settings, host: str, port: int, shipped: int, attack: str
) -> Any:
    numbers = _metrics(host, port)
    head = Table(title="segwatch demo — Ctrl-C to stop", show_header=False)
    head.add_row("shipped records", f"{shipped:,}")
    head.add_row("records in (worker)", f"{numbers.get('segwatch_records_in_total', 0):,.0f}")
    head.add_row("events indexed", f"{numbers.get('segwatch_records_out_total', 0):,.0f}")
    head.add_row("dead letters", f"{numbers.get('segwatch_dlq_writes_total', 0):,.0f}")
    head.add_row("incidents opened",
                 f"{numbers.get('segwatch_incidents_opened_total', 0):,.0f}")  # fmt: skip
    head.add_row("pages sent", f"{numbers.get('segwatch_pages_sent_total', 0):,.0f}")
    head.add_row("alert changes sent",
                 f"{numbers.get('segwatch_alerts_raised_total', 0):,.0f}")  # fmt: skip
    head.add_row("current scenario", attack)
    incidents = Table(title="incidents (latest first)")
    for column in ("last seen", "severity", "state", "incident", "path", "reached"):
        incidents.add_column(column)
    for doc in _latest(es, settings.elasticsearch.incidents_index, "segwatch.incident.last_seen"):
        incident = doc["segwatch"]["incident"]
        zone, seconds = incident["most_sensitive_zone"], incident["time_to_most_sensitive_s"]
        reached = f"{zone} after {seconds / 60:.0f} min" if zone is not None else "-"
        incidents.add_row(incident["last_seen"][:19], incident["severity"], incident["state"],
                          incident["title"], " -> ".join(incident["path"]), reached)  # fmt: skip
    alerts = Table(title="latest alerts (the incidents' evidence)")
    for column in ("last seen", "severity", "alert", "initiator", "zones", "count"):
        alerts.add_column(column)
    for doc in _latest(es, settings.elasticsearch.alerts_index, "segwatch.alert.last_seen"):
        alert, seg = doc["segwatch"]["alert"], doc["segmentation"]
        zones = f"{seg['source_zone']} -> {seg['destination_zone']}"
        source = (doc.get("source") or {}).get("ip", "")
        alerts.add_row(alert["last_seen"][:19], alert["severity"], doc["rule"]["name"], source,
                       zones, str(alert["count"]))  # fmt: skip
    return Group(head, incidents, alerts)


def _latest(es: Elasticsearch, index: str, field: str, size: int = 8) -> list[dict[str, Any]]:
    """The newest documents of an index, by ``field``; none while it does not exist."""
    try:
        hits = es.search(index=index, size=size, sort=[{field: "desc"}])["hits"]["hits"]
    except Exception:  # no such index yet, or the node is away: the view goes on
        return []
    return [hit["_source"] for hit in hits]
