"""Configuration of every I/O component, validated once at the edge.

Values come, highest priority first, from keyword arguments, ``SEGWATCH_*``
environment variables (nested with ``__``, e.g.
``SEGWATCH_KAFKA__BOOTSTRAP_SERVERS``), a YAML file named by ``SEGWATCH_CONFIG``
(or passed as ``config_file``), and the defaults below, which match the local
stack started by ``make services-up``.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from detector import yamlsafe
from detector.definitions import (
    DEFAULT_NAMESPACE,
    FAMILIES,
    NAMESPACE_PATTERN,
    dataset,
    stream_name,
)
from detector.detect.base import DetectorSettings
from detector.incidents import IncidentSettings
from streams.retry import RetrySettings
from streams.webhooks import WebhookTarget

__all__ = [
    "ElasticsearchSettings",
    "KafkaSettings",
    "KibanaSettings",
    "Settings",
    "SettingsError",
    "TopicSettings",
    "WorkerSettings",
    "load_settings",
]

_config_file: ContextVar[Path | None] = ContextVar("segwatch_config_file", default=None)


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    client_id: str = "segwatch"

    def client_config(self, role: str | None = None) -> dict[str, Any]:
        """The librdkafka configuration (confluent-kafka) for these settings; a client
        with a ``role`` (a worker's stage) is named by it too, in librdkafka's log lines
        and the broker's."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": f"{self.client_id}-{role}" if role else self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        return conf


class TopicSettings(BaseModel):
    """Names and layout of the pipeline's topics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_prefix: str = "flows.raw."
    families: tuple[str, ...] = FAMILIES  # a raw topic for each
    events: str = "flows.events"
    alerts: str = "flows.alerts"
    incidents: str = "flows.incidents"
    dlq: str = "flows.dlq"
    normalized: str = "flows.normalized"
    model: str = "segmentation.model"
    partitions: int = Field(default=3, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)

    def raw(self, family: str) -> str:
        """The raw-input topic of one log family, e.g. ``flows.raw.vpcflow``."""
        return f"{self.raw_prefix}{family}"


class ElasticsearchSettings(BaseModel):
    """How to reach Elasticsearch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "http://127.0.0.1:9200"
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    timeout: float = Field(default=30.0, gt=0)
    # Elastic's data stream naming scheme, {type}-{dataset}-{namespace}: events go to
    # logs-segwatch.<family>-<namespace>, alerts and incidents to regular indices named
    # the same way. Names outside the templates' patterns would get no template (a plain
    # index with guessed mappings), so they are refused.
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        pattern=NAMESPACE_PATTERN,
        description="The data_stream.namespace of everything segwatch writes (Elastic's "
        "{type}-{dataset}-{namespace}: events go to logs-segwatch.<family>-<namespace>): "
        "lowercase, at most 100 characters, no '-' (for example default, prod, eu_west).",
    )
    events_stream: str | None = Field(
        default=None,
        pattern=r"^segwatch-events[a-z0-9._-]*$",
        description="Unset (the default): one data stream per family, "
        "logs-segwatch.<family>-<namespace>. Set to segwatch-events (or that with a "
        "lowercase suffix) to keep the single stream of segwatch 0.1.",
    )
    alerts_index: str = Field(
        default="",
        pattern=r"^(logs-segwatch\.alerts-[a-z0-9_]+|segwatch-alerts[a-z0-9._-]*)$",
        description="The alerts index (one document per alert): "
        "logs-segwatch.alerts-<namespace> by default; segwatch-alerts (or that with a "
        "lowercase suffix) keeps segwatch 0.1's name.",
    )
    incidents_index: str = Field(
        default="",
        pattern=r"^(logs-segwatch\.incidents-[a-z0-9_]+|segwatch-incidents[a-z0-9._-]*)$",
        description="The incidents index (one document per incident): "
        "logs-segwatch.incidents-<namespace> by default; segwatch-incidents (or that with "
        "a lowercase suffix) keeps segwatch 0.1's name.",
    )

    @model_validator(mode="before")
    @classmethod
    def _named_by_namespace(cls, data: Any) -> Any:
        """Unset alert and incident index names follow the namespace."""
        if isinstance(data, dict):
            namespace = data.get("namespace") or DEFAULT_NAMESPACE
            for key, kind in (("alerts_index", "alerts"), ("incidents_index", "incidents")):
                if not data.get(key):
                    data = {**data, key: stream_name(f"segwatch.{kind}", str(namespace))}
        return data

    def events_target(self, dataset: str) -> str:
        """Where the events of one dataset (``segwatch.vpcflow``) are written."""
        return self.events_stream or stream_name(dataset, self.namespace)

    def events_targets(self) -> list[str]:
        """Every events stream these settings write (one per family, or the single one)."""
        return sorted({self.events_target(dataset(f)) for f in FAMILIES})

    def events_pattern(self) -> str:
        """The events of this namespace as one index expression for searches: every
        ``logs-segwatch.*`` stream but the alerts and incidents indices (a stream not
        made yet matches nothing rather than failing)."""
        if self.events_stream:
            return self.events_stream
        ns = self.namespace
        return (f"{stream_name('segwatch.*', ns)},-{stream_name('segwatch.alerts', ns)},"
                f"-{stream_name('segwatch.incidents', ns)}")  # fmt: skip

    lifecycle: Literal["auto", "dsl", "ilm", "none"] = Field(
        default="auto",
        description="Who deletes old events: dsl (data stream lifecycle), ilm, none, or auto "
        "(dsl where the server runs it, else ilm, else none; `es setup` says which).",
    )
    retention: str = Field(
        default="30d",
        pattern=r"^[1-9][0-9]*(d|h)$",
        description="How long events are kept (e.g. 30d, 72h).",
    )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`elasticsearch.Elasticsearch`."""
        kwargs: dict[str, Any] = {"hosts": [self.url], "request_timeout": self.timeout}
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        elif self.username is not None and self.password is not None:
            kwargs["basic_auth"] = (self.username, self.password.get_secret_value())
        if self.ca_certs is not None:
            kwargs["ca_certs"] = str(self.ca_certs)
        return kwargs


class KibanaSettings(BaseModel):
    """How to reach Kibana (`segwatch kibana import`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "http://127.0.0.1:5601"
    space: str | None = Field(default=None, description="Kibana space; none: the default.")
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`streams.kibana.import_objects`."""
        kwargs: dict[str, Any] = {"space": self.space, "headers": {}, "auth": None}
        if self.api_key is not None:
            kwargs["headers"]["Authorization"] = f"ApiKey {self.api_key.get_secret_value()}"
        elif self.username is not None and self.password is not None:
            kwargs["auth"] = (self.username, self.password.get_secret_value())
        kwargs["verify"] = str(self.ca_certs) if self.ca_certs is not None else self.verify_certs
        return kwargs


class WorkerSettings(BaseModel):
    """The stream worker (`segwatch worker`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field(default="segwatch", description="Consumer group and state topic prefix.")
    model_file: Path | None = Field(
        default=None, description="The model to start with (a published model replaces it)."
    )
    watch_file: bool = Field(default=False, description="Reload model_file when it changes.")
    rules_folder: str | None = Field(
        default=None,
        description="A folder of detection rules (*.yaml); unset: the rules shipped with "
        "segwatch. A folder that is missing or holds no rules is an error.",
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        description="Raw records the normalize stage takes at once (one message per "
        "initiator host of each batch); an Elasticsearch bulk is up to four such messages, "
        "scored.",
    )
    hot_key_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="An initiator host opening more than this share of the connections the "
        "normalize stage saw lately (a NAT gateway, a proxy, a DNS forwarder) is a hot key: "
        "its connections spread over every partition of the normalized topic by the "
        "address they go to, instead of all going to one. Its sweeps of many hosts are "
        "then seen in part by each partition, and a scanner is often hot itself: 1 "
        "(never) by default; docs/scaling.md says when to lower it.",
    )
    normalize_ahead: int = Field(
        default=50_000,
        ge=0,
        description="Events the score stage may have left to read in the normalized topic "
        "before the normalize stage pauses until it catches up (0: never pause).",
    )
    web_host: str = "127.0.0.1"
    web_port: int | None = Field(default=6066, description="Health endpoint; null: none.")
    roles: tuple[Literal["normalize", "score", "index", "alert"], ...] = Field(
        default=("normalize", "score", "index", "alert"),
        description="The stages this worker runs; split them to scale each on its own.",
    )
    processes: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=1,
        description="Worker processes on this machine (`segwatch worker --processes`): auto "
        "is one per core; more than one runs the stages over supervised child processes "
        "(normalize apart, see docs/scaling.md).",
    )
    store: str = Field(
        default="memory://",
        description="Where detector state tables live: memory:// (rebuilt from the changelog "
        "on start) or rocksdb:// (on disk under data_dir: a restart reads only the "
        "changelog's tail).",
    )
    data_dir: Path = Field(default=Path("var/worker"), description="The worker's local data.")
    snapshot_seconds: float = Field(
        default=5.0, gt=0, description="Detector state snapshot interval (see README)."
    )
    session_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A worker silent this long leaves the consumer group."
    )


