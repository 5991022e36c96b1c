"""The worker: ``flows.raw.<family>`` -> normalize -> ``flows.normalized`` (keyed by
source zone, so one zone's flows meet one worker's detectors) -> place and score ->
``flows.events`` and ``flows.alerts``; the events are bulk-indexed into
Elasticsearch, the alerts upserted there and grouped into incidents, which are
upserted too and paged to the webhooks. Bad records go to ``flows.dlq`` with the
reason.

Scoring (detector state in a faust table) and the alert upserts are faust agents;
the normalize, index and incident stages are confluent-kafka loops in their own
threads (``streams.loop``). Every stage commits an offset only once what it made
of the record was acknowledged (Kafka, Elasticsearch, a webhook), so a crash
replays, and the ids derived from topic/partition/offset make the replay harmless.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import faust
import orjson
from elasticsearch import Elasticsearch

from detector.detect import Alert, event_time
from detector.model import compile_model, load_model
from streams.consumer import App
from streams.elastic import install_templates, upsert_alert
from streams.incidents import ALERTS_PARTITION, IncidentLoop, incident_group
from streams.index import IndexLoop, index_group
from streams.loop import StageLoop
from streams.metrics import METRICS, measure_lag
from streams.model_sync import ModelWatcher
from streams.normalize import NormalizeLoop, normalize_group
from streams.pipeline import Scorer, batches, dead_letter
from streams.settings import Settings
from streams.state import DetectorState
from streams.webhooks import WebhookSink

__all__ = ["create_app", "tune_gc"]

_MAX_STATE_BYTES = 16 * 1024 * 1024  # a partition's state snapshot, compressed
# flows.normalized and flows.events carry batches (JSON arrays of events): a faust agent
# pays about 100 us per Kafka message, far more than parsing or scoring an event costs.
_BATCHES_PER_TAKE = 4  # batches of flows.normalized scored before their sends are awaited
_FLUSH_SECONDS = 10.0  # how often held-back alert changes are sent while the stream is quiet

log = logging.getLogger("segwatch.worker")


def _events_of(value: bytes) -> list[dict[str, Any]] | None:
    """The events of a ``flows.normalized`` message, or None if it is not an array of them."""
    try:
        batch = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(batch, list) and all(isinstance(event, dict) for event in batch):
        return batch
    return None


def tune_gc() -> None:
    """Collect cycles far less often. Events are short-lived dicts without cycles
    (reference counting frees them), but every few hundred allocations the default
    collector scans the young objects, and now and then all the detector state: with
    the defaults, decoding an event cost 4x what it costs with these (26 -> 6 us)."""
    gc.freeze()  # what start-up made (modules, the model) is never collected
    gc.set_threshold(50_000, 50, 100)


def _broker(settings: Settings) -> str:
    hosts = settings.kafka.bootstrap_servers.split(",")
    return ";".join(f"kafka://{h.strip()}" for h in hosts)


def create_app(settings: Settings) -> faust.App:
    """The app for these settings; ``settings.worker.model_file`` is the model to use."""
    topics = settings.topics
    worker = settings.worker
    if worker.model_file is None:
        raise ValueError("worker.model_file: give the model (segwatch worker --model FILE)")
    worker.data_dir.mkdir(parents=True, exist_ok=True)
    app = App(
        worker.app_id,
        broker=_broker(settings),
        store=worker.store,
        datadir=str(worker.data_dir),
        broker_session_timeout=worker.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, worker.session_timeout_seconds / 3),
        producer_max_request_size=_MAX_STATE_BYTES,
        producer_max_batch_size=1_048_576,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        topic_allow_declare=True,  # its own state topics; `segwatch topics create` makes ours
        web_enabled=worker.web_port is not None,
        web_port=worker.web_port or 6066,
        web_host=worker.web_host,
        producer_acks=-1,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
    )
    model = compile_model(load_model(worker.model_file))
    state_table = app.Table(
        "detector-state",
        partitions=topics.partitions,
        key_type=bytes, value_type=bytes,  # raw bytes in the changelog
        extra_topic_configs={"max.message.bytes": str(_MAX_STATE_BYTES)},
        help="Detector state per partition of the normalized topic (streams/state.py).",
    )  # fmt: skip
    state = DetectorState(state_table, worker.snapshot_seconds)
    scorer = Scorer(model, settings.detectors, worker.rules_folder, restore=state.restore)
    watcher = ModelWatcher(settings.kafka, topics.model, worker.model_file, worker.watch_file)
    METRICS.model_info.labels(model.model.name, model.version).set(1)
    ready: dict[str, Any] = {"templates": False, "partitions": []}
    es = Elasticsearch(**settings.elasticsearch.client_kwargs())
    hooks = [WebhookSink(t) for t in settings.webhooks]
    raw = bytes
    normalized = app.topic(topics.normalized, key_type=raw, value_type=raw,
                           key_serializer="raw", value_serializer="raw")  # fmt: skip
    events = app.topic(topics.events, key_type=raw, value_type=raw,
                       key_serializer="raw", value_serializer="raw")  # fmt: skip
    alerts = app.topic(topics.alerts, key_type=raw, value_type=raw,
                       key_serializer="raw", value_serializer="raw")  # fmt: skip
    dlq = app.topic(topics.dlq, key_type=raw, value_type=raw,
                    key_serializer="raw", value_serializer="raw")  # fmt: skip

    roles = set(worker.roles)
    normalize: StageLoop | None = None
    index: StageLoop | None = None
    incidents: IncidentLoop | None = None
    if "normalize" in roles:
        scored = (lambda: ready["partitions"]) if "score" in roles else None
        normalize = NormalizeLoop(settings, lambda source: scorer.model.zone_of(source), scored)
    if "index" in roles:
        index = IndexLoop(settings)
    if "alert" in roles:
        incidents = IncidentLoop(settings, hooks)
    loops = [loop for loop in (normalize, index, incidents) if loop is not None]

    @app.task  # type: ignore[misc]
    async def setup() -> None:
        report = await asyncio.to_thread(
            install_templates,
            es,
            lifecycle=settings.elasticsearch.lifecycle,
            retention=settings.elasticsearch.retention,
        )
        log.info(
            "elasticsearch %s templates: %s; %s",
            report.server_version,
            report.installed,
            report.adaptations,
        )
        ready["templates"] = True
        watcher.start()
        # only now: a bulk write before the templates are in would create the events
        # data stream's name as a plain index, with guessed mappings, for good
        for loop in (index, incidents):
            if loop is not None:
                loop.start()

    @app.task  # type: ignore[misc]
    async def start_normalize() -> None:
        if normalize is not None:
            normalize.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_loops(app: faust.App, **kwargs: Any) -> None:
        for loop in loops:
            await asyncio.to_thread(loop.stop)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        # a partition kept through the rebalance keeps its engine (fresher than its
        # snapshot); one that left is rebuilt from the table if it comes back
        mine = {tp.partition for tp in assigned if tp.topic == topics.normalized}
        scorer.keep(mine)
        ready["partitions"] = sorted(mine)

    Send = tuple[Any, bytes | None, bytes, int | None]  # topic, key, value, partition

    async def deliver(sends: list[Send]) -> None:
        """Send them all, then wait for Kafka's acknowledgement of each. faust would
        commit the input's offsets even if a send failed, so a failure stops the worker
        instead: its restart reads the input again from the last commit."""
        try:
            pending = [await topic.send(key=key, value=value, partition=partition)
                       for topic, key, value, partition in sends]  # fmt: skip
            for sent in pending:
                await sent
        except Exception as exc:
            log.critical("could not write to Kafka (%s): stopping, to resume from the last "
                         "commit", exc)  # fmt: skip
            await app.crash(exc)
            raise

    async def score(stream: Any) -> None:
        # a few batches at a time, their sends acknowledged together: faust acks them
        # (their offsets become committable) only once this body is done with them
        async for records in stream.take_events(_BATCHES_PER_TAKE, within=0.05):
            sends: list[Send] = []
            for record in records:
                stream._set_current_event(record)  # its partition is the table's, for writes
                partition = record.message.partition
                batch = _events_of(record.value)
                if batch is None:  # not the normalize stage's
                    letter = dead_letter(record.value, topics.normalized, partition,
                                         record.message.offset, "score",
                                         "not a JSON array of events")  # fmt: skip
                    sends.append((dlq, None, orjson.dumps(letter), None))
                    METRICS.dlq_writes.labels("score").inc()
                    continue
                METRICS.records_in.labels(topics.normalized).inc(len(batch))
                latest = watcher.latest
                if latest is not None and latest.version != scorer.model.version:
                    METRICS.model_info.labels(scorer.model.model.name,
                                              scorer.model.version).set(0)  # fmt: skip
                    scorer.switch(latest)
                    METRICS.model_info.labels(latest.model.name, latest.version).set(1)
                    log.warning("switched to model %s", latest.version)
                engine = scorer.engine(partition)
                for event in batch:
                    _, alert = scorer.score(event, partition)
                    if alert is not None:
                        sends.append(_alert(alert))
                if batch:
                    sends += [_alert(a) for a in engine.flush(event_time(batch[-1]))]
                state.save(partition, engine)
                sends += [(events, record.key, scored, None) for scored in batches(batch)]
            await deliver(sends)

    def _alert(alert: Alert) -> Send:
        """An alert (new or changed) for flows.alerts: all on one partition, keyed by
        fingerprint, so the incident stage sees every one in order."""
        METRICS.alerts_raised.inc()
        doc = orjson.dumps(alert.to_document())
        return (alerts, alert.fingerprint.encode(), doc, ALERTS_PARTITION)

    if "score" in roles:

        @app.timer(interval=_FLUSH_SECONDS)  # type: ignore[misc]
        async def flush_alerts() -> None:
            """Send the alerts whose last changes were held back (the stream went quiet)."""
            sends = [_alert(a) for engine in scorer.engines.values() for a in engine.flush()]
            if sends:
                await deliver(sends)

    async def alert(stream: Any) -> None:
        async for value in stream:
            doc = orjson.loads(value)
            await asyncio.to_thread(upsert_alert, es, doc, settings.elasticsearch.alerts_index)

    for role, topic, agent in (("score", normalized, score), ("alert", alerts, alert)):
        if role in roles:
            app.agent(topic, name=role)(agent)

    @app.timer(interval=15.0)  # type: ignore[misc]
    async def lag() -> None:
        conf = settings.kafka.client_config()
        raw_topics = [topics.raw(f) for f in topics.families]
        own = [topics.normalized, topics.alerts]
        try:
            found = await asyncio.to_thread(measure_lag, conf, normalize_group(settings),
                                            raw_topics)  # fmt: skip
            found |= await asyncio.to_thread(measure_lag, conf, worker.app_id, own)
            incident_lag = await asyncio.to_thread(measure_lag, conf, incident_group(settings),
                                                   [topics.alerts])  # fmt: skip
            found |= {(f"{t}@incidents", p): v for (t, p), v in incident_lag.items()}
            found |= await asyncio.to_thread(measure_lag, conf, index_group(settings),
                                             [topics.events])  # fmt: skip
        except Exception as exc:  # a metric must never stop the pipeline
            log.warning("consumer lag not measured: %s", exc)
            return
        for (topic, partition), value in found.items():
            METRICS.consumer_lag.labels(topic, str(partition)).set(value)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """Liveness: the process answers and its normalize, index and incident threads run."""
        for loop in loops:
            if loop.failed is not None:
                error = f"the {loop.name} stage stopped: {loop.failed!r}"
                return web.json({"status": "failed", "error": error}, status=500)
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Readiness: templates installed and a model active."""
        status = 200 if ready["templates"] else 503
        body = {
            "ready": status == 200,
            "model": scorer.model.model.name,
            "model_version": scorer.model.version,
            "published_version": watcher.latest.version if watcher.latest is not None else None,
            "refused_models": len(watcher.refused),
            "partitions": ready["partitions"],  # of the normalized topic: whose state is here
            "incidents": incidents.status() if incidents is not None else None,
        }
        return web.json(body, status=status)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(METRICS.render(), content_type="text/plain; version=0.0.4")

    return app
