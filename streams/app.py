"""The worker: ``flows.raw.<family>`` -> normalize -> ``flows.normalized`` (keyed by
the connection's initiator, so each initiator's connections meet one worker's
detectors) -> place and score -> ``flows.events`` and ``flows.alerts``; the events
are bulk-indexed into Elasticsearch; the alerts are indexed and grouped into
incidents, whose changes (``flows.incidents``) are indexed and paged to the
webhooks. Bad records go to ``flows.dlq`` with the reason.

Scoring (detector state in a faust table) is a faust agent; every other stage is
a supervised confluent-kafka loop in its own thread (:mod:`streams.loop`): normalize,
index, incidents, and one delivery stage per sink (:mod:`streams.deliver`), each
with its own consumer group. Every stage commits an offset only once what it made
of the record was acknowledged (Kafka, Elasticsearch, a webhook), so a crash
replays, and the ids derived from topic/partition/offset make the replay harmless.
A dependency that is away holds only the stages that need it; they say so on
``/readyz``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Collection
from typing import Any

import faust

from detector.assets import RULES
from detector.model import CompiledModel, compile_model, load_model
from streams.consumer import App
from streams.deliver import (
    TemplateGate,
    alert_items,
    document_items,
    index_stage,
    page_stage,
)
from streams.incidents import IncidentLoop
from streams.index import IndexLoop
from streams.loop import StageLoop
from streams.metrics import CONTENT_TYPE_LATEST, METRICS, LagMeter
from streams.model_sync import MODEL_HEADER, ModelWatcher
from streams.normalize import NormalizeLoop
from streams.pipeline import Scorer
from streams.score import ScoreStage, Send
from streams.settings import Settings
from streams.state import DetectorState, ZoneFeed, state_changelog
from streams.topics import TopicSpec

__all__ = ["create_app", "internal_topics", "tune_gc", "worker_stages"]

_MAX_STATE_BYTES = 16 * 1024 * 1024  # a partition's state snapshot, compressed
# flows.normalized and flows.events carry batches (JSON arrays of events): a faust agent
# pays about 100 us per Kafka message, far more than parsing or scoring an event costs.
_BATCHES_PER_TAKE = 4  # batches of flows.normalized scored before their sends are awaited
_FLUSH_SECONDS = 10.0  # how often held-back alert changes are sent while the stream is quiet

log = logging.getLogger("segwatch.worker")


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


def internal_topics(settings: Settings) -> list[TopicSpec]:
    """The topics faust keeps for this worker (the detector-state changelog, the
    assignor's), created before faust starts: faust declares them itself, but against a
    broker that has only just come back the declaration can fail, and faust then
    crashes its agent over a changelog of 0 partitions."""
    topics, app_id = settings.topics, settings.worker.app_id
    return [
        TopicSpec(state_changelog(settings), topics.partitions,
                  topics.replication_factor, {"cleanup.policy": "compact",
                                              "max.message.bytes": str(_MAX_STATE_BYTES)},
                  "the detector state per partition of the normalized topic"),
        TopicSpec(f"{app_id}-__assignor-__leader", 1, topics.replication_factor,
                  purpose="faust's assignor leader topic"),
    ]  # fmt: skip


def worker_stages(settings: Settings, models: ModelWatcher,
                  scored: Callable[[], Collection[int]] | None) -> list[StageLoop]:  # fmt: skip
    """The thread stages of a worker with ``settings.worker.roles`` (score is faust's,
    with what the other scorers learnt); normalize; index (after the index templates);
    alert: incidents, the alerts and incidents indices, and a page stage per webhook."""
    roles = set(settings.worker.roles)
    topics, es = settings.topics, settings.elasticsearch
    stages: list[StageLoop] = []
    if "score" in roles:
        stages.append(ZoneFeed(settings, scored))
    if "normalize" in roles:
        stages.append(NormalizeLoop(settings, models.current, scored))
    if roles & {"index", "alert"}:
        gate = TemplateGate(settings)
        stages.append(gate)
        if "index" in roles:
            stages.append(IndexLoop(settings, gate))
        if "alert" in roles:
            stages += [
                IncidentLoop(settings),
                index_stage(settings, "alerts-index", topics.alerts, es.alerts_index,
                            alert_items, gate),
                index_stage(settings, "incidents-index", topics.incidents, es.incidents_index,
                            document_items, gate),
                *(page_stage(settings, target) for target in settings.webhooks),
            ]  # fmt: skip
    return stages


def _model_header(record: Any) -> str | None:
    """The model version a normalized message was keyed by (None: not stamped)."""
    headers = record.message.headers or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == MODEL_HEADER and value:
            return bytes(value).decode("utf-8", "replace")
    return None


def _same(topic: str) -> str:
    return topic


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
    roles = set(worker.roles)
    state: DetectorState | None = None
    if "score" in roles:  # only a scorer holds the table: a worker that does not score
        # must not own its changelog's partitions (a restarted scorer then found its
        # detector state with another member of the group and started it empty)
        state_table = app.Table(
            "detector-state",
            partitions=topics.partitions,
            key_type=bytes, value_type=bytes,  # raw bytes in the changelog
            extra_topic_configs={"max.message.bytes": str(_MAX_STATE_BYTES)},
            help="Detector state per partition of the normalized topic (streams/state.py).",
        )  # fmt: skip
        state = DetectorState(state_table, worker.snapshot_seconds)
    rules = worker.rules_folder or str(RULES)
    scorer = Scorer(model, settings.detectors, rules,
                    restore=state.restore if state is not None else None)  # fmt: skip
    models = ModelWatcher(settings.kafka, topics.model, worker.model_file, worker.watch_file,
                          initial=model)  # fmt: skip
    METRICS.model_info.labels(model.model.name, model.version).set(1)
    partitions: list[int] = []  # of the normalized topic, scored here
    scored = (lambda: partitions) if "score" in roles else None
    stages = worker_stages(settings, models, scored)
    normalized, events, alerts, dlq = (
        app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw")
        for name in (topics.normalized, topics.events, topics.alerts, topics.dlq)
    )  # fmt: skip

    @app.task  # type: ignore[misc]
    async def start_stages() -> None:
        models.start()
        for stage in stages:
            stage.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_stages(app: faust.App, **kwargs: Any) -> None:
        models.stop()
        for stage in stages:
            await asyncio.to_thread(stage.stop)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        # a partition kept through the rebalance keeps its engine (fresher than its
        # snapshot); one that left is rebuilt from the table if it comes back
        mine = {tp.partition for tp in assigned if tp.topic == topics.normalized}
        scorer.keep(mine)
        partitions[:] = sorted(mine)

    by_name = {topics.events: events, topics.alerts: alerts, topics.dlq: dlq}

    async def deliver(sends: list[Send]) -> None:
        """Send them all, then wait for Kafka's acknowledgement of each. faust would
        commit the input's offsets even if a send failed, so a failure stops the worker
        instead: its restart reads the input again from the last commit."""
        try:
            pending = [await by_name[topic].send(key=key, value=value, partition=partition,
                                                 headers=headers)
                       for topic, key, value, partition, headers in sends]  # fmt: skip
            for sent in pending:
                await sent
        except Exception as exc:
            log.critical("could not write to Kafka (%s): stopping, to resume from the last "
                         "commit", exc)  # fmt: skip
            await app.crash(exc)
            raise

    async def model_for(version: str | None) -> CompiledModel | None:
        """The model a batch was keyed by (unstamped: the newest), waiting up to 10 s
        for this worker's reader to have it."""
        if version is None:
            return models.current()
        for _ in range(100):
            if (found := models.get(version)) is not None:
                return found
            await asyncio.sleep(0.1)
        log.warning("normalized batch keyed by model %s, which this worker does not have; "
                    "scoring with %s", version, scorer.model.version)  # fmt: skip
        return None

    async def score(stream: Any) -> None:
        # a few batches at a time, their sends acknowledged together: faust acks them
        # (their offsets become committable) only once this body is done with them
        async for records in stream.take_events(_BATCHES_PER_TAKE, within=0.05):
            sends: list[Send] = []
            for record in records:
                stream._set_current_event(record)  # its partition is the table's, for writes
                scoring.switch(await model_for(_model_header(record)))
                message = record.message
                sends += scoring.message(record.value, record.key, message.partition,
                                       message.offset)  # fmt: skip
            await deliver(sends)

    if state is not None:  # the score role
        feed = next(stage for stage in stages if isinstance(stage, ZoneFeed))
        scoring = ScoreStage(topics, scorer, state, feed.take)
        app.agent(normalized, name="score")(score)

        @app.timer(interval=_FLUSH_SECONDS)  # type: ignore[misc]
        async def flush_alerts() -> None:
            """Send the alerts whose last changes were held back (the stream went quiet)."""
            sends = scoring.flush()
            if sends:
                await deliver(sends)

    meter = LagMeter(settings.kafka.client_config("lag"))

    @app.timer(interval=15.0)  # type: ignore[misc]
    async def lag() -> None:
        """The lag of what this worker reads now: its stages' partitions and the score
        agent's (faust's); gauges of partitions it no longer reads are dropped."""
        owned = [(stage.group, stage.owned(), stage.lag_label)
                 for stage in stages if stage.group is not None]  # fmt: skip
        if "score" in roles:
            owned.append((worker.app_id, [(topics.normalized, p) for p in partitions], _same))
        found: dict[tuple[str, int], int] = {}
        try:
            for group, mine, label in owned:
                measured = await asyncio.to_thread(meter.measure, group, mine)
                found |= {(label(t), p): v for (t, p), v in measured.items()}
        except Exception as exc:  # a metric must never stop the pipeline
            log.warning("consumer lag not measured: %s", exc)
            return
        METRICS.consumer_lag.clear()
        for (topic, partition), value in found.items():
            METRICS.consumer_lag.labels(topic, str(partition)).set(value)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """Liveness: no stage stopped for good. A stage waiting for a dependency is
        healthy: it will go on when the dependency answers."""
        for stage in stages:
            if stage.failed is not None:
                error = f"the {stage.name} stage stopped: {stage.failed}"
                return web.json({"status": "failed", "error": error}, status=500)
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Readiness: every stage running, none waiting; each stage says what it waits
        on, why and since when."""
        report = {stage.name: stage.status() for stage in stages}
        ready = all(r["state"] == "running" or (name == "templates" and r["state"] == "stopped"
                                                 and not r.get("error"))
                    for name, r in report.items())  # fmt: skip
        body = {
            "ready": ready,
            "model": scorer.model.model.name,
            "model_version": scorer.model.version,
            "published_version": models.latest.version if models.latest is not None else None,
            "refused_models": len(models.refused),
            "partitions": partitions,  # of the normalized topic: whose state is here
            "stages": report,
        }
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # as a header: aiohttp refuses a content_type argument that names a charset
        return web.bytes(METRICS.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app
