"""The pipeline on the local stack: end-to-end records/s beside its two ceilings, alert
page latency at half the default worker's end-to-end rate, and one worker against two.

Every figure runs `segwatch worker` as users do (a subprocess, its own topics,
consumer group and data stream), on records of the three-tier example model.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast
from unittest import mock

import orjson
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from bench import Row
from detector.model import compile_model, load_model
from detector.simulate import Simulator
from streams.elastic import install_templates
from streams.group import ALL_ROLES, process_count
from streams.group import layout as group_layout
from streams.incidents import incident_group
from streams.index import index_group
from streams.metrics import scrape
from streams.normalize import normalize_group
from streams.pipeline import Normalizer, Scorer
from streams.settings import Settings, load_settings
from streams.ship import ship
from streams.topics import ensure_topics, pipeline_topics

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml"
BULK = 2_000  # the worker's batch size, and documents per raw bulk for the ceiling
SCALE_PARTITIONS = 6  # an even split between two workers
# the stages end to end in one, two and three processes (worker.roles; the last one
# indexes): each Python process runs on one core at a time
LAYOUTS = (
    (("normalize", "score", "index", "alert"),),
    (("normalize",), ("score", "index", "alert")),
    (("normalize",), ("score", "alert"), ("index",)),
)
WEB_PORT = 16066  # the benchmark workers' health and metrics ports: this one and up


def run(scale: float) -> list[Row]:
    base = load_settings()
    es = Elasticsearch(**base.elasticsearch.client_kwargs())
    install_templates(es)
    # long enough to measure the sustained rate: with 200k records two workers ran for
    # about 5 s, and joining their groups and the first fetches weighed on the figure
    n = max(int(600_000 * scale), 10_000)
    records = _records(n)
    rows = _throughput(es, records)
    rows += _scaling(records)
    # paged at half of what the default worker just sustained end to end: a fixed rate
    # exceeded a slow machine's capacity, and the latency then measured the backlog
    capacity = next(r.value for r in rows if r.name == "pipeline end to end, default worker")
    rows += _latency(seconds=max(20.0, 40 * scale), rate=max(int(capacity / 2) // 100, 1) * 100)
    es.close()
    return rows


def _records(n: int) -> list[bytes]:
    """``n`` records from 08:00 UTC 30 days ago on: the same traffic whatever the hour
    the bench runs (the simulator's volume follows the time of day)."""
    simulator = Simulator(compile_model(load_model(MODEL)), "vpcflow", seed=5)
    start = (time.time() // 86_400 - 30) * 86_400 + 8 * 3_600
    records = simulator.run(start, n / 2, 20.0, [])  # 10n at the nominal rate: enough
    return [r.encode() for r, _ in itertools.islice(records, n)]


@contextmanager
def _run(**extra: str) -> Iterator[tuple[Settings, dict[str, str]]]:
    """Settings (and the environment giving them to a worker) for one run's own topics,
    groups and indices, read from that environment as the worker will read them; all
    of them are deleted on the way out (600k records a run add up)."""
    tag = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        "SEGWATCH_TOPICS__RAW_PREFIX": f"{tag}.raw.",
        "SEGWATCH_TOPICS__NORMALIZED": f"{tag}.normalized",
        "SEGWATCH_TOPICS__EVENTS": f"{tag}.events",
        "SEGWATCH_TOPICS__ALERTS": f"{tag}.alerts",
        "SEGWATCH_TOPICS__INCIDENTS": f"{tag}.incidents",
        "SEGWATCH_TOPICS__DLQ": f"{tag}.dlq",
        "SEGWATCH_TOPICS__MODEL": f"{tag}.model",
        "SEGWATCH_WORKER__APP_ID": f"segwatch-{tag}",
        "SEGWATCH_WORKER__BATCH_SIZE": str(BULK),
        "SEGWATCH_ELASTICSEARCH__NAMESPACE": tag,  # logs-segwatch.*-<tag>
        **extra,
    }
    with mock.patch.dict(os.environ, env):
        settings = load_settings()
    ensure_topics(settings.kafka, pipeline_topics(settings.topics))
    try:
        yield settings, env
    finally:
        _forget(settings)


def _forget(settings: Settings) -> None:
    """Delete a run's topics (its faust app's own too), consumer groups and indices."""
    admin = AdminClient(settings.kafka.client_config())
    app = settings.worker.app_id
    ours = {spec.name for spec in pipeline_topics(settings.topics)}
    topics = [t for t in admin.list_topics(timeout=10).topics
              if t in ours or t.startswith(f"{app}-")]  # fmt: skip
    groups = [app, normalize_group(settings), index_group(settings), incident_group(settings)]
    groups += [_ceiling_group(settings.topics.raw(f)) for f in settings.topics.families]
    for future in [*admin.delete_topics(topics, operation_timeout=30).values(),
                   *admin.delete_consumer_groups(groups).values()]:  # fmt: skip
        with suppress(KafkaException):  # a group the run never made
            future.result()
    es = Elasticsearch(**settings.elasticsearch.client_kwargs())
    for stream in settings.elasticsearch.events_targets():
        _drop_stream(es, stream)
    for index in (settings.elasticsearch.alerts_index, settings.elasticsearch.incidents_index):
        es.indices.delete(index=index, ignore_unavailable=True)
    es.close()


def _drop_stream(es: Elasticsearch, stream: str) -> None:
    """Delete a data stream, if there is one. A node without the data stream API (the
    local integ-test distribution answers 405) keeps an empty write index of it."""
    with suppress(NotFoundError):
        try:
            es.indices.delete_data_stream(name=stream)
        except ApiError as exc:
            if exc.meta.status != 405:
                raise
            write = es.indices.rollover(alias=stream)["new_index"]
            backing = es.indices.get(index=f".ds-{stream}-*", expand_wildcards="all")
            old = [name for name in backing if name != write]
            if old:
                es.indices.delete(index=",".join(old))


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def _workers(
    env: dict[str, str],
    count: int = 1,
    roles: list[str] | None = None,
    args: tuple[str, ...] = (),
    **extra: str,
) -> Iterator[list[_Worker]]:
    """``count`` workers of one group (``roles[i]``: the i-th one's, as JSON; ``args``:
    more of their command line), stopped (SIGTERM) on the way out."""
    logs = Path(tempfile.mkdtemp(prefix="segwatch-bench-"))
    procs: list[_Worker] = []
    for i in range(count):
        worker_env = {**os.environ, **env, **extra, "SEGWATCH_WORKER__WEB_PORT": str(WEB_PORT + i)}
        if roles is not None:
            worker_env["SEGWATCH_WORKER__ROLES"] = roles[i]
        command = [sys.executable, "-m", "streams.cli", "worker", "-m", str(MODEL),
                   "--loglevel", "warning", *args]  # fmt: skip
        log = logs / f"worker-{i}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(command, env=worker_env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(_Worker(proc, log))
    try:
        yield procs
    finally:
        for worker in procs:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in procs:
            try:
                worker.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.proc.kill()


def _steady_rate(
    count: Callable[[], int], n: int, workers: list[_Worker], timeout: float = 600
) -> float:
    """Records/s from the first output to ``n`` outputs; ``count()`` reads the output.
    A worker that exits on the way ends the wait at once, with its log."""
    return _measured_rate(count, n, workers, timeout)[0]


def _measured_rate(
    count: Callable[[], int],
    n: int,
    workers: list[_Worker],
    timeout: float = 600,
    probe: Callable[[], list[float]] | None = None,
) -> tuple[float, list[float]]:
    """:func:`_steady_rate`, and how much each figure of ``probe()`` (CPU seconds)
    grew over the same window, from the first output to the last."""
    deadline = time.time() + timeout
    first_at, first = None, 0
    before: list[float] = []
    while time.time() < deadline:
        for worker in workers:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"a worker exited ({worker.proc.returncode}); its log, "
                                   f"{worker.log}:\n{worker.log.read_text()[-3000:]}")  # fmt: skip
        seen = count()
        now = time.perf_counter()
        if first_at is None and seen > 0:
            first_at, first = now, seen
            before = probe() if probe is not None else []
        if seen >= n and first_at is not None:
            after = probe() if probe is not None else []
            return (seen - first) / (now - first_at), [
                b - a for a, b in zip(before, after, strict=True)
            ]
        time.sleep(0.25)
    raise RuntimeError(f"only {count()} of {n} records came out in {timeout:.0f} s")


