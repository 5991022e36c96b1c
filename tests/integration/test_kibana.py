"""Every dashboard panel's query and aggregations, run on the real Elasticsearch node
over what the pipeline (a real worker, from Kafka) produced: each finds documents and
buckets. Kibana itself cannot be installed here; this is what its panels ask."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from streams.kibana import SAVED_OBJECTS, load_objects, panels, run_panel
from tests.integration.conftest import events_index
from tests.integration.test_worker import (
    _env,
    _segwatch,
    _start_worker,
    _stop,
    _wait_count,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "detector" / "assets" / "models" / "retail_store.yaml"
START = 1_793_577_600  # 2026-11-02T00:00:00Z, where the simulated day starts


def _findings(path: Path) -> int:
    """Flows the simulated day lacks, late in it (after learning): a policy denying an
    allowed flow (app -> db 5432), an endpoint in no zone, a port never seen for app."""
    t = START + 20 * 3600
    lines = []
    for i in range(5):
        for src, dst, port, action in (("10.50.20.5", "10.50.30.5", 5432, "REJECT"),
                                       ("192.168.77.7", "10.50.20.5", 8080, "ACCEPT"),
                                       ("10.50.10.5", "10.50.20.5", 4444, "ACCEPT")):  # fmt: skip
            lines.append(f"2 123456789012 eni-1 {src} {dst} {41000 + i} {port} 6 3 180 "
                         f"{t + i} {t + i + 1} {action} OK")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


@pytest.mark.timeout(400)
def test_every_panel_finds_buckets_in_what_the_pipeline_indexed(
    es: Elasticsearch, unique: str, tmp_path: Path
) -> None:
    # one partition: the detectors see the day in time order (over several, the first
    # record a partition saw could be hours into the day, its learning then still ran
    # when the night's exfiltration came, and the off-hours panel was empty now and then)
    env = _env(f"kb{unique}", SEGWATCH_DETECTORS__LEARNING_SECONDS=str(6 * 3600),
               SEGWATCH_DETECTORS__RARE_PORT_MIN_FLOWS="50",
               SEGWATCH_TOPICS__PARTITIONS="1")  # fmt: skip
    stream, alerts = events_index(f"kb{unique}"), f"logs-segwatch.alerts-kb{unique}"
    incidents = f"logs-segwatch.incidents-kb{unique}"
    day = tmp_path / "day.log"
    simulated = _segwatch("simulate", "-m", str(MODEL), "-o", str(day), "--duration", "1d",
                          "--rate", "0.15", "--attack", "port-scan", "--attack", "offhours-exfil",
                          "--start", "2026-11-02", env=env)  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    shipped = len(day.read_text().splitlines()) + _findings(tmp_path / "findings.log")
    assert _segwatch("topics", "create", env=env).returncode == 0
    worker = _start_worker(MODEL, env, tmp_path / "worker.log")
    try:
        # the findings after the day is in: arrival order is what the detectors see
        day_count = len(day.read_text().splitlines())
        for name, count in (("day.log", day_count), ("findings.log", shipped)):
            sent = _segwatch("ship", "-f", "vpcflow", str(tmp_path / name), env=env)
            assert sent.returncode == 0, sent.stderr
            assert _wait_count(es, stream, count, seconds=180) == count
        deadline = time.time() + 60
        while time.time() < deadline and not es.indices.exists(index=alerts):
            time.sleep(1)
        assert _wait_count(es, alerts, 1) > 0
        assert _wait_count(es, incidents, 2) >= 2  # the scan's, the exfiltration's
    finally:
        _stop(worker)

    indices = {"segwatch-events": stream, "segwatch-alerts": alerts,
               "segwatch-incidents": incidents}  # fmt: skip
    found = panels(load_objects(sorted(SAVED_OBJECTS.glob("*.ndjson"))))
    empty = []
    for panel in found:
        hits, buckets = run_panel(es, panel, indices[panel.data_view])
        if hits == 0 or buckets == 0:
            empty.append(f"{panel.title}: {hits} documents, {buckets} buckets")
    assert empty == []
    # and the command users run says the same
    checked = _segwatch("kibana", "check", "--events", stream, "--alerts", alerts,
                        "--incidents", incidents, env=env)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "broken" not in checked.stderr