class _StrictYaml(YamlConfigSettingsSource):
    """The settings file, read by segwatch's strict loader (no aliases, no duplicate
    keys, bounded nesting)."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        data = yamlsafe.load(file_path.read_text(encoding="utf-8"))
        if data is not None and not isinstance(data, dict):
            raise yaml.YAMLError(f"{file_path}: the settings file is not a mapping of sections")
        return data or {}


class Settings(BaseSettings):
    """segwatch's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="SEGWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    kibana: KibanaSettings = KibanaSettings()
    detectors: DetectorSettings = DetectorSettings()
    incidents: IncidentSettings = IncidentSettings()
    webhooks: tuple[WebhookTarget, ...] = ()
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(_StrictYaml(settings_cls, yaml_file=config_file))
        return (*sources, file_secret_settings)


class SettingsError(Exception):
    """The configuration is invalid; the message names the file (if any) and the field."""


def load_settings(config_file: Path | None = None) -> Settings:
    """Load the settings, reading ``config_file`` (or ``$SEGWATCH_CONFIG``) if given.

    :param config_file: a YAML file whose keys mirror :class:`Settings`.
    :raises SettingsError: the file is missing or unreadable, or a value is invalid.
    """
    env_file = os.environ.get("SEGWATCH_CONFIG")
    path = config_file or (Path(env_file) if env_file else None)
    where = f"{path}: " if path else "environment: "
    if path is not None and not path.is_file():
        raise SettingsError(f"configuration file {path} does not exist")
    token = _config_file.set(path)
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(where + problems) from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{where}not valid YAML: {exc}") from None
    finally:
        _config_file.reset(token)
