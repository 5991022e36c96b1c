"""The wheel alone: built from the checkout, installed into a fresh virtualenv, run from a
folder outside the checkout. It installs the index templates on the real node,
analyzes with its own detection rules and runs the worker (Zeek records shipped,
indexed into their data stream), as a user who installed it would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from detector.definitions import ECS_VERSION
from streams.settings import ElasticsearchSettings
from tests.integration.test_worker import _env, _stop, _wait_count

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False, timeout=600)  # fmt: skip
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


@pytest.mark.timeout(1200)
def test_the_wheel_alone_sets_up_elasticsearch_analyzes_and_runs_the_worker_elsewhere(
    tmp_path: Path, es: Elasticsearch, es_settings: ElasticsearchSettings, unique: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", tmp_path / "dist",
         ROOT, cwd=tmp_path, env=env)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("segwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("streams/assets/elasticsearch/component-segwatch-ecs.json",
                 "streams/assets/kibana/incidents.ndjson",
                 "detector/assets/rules/restricted_to_internet.yaml",
                 "detector/assets/models/retail_store.yaml",
                 "detector/assets/models/tests/retail_store.yaml"):  # fmt: skip
        assert data in names, f"{data} is not in {wheel.name}"
    assert not any(n.startswith(("tests/", "bench/")) for n in names)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    _run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path, env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    segwatch = venv / "bin" / "segwatch"
    namespace = f"pkg{unique}"
    env |= {"SEGWATCH_ELASTICSEARCH__URL": es_settings.url,
            "SEGWATCH_ELASTICSEARCH__NAMESPACE": namespace}  # fmt: skip

    # the installed code, not the checkout's
    where = _run(venv / "bin" / "python", "-c", "import detector.assets as a, streams; "
                 "print(a.MODELS); print(streams.__file__)", cwd=elsewhere, env=env)  # fmt: skip
    models, package = (Path(line) for line in where.stdout.split())
    assert venv in models.parents and venv in package.parents

    setup = _run(segwatch, "es", "setup", cwd=elsewhere, env=env)
    assert "installed component template segwatch-ecs" in setup.stdout
    assert (
        "installed index template logs-segwatch.vpcflow (logs-segwatch.vpcflow-*)" in setup.stdout
    )
    assert es.indices.get_index_template(name="logs-segwatch.alerts")["index_templates"]

    model = models / "retail_store.yaml"
    _run(segwatch, "simulate", "-m", model, "-o", "day.log", "--duration", "6h", "--rate", "0.2",
         "--attack", "port-scan", "--start", "2026-11-02", cwd=elsewhere, env=env)  # fmt: skip
    analyzed = _run(segwatch, "analyze", "-m", model, "day.log", "--json", "--learning", "1h",
                    cwd=elsewhere, env=env)  # fmt: skip
    summary = json.loads(analyzed.stdout)
    shipped_rules = len(list((ROOT / "detector" / "assets" / "rules").glob("*.yaml")))
    assert summary["detection_rules"] == shipped_rules > 0  # the package's own rules
    assert summary["connections"] > 0 and summary["incidents"]  # the scan was found
    # a rules folder given and missing is an error, said as such
    missing = subprocess.run([str(segwatch), "analyze", "-m", str(model), "day.log",
                              "--rules", "/nonexistent"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    # the worker, from the wheel alone, with the shipped rules: every Zeek record indexed
    tag = f"pkg{unique}"
    worker_env = {**_env(tag), **{k: v for k, v in env.items() if k.startswith("SEGWATCH_")}}
    worker_env.pop("PYTHONPATH", None)
    zeek = elsewhere / "conn.log"
    _run(segwatch, "simulate", "-m", model, "-o", zeek, "--family", "zeek", "--duration", "1h",
         "--rate", "0.2", "--start", "2026-11-02", cwd=elsewhere, env=worker_env)  # fmt: skip
    records = len(zeek.read_text().splitlines())
    _run(segwatch, "topics", "create", cwd=elsewhere, env=worker_env)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([str(segwatch), "worker", "-m", str(model)], cwd=elsewhere,
                              env=worker_env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    try:
        _run(segwatch, "ship", "-f", "zeek", zeek, cwd=elsewhere, env=worker_env)
        stream = f"logs-segwatch.zeek-{tag}"
        assert _wait_count(es, stream, records, seconds=180) == records, log.read_text()[-3000:]
        assert es.count(index=stream, query={"term": {"ecs.version": ECS_VERSION}})["count"] == (
            records)  # fmt: skip
    finally:
        _stop(worker)
    assert worker.returncode is not None  # it stopped on SIGTERM
