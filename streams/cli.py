"""The ``segwatch`` console script: the core's commands plus those that talk to services."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from detector import analyze_cli  # noqa: F401  (registers analyze, simulate, evaluate, train)
from detector.assets import MODELS
from detector.cli import app
from detector.definitions import FAMILIES
from detector.model_cli import model_app
from streams.errors import mask_url, mask_urls
from streams.settings import Settings, SettingsError, load_settings

__all__ = ["main"]

_out = Console()
_err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML configuration file (default: $SEGWATCH_CONFIG). Environment wins over it.",
        exists=False,
        dir_okay=False,
    ),
]


def _safe(text: str) -> str:
    """Text for the console: URLs' credentials masked, rich markup escaped."""
    return escape(mask_urls(text))


def _masked(data: Any) -> Any:
    """A settings dump with every URL in it masked."""
    if isinstance(data, dict):
        return {k: _masked(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_masked(v) for v in data]
    return mask_urls(data) if isinstance(data, str) else data


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SettingsError as exc:
        _err.print(f"[red]configuration error:[/red] {_safe(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


topics_app = typer.Typer(help="Create and list the pipeline's Kafka topics.", no_args_is_help=True)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
es_app = typer.Typer(help="Elasticsearch: index templates.", no_args_is_help=True)
kibana_app = typer.Typer(
    help="Kibana: import the dashboards, check what their panels query.", no_args_is_help=True
)
webhooks_app = typer.Typer(help="On-call webhooks: a receiver to try them with.",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(es_app, name="es")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(kibana_app, name="kibana")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")


@topics_app.command("create")
def topics_create(config: ConfigOption = None) -> None:
    """Create the pipeline's topics that are missing (idempotent) and print them all.

    Partitions and replication come from `topics.partitions` and
    `topics.replication_factor` (SEGWATCH_TOPICS__PARTITIONS, ...).
    `segmentation.model` is compacted and has one partition.
    """
    from confluent_kafka import KafkaException

    from streams.topics import ensure_topics, pipeline_topics

    settings = _settings(config)
    try:
        results = ensure_topics(settings.kafka, pipeline_topics(settings.topics))
    except KafkaException as exc:
        _err.print(
            f"[red]Kafka at {settings.kafka.bootstrap_servers} refused:[/red] {_safe(str(exc))}",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"topics on {settings.kafka.bootstrap_servers}:")
    for r in results:
        cfg = " ".join(f"{k}={v}" for k, v in r.spec.config.items())
        note = f" ({r.note})" if r.note else ""
        typer.echo(
            f"  {r.spec.name:<22} {r.outcome:<8} partitions={r.partitions:<3} "
            f"{cfg:<22} {r.spec.purpose}{note}"
        )


@topics_app.command("list")
def topics_list(config: ConfigOption = None) -> None:
    """List the cluster's topics and their partition counts."""
    from streams.topics import list_topics

    settings = _settings(config)
    for name, partitions in list_topics(settings.kafka).items():
        typer.echo(f"{name}\t{partitions}")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective configuration (file + environment + defaults), secrets masked."""
    settings = _settings(config)
    # SecretStr dumps as '**********'; URLs can carry credentials too
    data: dict[str, Any] = _masked(json.loads(settings.model_dump_json()))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@model_app.command("publish")
def model_publish(
    model: Annotated[Path, typer.Argument(help="Model file to validate and publish.")],
    config: ConfigOption = None,
) -> None:
    """Validate a model and publish it to the compacted model topic: every worker
    switches to it before its next event. An invalid model is refused here."""
    from detector.model import ModelError
    from streams.model_sync import publish_model

    settings = _settings(config)
    try:
        version = publish_model(settings.kafka, settings.topics.model, model)
    except ModelError as exc:
        for problem in exc.problems:
            _err.print(_safe(str(problem)), soft_wrap=True)
        raise typer.Exit(2) from None
    except RuntimeError as exc:
        _err.print(f"[red]{_safe(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    typer.echo(f"published {model} version {version} to {settings.topics.model}")


@app.command("worker")
def worker_cmd(
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Model file (or worker.model_file).")
    ] = None,
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug.")] = "warn",
    processes: Annotated[
        str | None,
        typer.Option(
            "--processes",
            "-p",
            help="Worker processes to run (or worker.processes, 1 by default): a number, or "
            "auto for one per core. More than one: the stages run over supervised child "
            "processes (normalize apart), restarted if they die; /healthz, /readyz and "
            "/metrics on worker.web_port cover them all.",
        ),
    ] = None,
) -> None:
    """Run the stream app: normalize, place and score, index, alert (the stages in
    worker.roles; all by default). Detector state is kept in a changelogged table, so a
    restart resumes it. Ctrl-C (or SIGTERM) stops it cleanly. Logs are ECS JSON lines on
    stderr."""
    settings = _settings(config)
    if model is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"model_file": model})}
        )
    from streams.group import process_count

    try:
        count = process_count(processes if processes is not None else settings.worker.processes)
    except ValueError as exc:
        _err.print(f"[red]{_safe(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    level = {"crit": "critical", "warn": "warning"}.get(loglevel, loglevel)
    if count > 1:
        raise typer.Exit(_worker_group(settings, count, model, config, loglevel, level))
    _worker(settings, level)


def _worker_group(settings: Settings, count: int, model: Path | None, config: Path | None,
                  loglevel: str, level: str) -> int:  # fmt: skip
    """``count`` supervised worker processes (streams.group); the exit status."""
    import logging.config

    from streams.group import WorkerGroup
    from streams.logs import logging_config

    logging.config.dictConfig(logging_config(level))
    command = [sys.executable, "-m", "streams.cli", "worker", "--processes", "1",
               "--loglevel", loglevel]  # fmt: skip
    if model is not None:
        command += ["--model", str(model)]
    if config is not None:
        command += ["--config", str(config)]
    worker = settings.worker
    web = (worker.web_host, worker.web_port) if worker.web_port is not None else None
    group = WorkerGroup(command, count, worker.roles, web, worker.data_dir)
    try:
        return group.run()
    except OSError as exc:  # the group's web port is taken
        _err.print(f"[red]cannot start the worker group:[/red] {_safe(str(exc))}",
                   soft_wrap=True)  # fmt: skip
        return 2


def _worker(settings: Settings, level: str) -> None:
    """One worker process: the stages of ``worker.roles``, until SIGTERM."""
    import faust

    from streams.app import create_app, internal_topics, tune_gc

    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:
        _err.print(f"[red]cannot start the worker:[/red] {_safe(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # a bad model: ModelError lists every problem
        _err.print(f"[red]cannot start the worker:[/red] {_safe(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    import logging.config

    from streams.health import wait_for_kafka
    from streams.logs import logging_config

    logging.config.dictConfig(logging_config(level))  # the wait below logs as the worker will
    worker = settings.worker
    web = (worker.web_host, worker.web_port) if worker.web_port is not None else None
    # faust gives up at once if it cannot bootstrap: wait for the broker (and its topics)
    wait_for_kafka(settings.kafka, settings.retry, web, internal_topics(settings))
    tune_gc()
    faust.Worker(
        app, loglevel=level, logging_config=logging_config(level), quiet=True
    ).execute_from_commandline()


@app.command("demo")
def demo_cmd(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Model to simulate and watch.")
    ] = MODELS / "retail_store.yaml",
    rate: Annotated[float, typer.Option(help="Simulated flows per second at full activity.")] = 2.0,
    cycle: Annotated[float, typer.Option(help="Seconds between shipped batches.")] = 10.0,
    worker_url: Annotated[
        str | None,
        typer.Option(help="Watch this worker (http://host:port) instead of starting one."),
    ] = None,
    processes: Annotated[
        str,
        typer.Option(
            "--processes",
            "-p",
            help="Processes of the worker it starts (a number, or auto: one per core).",
        ),
    ] = "auto",
    config: ConfigOption = None,
) -> None:
    """The whole pipeline live (what `make run` runs): topics, templates, a worker,
    simulated traffic with attacks shipped every cycle, throughput and the latest
    alerts on screen. Ctrl-C stops everything."""
    from streams.demo import run_demo

    settings = _settings(config)
    try:
        run_demo(settings, model, rate, cycle, worker_url, processes)
    except RuntimeError as exc:
        _err.print(f"[red]{_safe(str(exc))}[/red]")
        raise typer.Exit(1) from None


@es_app.command("setup")
def es_setup(config: ConfigOption = None) -> None:
    """Install the component and index templates (idempotent) and say what was adapted.

    Checks the server is Elasticsearch 8.x or 9.x; uses match_only_text where the
    server has it. Old events are deleted after elasticsearch.retention (30d) by data
    stream lifecycle or ILM: elasticsearch.lifecycle picks (auto: data stream lifecycle
    where the server runs it, else ILM, else none); the output says which is used.
    """
    from elasticsearch import ApiError, Elasticsearch, TransportError

    from streams.elastic import install_templates
    from streams.errors import SegwatchError

    settings = _settings(config)
    client = Elasticsearch(**settings.elasticsearch.client_kwargs())
    try:
        report = install_templates(client, settings.elasticsearch)
    except (ApiError, TransportError, SegwatchError) as exc:
        where = mask_url(settings.elasticsearch.url)
        _err.print(f"[red]Elasticsearch at {where}:[/red] {_safe(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    typer.echo(f"Elasticsearch {report.server_version} at {mask_url(settings.elasticsearch.url)}:")
    for line in report.installed:
        typer.echo(f"  installed {line}")
    for line in report.adaptations:
        typer.echo(f"  adapted: {line}")


SavedObjectFiles = Annotated[
    list[Path] | None,
    typer.Argument(help="Saved-object NDJSON files (default: streams/assets/kibana/*.ndjson).",
                   dir_okay=False, exists=True),
]  # fmt: skip


def _saved_objects(files: list[Path] | None) -> list[Path]:
    from streams.kibana import SAVED_OBJECTS

    return files or sorted(SAVED_OBJECTS.glob("*.ndjson"))


@kibana_app.command("import")
def kibana_import(
    files: SavedObjectFiles = None,
    url: Annotated[str | None, typer.Option(help="Kibana URL (default: kibana.url).")] = None,
    space: Annotated[str | None, typer.Option(help="Kibana space (default: kibana.space).")] = None,
    username: Annotated[
        str | None,
        typer.Option(
            help="Basic auth user; the password from SEGWATCH_KIBANA__PASSWORD, "
            "or asked for on a terminal."
        ),
    ] = None,
    ca_certs: Annotated[
        Path | None, typer.Option(help="CA bundle for Kibana's TLS certificate.", exists=True)
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify Kibana's TLS certificate.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Load the data views, visualizations and dashboards into Kibana through its
    saved-objects API (overwriting earlier imports of the same objects).

    Credentials: kibana.api_key (SEGWATCH_KIBANA__API_KEY), or a user (--username or
    kibana.username) with kibana.password (SEGWATCH_KIBANA__PASSWORD); never on the
    command line. Options override the configuration.
    """
    import sys

    from pydantic import SecretStr

    from streams.kibana import KibanaError, import_objects

    settings = _settings(config)
    update: dict[str, Any] = {
        "url": url,
        "space": space,
        "username": username,
        "ca_certs": ca_certs,
        "verify_certs": False if insecure else None,
    }
    kibana = settings.kibana.model_copy(update={k: v for k, v in update.items() if v is not None})
    if kibana.username and kibana.password is None and kibana.api_key is None:
        if not sys.stdin.isatty():
            user = _safe(kibana.username)
            _err.print(f"[red]no password for Kibana user {user}:[/red] set "
                       "SEGWATCH_KIBANA__PASSWORD")  # fmt: skip
            raise typer.Exit(2)
        secret = typer.prompt(f"Kibana password for {kibana.username}", hide_input=True)
        kibana = kibana.model_copy(update={"password": SecretStr(secret)})
    kwargs = kibana.client_kwargs()
    try:
        done = import_objects(kibana.url, _saved_objects(files), **kwargs)
    except KibanaError as exc:
        _err.print(f"[red]{_safe(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    url = mask_url(kibana.url)
    where = f"{url} (space {kibana.space})" if kibana.space else url
    typer.echo(f"imported into {where}:")
    for line in done:
        typer.echo(f"  {line}")


@kibana_app.command("check")
def kibana_check(
    files: SavedObjectFiles = None,
    events: Annotated[
        str | None, typer.Option(help="Read the events panels from this index or stream.")
    ] = None,
    alerts: Annotated[
        str | None, typer.Option(help="Read the alerts panels from this index.")
    ] = None,
    incidents: Annotated[
        str | None, typer.Option(help="Read the incidents panels from this index.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check every panel: its fields are mapped by the index templates (aggregatable where
    aggregated), and its filters and aggregations run on Elasticsearch. Prints the
    documents and buckets each panel finds; exits 1 if a panel is broken, not if empty."""
    from elasticsearch import ApiError, Elasticsearch, TransportError
    from rich.table import Table

    from streams.kibana import (
        KibanaError,
        field_problems,
        load_objects,
        mapped_fields,
        run_panel,
    )
    from streams.kibana import panels as find_panels

    settings = _settings(config)
    try:
        found = find_panels(load_objects(_saved_objects(files)))
    except KibanaError as exc:
        _err.print(f"[red]{_safe(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    mapped = mapped_fields()
    elastic = settings.elasticsearch
    indices = {"segwatch-events": events or elastic.events_pattern(),
               "segwatch-alerts": alerts or elastic.alerts_index,
               "segwatch-incidents": incidents or elastic.incidents_index}  # fmt: skip
    es = Elasticsearch(**settings.elasticsearch.client_kwargs())
    table = Table("panel", "index", "documents", "buckets", "problem")
    broken = 0
    for panel in found:
        index = indices.get(panel.data_view, panel.pattern)
        problems = field_problems(panel, mapped)
        hits, buckets = 0, 0
        if not problems:
            try:
                hits, buckets = run_panel(es, panel, index)
            except (ApiError, TransportError) as exc:
                problems.append(f"{panel.source}: {panel.title}: {exc}")
        broken += bool(problems)
        table.add_row(panel.title, index, f"{hits:,}", f"{buckets:,}", "; ".join(problems))
    _out.print(table)
    if broken:
        _err.print(f"[red]{broken} of {len(found)} panels are broken[/red]")
        raise typer.Exit(1)


@webhooks_app.command("receive")
def webhooks_receive(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8088,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the HMAC secret (or $SEGWATCH_RECEIVER_SECRET).",
            dir_okay=False,
            exists=True,
        ),
    ] = None,
) -> None:
    """Receive signed-JSON incident pages (a `json` webhook target) and print one JSON line
    each: to try a webhook set-up, or as the compose file's receiver. With a secret,
    requests whose signature does not verify, or older than 5 minutes, get 401."""
    import os
    from http.server import ThreadingHTTPServer

    from streams.webhooks import receiver

    secret = os.environ.get("SEGWATCH_RECEIVER_SECRET")
    if secret_file is not None:
        secret = secret_file.read_text(encoding="utf-8").strip()
    server = ThreadingHTTPServer(
        (host, port), receiver(secret, lambda line: print(line, flush=True))
    )
    checked = "signatures checked" if secret else "signatures NOT checked (no secret)"
    _err.print(f"receiving alerts on http://{host}:{port}/ ({checked}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _declares_layout(family: str, raw: bytes) -> bool:
    """Whether a file's first record is a header the lines after it depend on (a VPC
    header line, Zeek's ``#separator``/``#fields``)."""
    from detector.parsers.vpcflow import is_header

    if family == "zeek":
        return raw.startswith(b"#")
    return family == "vpcflow" and is_header(raw)


@app.command("ship")
def ship_cmd(
    files: Annotated[
        list[str], typer.Argument(help="Flow-log files (gzip read transparently); - for stdin.")
    ],
    family: Annotated[
        str, typer.Option("--family", "-f", help=f"{', '.join(FAMILIES)}: picks the topic.")
    ],
    topic: Annotated[
        str | None, typer.Option(help="Topic to produce to (default: flows.raw.<family>).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds a record may wait for the broker before it fails.")
    ] = 60.0,
    config: ConfigOption = None,
) -> None:
    """Produce raw flow-log records to Kafka, one record per message.

    Batched and lz4-compressed; every delivery is confirmed. Exits 1 if any
    record was not acknowledged, 2 on bad usage.
    """
    import socket

    from detector.cli import progress_bar
    from detector.files import iter_records
    from streams.ship import ship

    settings = _settings(config)
    if topic is None and family not in settings.topics.families:
        _err.print(f"--family {family!r} is not one of {', '.join(settings.topics.families)}")
        raise typer.Exit(2)
    target = topic or settings.topics.raw(family)

    host = socket.gethostname()

    def records() -> Any:
        for path in files:
            key = None  # no key: the records spread over the partitions
            try:
                for number, raw in iter_records(path):
                    if number == 1 and _declares_layout(family, raw):
                        # the header declares the layout of this file's lines: they go
                        # keyed by the file, in order, to one partition, header first
                        key = f"{host}:{Path(path).resolve() if path != '-' else '-'}".encode()
                    yield key, raw
            except OSError as exc:
                _err.print(f"{_safe(path)}: cannot read: {exc.strerror or exc}")
                raise typer.Exit(2) from None

    with progress_bar(files, "shipping") as advance:
        result = ship(settings.kafka, target, records(), advance, int(timeout * 1000))
    typer.echo(
        f"segwatch: {result.delivered:,} of {result.sent:,} records delivered to {target} on "
        f"{settings.kafka.bootstrap_servers}; {result.failed:,} failed",
        err=True,
    )
    for error in result.errors:
        _err.print(f"  [red]failed:[/red] {_safe(error)}", soft_wrap=True)
    if result.failed:
        raise typer.Exit(1)


@app.command("status")
def status(config: ConfigOption = None) -> None:
    """Check that Kafka and Elasticsearch answer, and list the pipeline's topics.

    Exits 1 if either service does not answer.
    """
    from streams.health import check_elasticsearch, check_kafka

    settings = _settings(config)
    ok = True
    for name, (healthy, detail) in (
        ("kafka", check_kafka(settings.kafka, topics=settings.topics)),
        ("elasticsearch", check_elasticsearch(settings.elasticsearch)),
    ):
        ok &= healthy
        mark = "[green]up[/green]" if healthy else "[red]DOWN[/red]"
        _out.print(f"{name:<14} {mark}  {_safe(detail)}", soft_wrap=True)
    if not ok:
        raise typer.Exit(1)


def explain(exc: BaseException) -> str:
    """One line for an error no command handled: what failed, credentials masked —
    never a traceback or local variables (``--debug`` prints the traceback)."""
    import httpx
    from confluent_kafka import KafkaException
    from elasticsearch import ApiError, TransportError

    from streams.errors import SegwatchError, translate

    for cls, name in ((KafkaException, "Kafka"), ((ApiError, TransportError), "Elasticsearch"),
                      (httpx.HTTPError, "HTTP")):  # fmt: skip
        if isinstance(exc, cls):
            exc = translate(exc, name)
            break
    if isinstance(exc, SegwatchError):
        return mask_urls(str(exc))
    text = mask_urls(str(exc))[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``segwatch`` console script. ``--debug`` (anywhere, or
    ``SEGWATCH_DEBUG=1``) prints the traceback of an unexpected error, without locals."""
    import os
    import sys
    import traceback

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SEGWATCH_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="segwatch")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _err.print("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)  # plain: no local variables
        hint = "" if debug else " (run again with --debug for the traceback)"
        _err.print(f"[red]error:[/red] {_safe(explain(exc))}{_safe(hint)}", soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