def _cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of the processes ``roots`` and all their descendants
    (a worker group's children), from /proc."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += [child for child, (parent, _) in stats.items() if parent == pid]
    return total


def _service_pid(name: str) -> int:
    """The pid the local stack's script wrote for ``name`` (kafka, elasticsearch)."""
    cache = Path(os.environ.get("SEGWATCH_CACHE", ROOT / ".cache"))
    return int((cache / name / f"{name}.pid").read_text().strip())


def _throughput(es: Elasticsearch, records: list[bytes]) -> list[Row]:
    n = len(records)
    with _run() as (settings, _):
        raw = settings.topics.raw("vpcflow")
        if ship(settings.kafka, raw, records).failed:
            raise RuntimeError("could not ship the records")
        consume = _consume_rate(settings, raw, n)
    # once unmeasured: on a node just started, the JVM is still compiling, and the
    # ceiling came out a third low (and the ratios above 100%)
    _bulk_rate(es, records, "warmup")
    bulk = _bulk_rate(es, records, "ceiling")
    lower = min(consume, bulk)
    cond = f"{n:,} VPC records (3 partitions), batches of {BULK}, raw bulks of {BULK}"
    rows = [
        Row("ceiling: raw consume of the records (confluent-kafka)", consume, "records/s", cond),
        Row("ceiling: raw bulk of the same documents (data stream)", bulk, "docs/s", cond),
    ]
    for layout in LAYOUTS:
        rate, _ = _end_to_end(es, records, [json.dumps(stages) for stages in layout])
        what = f"{len(layout)} process{'es' if len(layout) > 1 else ''}"
        roles = " | ".join(f"[{', '.join(stages)}]" for stages in layout)
        rows += [
            Row(f"pipeline end to end, {what}", rate, "records/s", f"roles {roles}; {cond}"),
            Row(f"{what} / lower ceiling", 100 * rate / lower, "%", "target >= 70%"),
        ]
    # what users run: `segwatch worker --processes auto`, with the CPU each part spent
    rate, (worker, elastic, broker, *each) = _end_to_end(
        es, records, [json.dumps(ALL_ROLES)], ("--processes", "auto"))  # fmt: skip
    auto = f"--processes auto = {process_count('auto')} processes; {cond}"
    per = {name: 1e6 * seconds for name, seconds in
           (("worker", worker), ("elasticsearch", elastic), ("broker", broker))}  # fmt: skip
    processes = group_layout(process_count("auto"))
    stages = [Row(f"worker CPU per record, process of {', '.join(roles)}", 1e6 * seconds, "us",
                  "the default worker's process, same window (normalize may have run up "
                  "to worker.normalize_ahead records ahead of its start)")
              for roles, seconds in zip(processes, each, strict=False)]  # fmt: skip
    return [
        *rows,
        Row("pipeline end to end, default worker", rate, "records/s", auto),
        Row(
            "end to end, default worker / lower ceiling",
            100 * rate / lower,
            "%",
            f"target >= 85%; {auto}",
        ),
        Row(
            "worker CPU per record, default worker",
            per["worker"],
            "us",
            "every worker process, /proc user + system, over the steady window",
        ),
        *stages,
        Row("Elasticsearch CPU per document", per["elasticsearch"], "us", "same window"),
        Row("broker CPU per record", per["broker"], "us", "same window"),
        Row(
            "worker CPU per record / Elasticsearch CPU per document",
            per["worker"] / per["elasticsearch"],
            "x",
            "target <= 0.5; same run",
        ),
    ]


def _end_to_end(
    es: Elasticsearch, records: list[bytes], roles: list[str], args: tuple[str, ...] = ()
) -> tuple[float, list[float]]:
    """Records/s from a raw topic already holding ``records`` into the events stream, all
    of them checked there, with a worker process per entry of ``roles`` (``args``: more
    of their command line); the last one indexes. Also the CPU seconds the workers,
    Elasticsearch and the broker spent per record indexed meanwhile, then each process
    of a worker group's. (Shipping the records while the
    workers run would put the shipper's CPU into the measurement.)"""
    n = len(records)
    with _run() as (settings, env):
        if ship(settings.kafka, settings.topics.raw("vpcflow"), records).failed:
            raise RuntimeError("could not ship the records")
        stream = settings.elasticsearch.events_target("segwatch.vpcflow")
        services = [_service_pid("elasticsearch"), _service_pid("kafka")]
        with _workers(env, len(roles), roles, args) as workers:
            # documents Elasticsearch acknowledged, from the worker's counter: polling the
            # stream's count would refresh it several times a second and slow Elasticsearch
            indexed = _counter("segwatch_records_out_total", 1, WEB_PORT + len(roles) - 1)

            def probe() -> list[float]:
                # a group's processes one by one too (their process_cpu_seconds_total)
                each = {
                    s.labels["worker_process"]: s.value
                    for s in scrape(WEB_PORT + len(roles) - 1, timeout=2)
                    if s.name == "process_cpu_seconds_total" and "worker_process" in s.labels
                }
                return [_cpu_seconds([w.proc.pid for w in workers]),
                        *(_cpu_seconds([pid]) for pid in services),
                        *(each[k] for k in sorted(each, key=int)), indexed()]  # fmt: skip

            rate, grew = _measured_rate(indexed, n, workers, probe=probe)
            cpu = [seconds / max(grew[-1], 1) for seconds in grew[:-1]]  # per record
        es.indices.refresh(index=stream)
        if es.count(index=stream)["count"] != n:
            raise RuntimeError(f"{stream} holds {es.count(index=stream)['count']} of {n} events")
    return rate, cpu


def _ceiling_group(topic: str) -> str:
    """The consumer group that reads ``topic`` for the consume ceiling."""
    return f"ceiling-{topic}"


def _consume_rate(settings: Settings, topic: str, n: int) -> float:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": _ceiling_group(topic),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    got, first = 0, None
    while got < n:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        if batch and first is None:
            first = time.perf_counter()
        got += sum(1 for m in batch if m.error() is None)
    rate = n / (time.perf_counter() - (first or time.perf_counter()))
    consumer.close()
    return rate


def _bulk_rate(es: Elasticsearch, records: list[bytes], name: str) -> float:
    """Raw bulk (create, with ids) of the documents the pipeline makes of ``records``,
    into a data stream of its own (deleted afterwards)."""
    stream = f"logs-segwatch.vpcflow-{name}{uuid.uuid4().hex[:8]}"
    normalizer = Normalizer("vpcflow")
    scorer = Scorer(compile_model(load_model(MODEL)))
    docs = []
    for offset, record in enumerate(records):
        for event in normalizer.normalize(record, "ceiling", 0, offset)[0]:
            docs.append(orjson.dumps(scorer.score(event)[0]))
    bodies = []
    for i in range(0, len(docs), BULK):
        lines = []
        for j, doc in enumerate(docs[i : i + BULK]):
            lines += [b'{"create":{"_id":"c-%d"}}' % (i + j), doc]
        bodies.append(b"\n".join(lines) + b"\n")
    started = time.perf_counter()
    try:
        for body in bodies:
            response = es.bulk(index=stream, body=cast(Any, body))  # typed without bytes
            if response["errors"]:
                raise RuntimeError(f"bulk refused: {response['items'][0]}")
        return len(docs) / (time.perf_counter() - started)
    finally:
        _drop_stream(es, stream)


def _counter(name: str, workers: int, first: int = WEB_PORT, **labels: str) -> Any:
    """A counter of the workers' /metrics (ports ``first`` on), summed over them (and
    over other labels)."""

    def count() -> int:
        samples = [s for i in range(workers) for s in scrape(first + i, timeout=2)]
        return int(sum(s.value for s in samples if s.name == name
                       and all(s.labels.get(k) == v for k, v in labels.items())))  # fmt: skip

    return count


def _scaling(records: list[bytes]) -> list[Row]:
    """Normalize + score only (no sink): the rate into the events topic, 1 vs 2 workers."""
    rates = []
    shares = ""
    for count in (1, 2):
        partitions = str(SCALE_PARTITIONS)
        with (_run(SEGWATCH_TOPICS__PARTITIONS=partitions) as (settings, env),
              _workers(env, count, ['["normalize","score"]'] * count) as workers):  # fmt: skip
            # the records come once every worker has its share: shipped before, the first
            # worker up read them alone until the second joined (runs at 1.0x); the
            # shipper's CPU is in both measurements now
            _wait_for_members(settings, {normalize_group(settings): count,
                                         settings.worker.app_id: count})  # fmt: skip
            if ship(settings.kafka, settings.topics.raw("vpcflow"), records).failed:
                raise RuntimeError("could not ship the records")
            topic = settings.topics.normalized
            rates.append(_steady_rate(_counter("segwatch_records_in_total", count, topic=topic),
                                      len(records), workers))  # fmt: skip
            # the scoring each worker did: keyed by source zone, it is rarely half each
            scored = [_counter("segwatch_records_in_total", 1, WEB_PORT + i, topic=topic)()
                      for i in range(count)]  # fmt: skip
            shares = "/".join(f"{100 * n / sum(scored):.0f}%" for n in scored)
    cond = (f"{len(records):,} records, normalize + score, {SCALE_PARTITIONS} partitions, "
            "2 cores in all")  # fmt: skip
    return [
        Row("1 worker: raw -> events topic", rates[0], "records/s", cond),
        Row(
            "2 workers: raw -> events topic",
            rates[1],
            "records/s",
            f"{cond}; events scored per worker {shares}",
        ),
        Row(
            "2 workers / 1 worker",
            rates[1] / rates[0],
            "x",
            "target >= 1.85x (2 cores, the broker on them too)",
        ),
    ]


def _wait_for_members(settings: Settings, members: dict[str, int], timeout: float = 120) -> None:
    """Until each consumer group in ``members`` is stable with that many members."""
    admin = AdminClient(settings.kafka.client_config())
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = [f.result() for f in admin.describe_consumer_groups(list(members)).values()]
        except KafkaException:
            found = []
        if len(found) == len(members) and all(
            g.state == ConsumerGroupState.STABLE and len(g.members) == members[g.group_id]
            for g in found
        ):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the workers' consumer groups did not reach {members} members")


class _Receiver(http.server.BaseHTTPRequestHandler):
    arrived: ClassVar[dict[str, float]] = {}  # attacker -> receipt of its incident's trigger

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        segwatch = body.get("segwatch", {})
        if segwatch.get("page", {}).get("action") == "trigger":
            _Receiver.arrived.setdefault(segwatch["incident"]["attacker"], time.time())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _attackers() -> list[str]:
    """Hosts of the DMZ and the app tier: each probe of the database comes from a new
    one, so each opens an incident of its own."""
    return [f"10.0.{net}.{host}" for net in (1, 2) for host in range(1, 255)]


def _latency(seconds: float, rate: int) -> list[Row]:
    """Produce ``rate`` records/s (a multiple of 100) to the default worker
    (``--processes auto``); every 100 ms one violation into the restricted zone from a
    host of its own (its own incident); time from produce to the receipt of the
    incident's trigger page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = [{"name": "bench", "kind": "json", "secret": "bench", "rate_per_second": 100,
             "url": f"http://127.0.0.1:{server.server_address[1]}/"}]  # fmt: skip
    attackers = _attackers()
    with _run() as (settings, env):
        producer = Producer({**settings.kafka.client_config(), "linger.ms": 5})
        topic = settings.topics.raw("vpcflow")
        sent: dict[str, float] = {}

        def record(src: str, dst: str, sport: int, dport: int) -> bytes:
            t = int(time.time())
            return (f"2 123456789012 eni-1 {src} {dst} {sport} {dport} 6 1 60 {t} {t + 1} "
                    "ACCEPT OK").encode()  # fmt: skip

        with _workers(env, 1, None, ("--processes", "auto"), SEGWATCH_WEBHOOKS=json.dumps(hook)):
            probe = attackers.pop()  # wait until the worker pages at all
            deadline = time.time() + 120
            while probe not in _Receiver.arrived and time.time() < deadline:
                producer.produce(topic, record(probe, "10.0.3.30", 40000, 6379))
                producer.flush(5)
                time.sleep(2)
            if probe not in _Receiver.arrived:
                raise RuntimeError("no incident reached the webhook receiver in 120 s")
            started = time.perf_counter()
            slice_n = rate // 100  # every 10 ms
            i = 0
            while time.perf_counter() - started < seconds and attackers:
                tick = started + i * 0.01
                delay = tick - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                for j in range(slice_n):
                    producer.produce(topic, record("10.0.1.10", "10.0.2.20", 30000 + j, 8080))
                if i % 10 == 0:
                    attacker = attackers.pop()
                    producer.produce(topic, record(attacker, "10.0.3.30", 40000, 6379))
                    sent[attacker] = time.time()
                producer.poll(0)
                i += 1
            producer.flush(30)
            deadline = time.time() + 30
            while time.time() < deadline and not set(sent) <= set(_Receiver.arrived):
                time.sleep(0.5)
    server.shutdown()
    got = sorted(_Receiver.arrived[a] - sent[a] for a in sent if a in _Receiver.arrived)
    if not got:
        raise RuntimeError("no incident of the run reached the receiver")
    lost = len(sent) - len(got)
    cond = (f"{rate:,} records/s (half the default worker's end to end) for {seconds:.0f} s, "
            f"{len(sent)} incidents, "
            f"{lost} not paged in 30 s, produce -> trigger page receipt")  # fmt: skip
    p99 = got[min(len(got) - 1, int(0.99 * len(got)))]
    return [
        Row("page latency p50", statistics.median(got), "s", cond),
        Row("page latency p99", p99, "s", f"target <= 2 s; {cond}"),
    ]
