"""Hot reload of the segmentation model.

``segwatch model publish M`` validates a model and writes it (the YAML text
with its version) to the compacted ``segmentation.model`` topic. Every worker
reads that topic from the beginning with its own reader (not through the
consumer group: every worker needs every model), validates what it reads,
and offers the newest valid model. An invalid model is refused: the old one
stays active, the error is logged and counted. Without Kafka (single node),
``watch_file`` reloads the model file when it changes.

**One model everywhere.** The normalize stage keys each batch by the newest
model (:meth:`ModelWatcher.current`) and stamps the messages it writes with that
model's version (header ``segwatch-model``); the score stage switches to the
model a message was keyed by (:meth:`ModelWatcher.get`) before it scores it. So
in a worker that runs one stage or both, keying and verdicts change at the same
point of the stream, wherever each stage runs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from detector.model import CompiledModel, ModelError, compile_model, load_model, model_from_text
from streams.metrics import METRICS
from streams.settings import KafkaSettings

__all__ = ["MODEL_HEADER", "ModelWatcher", "publish_model"]

log = logging.getLogger("segwatch.model")
KEY = b"segmentation-model"
MODEL_HEADER = "segwatch-model"  # on flows.normalized: the version the batch was keyed by
_KEPT = 16  # versions kept for stages that are behind


def publish_model(kafka: KafkaSettings, topic: str, path: Path) -> str:
    """Validate the model file and publish it; returns its version.

    :raises ModelError: the model is invalid (nothing is published).
    :raises RuntimeError: the broker did not acknowledge it.
    """
    model = load_model(path)
    record = {"name": model.name, "version": model.version, "source": str(path),
              "published_at": time.time(), "yaml": path.read_text(encoding="utf-8")}  # fmt: skip
    failures: list[str] = []
    producer = Producer({**kafka.client_config(), "acks": "all", "enable.idempotence": True})

    def report(err: Any, _message: Any) -> None:
        if err is not None:
            failures.append(err.str())

    producer.produce(topic, orjson.dumps(record), key=KEY, on_delivery=report)
    if producer.flush(30) or failures:
        raise RuntimeError(f"publishing to {topic} failed: {failures or 'timed out'}")
    return model.version


@dataclass
class ModelWatcher:
    """Follows the model topic (or a file) in a thread; ``latest`` is the newest valid model."""

    kafka: KafkaSettings | None
    topic: str
    file: Path | None = None
    watch_file: bool = False
    latest: CompiledModel | None = None
    initial: CompiledModel | None = None  # the model file's, until a newer one comes
    refused: list[str] = field(default_factory=list)
    versions: dict[str, CompiledModel] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if self.initial is not None:
            self.versions[self.initial.version] = self.initial

    def current(self) -> CompiledModel:
        """The newest valid model (the initial one until another comes)."""
        model = self.latest or self.initial
        if model is None:
            raise RuntimeError("no model: give the watcher an initial one")
        return model

    def get(self, version: str) -> CompiledModel | None:
        """The model of that version, if it was seen (the last few are kept)."""
        return self.versions.get(version)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _offer(self, text: str, where: str) -> None:
        try:
            model = compile_model(model_from_text(text, where))
        except Exception as exc:  # whatever a published text can cause, it is refused
            why = str(exc) if isinstance(exc, ModelError) else (
                f"{where}: {type(exc).__name__}: {str(exc)[:300]}")  # fmt: skip
            self.refused.append(why)
            METRICS.model_reload_failures.inc()
            log.error("model refused, the active one stays: %s", why)
            return
        if self.latest is None or model.version != self.latest.version:
            log.warning("model %s version %s is ready", model.model.name, model.version)
        self.versions[model.version] = model
        while len(self.versions) > _KEPT:
            del self.versions[next(iter(self.versions))]
        self.latest = model

    def _run(self) -> None:
        consumer = None
        if self.kafka is not None:
            consumer = Consumer({**self.kafka.client_config("model"),
                                 "group.id": "segwatch-model-reader",
                                 "enable.auto.commit": False})  # fmt: skip
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        mtime = 0.0
        try:
            while not self._stop.is_set():
                if consumer is not None:
                    message = consumer.poll(1.0)
                    value = message.value() if message is not None and not message.error() else None
                    if message is not None and value:
                        self._read(value, f"{self.topic}@{message.offset()}")
                else:
                    time.sleep(1.0)
                if self.watch_file and self.file is not None:
                    try:
                        current = self.file.stat().st_mtime
                    except OSError:
                        continue
                    if current != mtime:
                        mtime = current
                        self._offer(self.file.read_text(encoding="utf-8"), str(self.file))
        finally:
            if consumer is not None:
                consumer.close()

    def _read(self, value: bytes, where: str) -> None:
        try:
            record: dict[str, Any] = orjson.loads(value)
            text = str(record["yaml"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.refused.append(f"{where}: not a published model")
            METRICS.model_reload_failures.inc()
            log.error("%s: not a published model; ignored", where)
            return
        self._offer(text, where)
