"""``segwatch analyze``, ``simulate``, ``evaluate`` and ``train``: flow-log files
through the core — placement, detectors, alerts and incidents — with nothing running.

Registered on :data:`detector.cli.app`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from pydantic import TypeAdapter
from rich.markup import escape
from rich.table import Table

from detector.cli import (
    FamilyOpt,
    FilesArg,
    FormatOpt,
    KeepGoingOpt,
    TimezoneOpt,
    YearOpt,
    app,
    build_parser,
    fail,
    parse_files,
)
from detector.model_cli import JsonOpt, ModelOpt, _out, load_compiled, write_text
from detector.simulate import FORMATS

if TYPE_CHECKING:
    from detector.detect import Engine
    from detector.model import CompiledModel

__all__ = ["build_engine"]


RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules", help="Detection rules folder (default: the rules shipped with segwatch)."
    ),
]
MlOpt = Annotated[Path | None, typer.Option("--ml", help="A model artifact from `segwatch train`.")]
LearningOpt = Annotated[
    str,
    typer.Option(help="Learning period of the anomaly detectors (30m, 12h, 1d, ...)."),
]


def build_engine(compiled: CompiledModel, rules: Path | None, ml: Path | None,
                 learning: str) -> Engine:  # fmt: skip
    """The detectors for a run, from command-line options; problems end the run (status 2)."""
    from detector.assets import RULES
    from detector.detect import DetectorSettings, Engine, MLDetector, load_rules
    from detector.detect.ml import ModelArtifactError
    from detector.model import ModelError

    seconds = _duration(learning, "--learning")
    folder = rules if rules is not None else RULES
    try:
        loaded = load_rules(folder)
    except ModelError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        fail(f"{folder}: {len(exc.problems)} problem(s) in the detection rules")
    detector = None
    if ml is not None:
        try:
            detector = MLDetector.load(ml)
        except ModelArtifactError as exc:
            fail(str(exc))
    return Engine(compiled, DetectorSettings(learning_seconds=seconds), loaded, detector)


@app.command("analyze")
def analyze_cmd(
    files: FilesArg,
    model: ModelOpt,
    family: FamilyOpt = "auto",
    events_out: Annotated[
        Path | None,
        typer.Option("--events", help="Write the enriched ECS events here, one JSON per line."),
    ] = None,
    alerts_out: Annotated[
        Path | None,
        typer.Option("--alerts", help="Write the alerts here (final state), one JSON per line."),
    ] = None,
    incidents_out: Annotated[
        Path | None,
        typer.Option(
            "--incidents",
            help="Write the incidents here (latest state, worst first), one JSON per line.",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write a self-contained HTML report here."),
    ] = None,
    summary: Annotated[
        bool,
        typer.Option(
            "--summary/--no-summary",
            help="Print the zone matrix by verdict, top violations and unused allow rules.",
        ),
    ] = True,
    as_json: JsonOpt = False,
    rules: RulesOpt = None,
    ml: MlOpt = None,
    learning: LearningOpt = "1d",
    vpc_format: FormatOpt = None,
    keep_going: KeepGoingOpt = False,
    year: YearOpt = None,
    timezone: TimezoneOpt = "UTC",
) -> None:
    """Place, score and group the connections of flow-log files into incidents; report.

    Every connection is placed on the model, scored and its alerts grouped into
    incidents.

    Each event gains segmentation.source_zone, destination_zone (of its connection
    as initiated), initiator, reply, verdict, rule_id, reason, model_version,
    risk_score and reasons. The summary leads with the incidents (severity,
    attacker, path, time to the most sensitive zone, state), then the alerts and
    the connections by zone pair. Works on a laptop with nothing running.
    """
    from detector.analyze import Analysis
    from detector.report import render_report

    compiled = load_compiled(model)
    parser = build_parser(family, vpc_format, year, timezone)
    run = Analysis(compiled, build_engine(compiled, rules, ml, learning))
    counts = {"records": 0, "events": 0, "errors": 0}
    sink = events_out.open("wb") if events_out else None
    try:
        for event_id, event in parse_files(files, parser, keep_going, counts):
            run.process(event, event_id)
            if sink is not None:
                sink.write(orjson.dumps(event) + b"\n")
    finally:
        if sink is not None:
            sink.close()
    run.finish()
    documents = run.alert_documents()
    incidents = run.incident_documents()
    if alerts_out is not None:
        write_text(alerts_out, "".join(orjson.dumps(d).decode() + "\n" for d in documents))
    if incidents_out is not None:
        write_text(incidents_out, "".join(orjson.dumps(d).decode() + "\n" for d in incidents))
    if report is not None:
        write_text(report, render_report(run.summary, documents, f"segwatch analyze: {model}",
                                         incidents))  # fmt: skip
    stats = run.summary
    if as_json:
        data = stats.to_dict()
        data["alerts"] = len(documents)
        data["detection_rules"] = len(run.engine.rules.rules)
        data["incidents"] = [_incident_row(d) for d in incidents]
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif summary:
        _print_incidents(incidents)
        _print_alerts(documents)
        _print_summary(stats)
    typer.echo(
        f"segwatch: {counts['records']} records, {counts['events']} events "
        f"({stats.replies} replies), {counts['errors']} errors, {len(incidents)} incidents, "
        f"{len(documents)} alerts ({len(run.engine.rules.rules)} detection rules); connections: "
        + ", ".join(f"{v} {n}" for v, n in stats.verdicts.items()),
        err=True,
    )


def _incident_row(doc: dict[str, Any]) -> dict[str, Any]:
    """An incident's headline fields, for the summary."""
    incident = doc["segwatch"]["incident"]
    return {
        "id": incident["id"],
        "severity": incident["severity"],
        "state": incident["state"],
        "title": incident["title"],
        "attacker": incident["attacker"],
        "path": incident["path"],
        "steps": incident["step_count"],
        "first_seen": incident["first_seen"],
        "most_sensitive_zone": incident["most_sensitive_zone"],
        "time_to_most_sensitive_s": incident["time_to_most_sensitive_s"],
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    from detector.detect.base import span

    return span(value)


def _print_incidents(documents: list[dict[str, Any]]) -> None:
    shown = [d for d in documents if d["segwatch"]["incident"]["severity"] != "info"]
    audit = len(documents) - len(shown)
    if not shown:
        typer.echo("No incidents." + (f" ({audit} audit records.)" if audit else ""))
        return
    table = Table(title=f"Incidents ({len(shown)}" + (f", and {audit} audit records" if audit
                                                      else "") + ")")  # fmt: skip
    for column in ("severity", "attacker", "path", "time to most sensitive", "steps", "state",
                   "first seen", "what"):  # fmt: skip
        table.add_column(column)
    for doc in shown[:15]:
        row = _incident_row(doc)
        incident = doc["segwatch"]["incident"]
        first = incident["steps"][0]["description"] if incident["steps"] else ""
        reached = row["most_sensitive_zone"]
        ttr = f"{reached}: {_seconds(row['time_to_most_sensitive_s'])}" if reached else "-"
        table.add_row(row["severity"], row["attacker"], escape(" -> ".join(row["path"])), ttr,
                      str(row["steps"]), row["state"], row["first_seen"][:16].replace("T", " "),
                      escape(first))  # fmt: skip
    _out.print(table)


def _print_alerts(documents: list[dict[str, Any]]) -> None:
    if not documents:
        return
    table = Table(title=f"Top alerts ({len(documents)} in all)")
    for column in ("risk", "severity", "alert", "initiator", "zones", "count", "what"):
        table.add_column(column)
    for doc in documents[:15]:
        alert = doc["segwatch"]["alert"]
        seg = doc["segmentation"]
        zones = f"{seg['source_zone']} -> {seg['destination_zone']}"
        name = escape(doc["rule"]["name"])
        risk = str(doc["event"]["risk_score"])
        source = (doc.get("source") or {}).get("ip", "")
        table.add_row(risk, alert["severity"], name, source, zones, str(alert["count"]),
                      escape(doc["message"]))  # fmt: skip
    _out.print(table)


def _print_summary(stats: Any) -> None:
    from detector.model import VERDICTS

    title = f"Connections by zone pair and verdict (model {stats.model.version}"
    if stats.replies:
        title += f"; {stats.replies:,} reply records are part of these"
    table = Table(title=title + ")")
    table.add_column("source zone")
    table.add_column("destination zone")
    for verdict in VERDICTS:
        table.add_column(verdict.replace("_", " "), justify="right")
    for src, dst, counts in stats.zone_pairs():
        table.add_row(src, dst, *(str(counts[v] or "") for v in VERDICTS))
    _out.print(table)
    top = stats.top_violations()
    if top:
        table = Table(title="Top violations")
        for column in ("count", "source zone", "destination zone", "service", "why"):
            table.add_column(column)
        for (src, dst, service, reason), count in top:
            table.add_row(str(count), src, dst, service, escape(reason))
        _out.print(table)
    unused = stats.unused_rules()
    if unused:
        table = Table(title="Allow rules no flow used (least-privilege candidates)")
        for column in ("flow", "allows", "exposes"):
            table.add_column(column)
        for rule in unused:
            table.add_row(rule.rule_id, rule.description, rule.exposes)
        _out.print(table)
    if stats.would_block:
        table = Table(title="What enforcing the monitor zones would block")
        for column in ("count", "source zone", "destination zone", "service"):
            table.add_column(column)
        for (src, dst, service), count in stats.would_block.most_common(20):
            table.add_row(str(count), src, dst, service)
        _out.print(table)
    silent = stats.zones_never_seen()
    if silent:
        _out.print(f"Zones the logs never show (is their traffic logged?): {', '.join(silent)}")


@app.command("simulate")
def simulate_cmd(
    model: ModelOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Flow-log file to write.")],
    duration: Annotated[str, typer.Option(help="Simulated time: 12h, 7d, ...")] = "7d",
    rate: Annotated[
        float, typer.Option(help="Average flows per second of simulated time, at full activity.")
    ] = 2.0,
    attack: Annotated[
        list[str] | None,
        typer.Option("--attack", help="Scenario to inject (repeatable); see README 'Simulator'."),
    ] = None,
    family: Annotated[str, typer.Option(help=f"{', '.join(FORMATS)}.")] = "vpcflow",
    start: Annotated[
        str, typer.Option(help="Start of simulated time (UTC date or ISO time).")
    ] = "2026-11-02",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same file.")] = 1,
) -> None:
    """Write realistic benign traffic for a model, with injected attacks and their labels.

    Labels (ground truth) go to OUTPUT.labels.json. Simulated time runs as fast
    as the machine allows.
    """
    from detector.simulate import SimulationError, Simulator

    compiled = load_compiled(model)
    seconds = _duration(duration, "--duration")
    try:
        begin = datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    except ValueError:
        fail(f"--start {start!r} is not a date (2026-11-02) or an ISO time")
    try:
        simulator = Simulator(compiled, family, seed)
        stream = simulator.run(begin, seconds, rate, attack or [])
        labels: dict[str, Any] = {}
        lines = 0
        with output.open("w", encoding="utf-8") as out:
            for lines, (record, label) in enumerate(stream, 1):
                out.write(record + "\n")
                if label is not None:
                    labels.setdefault(label.scenario, label).lines.append(lines)
    except SimulationError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{output}: cannot write: {exc.strerror or exc}")
    labels_path = output.with_name(output.name + ".labels.json")
    write_text(labels_path, orjson.dumps([lb.to_dict() for lb in labels.values()],
                                         option=orjson.OPT_INDENT_2).decode() + "\n")  # fmt: skip
    typer.echo(f"segwatch: {lines:,} records -> {output}; labels -> {labels_path}", err=True)


def _duration(text: str, option: str) -> int:
    from detector.detect.rules import Duration

    try:
        return int(TypeAdapter(Duration).validate_python(text))
    except ValueError:
        fail(f"{option} {text!r} is not a duration like 30m, 12h or 7d")


@app.command("evaluate")
def evaluate_cmd(
    model: ModelOpt,
    flows: Annotated[Path, typer.Argument(help="A file written by `segwatch simulate`.")],
    labels: Annotated[
        Path | None, typer.Option(help="Ground truth (default: FLOWS.labels.json).")
    ] = None,
    family: FamilyOpt = "auto",
    rules: RulesOpt = None,
    ml: MlOpt = None,
    learning: LearningOpt = "1d",
    partitions: Annotated[
        int,
        typer.Option(
            min=1,
            help="Score as a worker scores a topic of this many partitions: each event by "
            "the partition its initiator's address is keyed to. The results must not "
            "depend on it.",
        ),
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Hold the analysis of simulated traffic against its ground truth.

    Per scenario: the incidents it made (one is right), the pages they would send,
    the time to the first page, the path and the reasons; benign alerts and
    incidents per 100k flows after the learning period; and the risk of benign and
    attack findings. Exit status 1 if a scenario went undetected."""
    from detector.analyze import Analysis
    from detector.evaluate import evaluate, parse_labels

    compiled = load_compiled(model)
    labels_path = labels or flows.with_name(flows.name + ".labels.json")
    try:
        truth = parse_labels(labels_path.read_bytes(), str(labels_path))
    except OSError as exc:
        fail(f"{labels_path}: cannot read the labels: {exc.strerror or exc}")
    except ValueError as exc:
        fail(str(exc))
    run = Analysis(compiled, build_engine(compiled, rules, ml, learning), partitions=partitions)
    year = datetime.fromtimestamp(min((lb["start"] for lb in truth), default=0) or 0, UTC).year
    parser = build_parser(family, year=year if truth else None)
    counts = {"records": 0, "events": 0, "errors": 0}
    result = evaluate(run, parse_files([str(flows)], parser, True, counts), truth)
    if as_json:
        typer.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_evaluation(result, flows.name)
    if counts["errors"]:
        typer.echo(f"segwatch: {counts['errors']} records could not be parsed", err=True)
    if not all(s.detected for s in result.scenarios):
        raise typer.Exit(1)


def _print_evaluation(result: Any, name: str) -> None:
    table = Table(title=f"Scenarios in {name}")
    for column in ("scenario", "incidents", "pages", "time to page", "severity", "path",
                   "expected reason"):  # fmt: skip
        table.add_column(column)
    for s in result.scenarios:
        reason = f"{'found' if s.expected_reason_found else 'MISSING'}: {s.expect}"
        table.add_row(s.scenario, str(len(s.incidents)) if s.detected else "NOT DETECTED",
                      str(s.pages), _seconds(s.time_to_detect), s.severity or "-",
                      escape(" -> ".join(s.path)), reason)  # fmt: skip
    _out.print(table)
    typer.echo(
        f"benign after learning: {result.benign_flows_after_learning:,} flows, "
        f"{result.benign_alerts} alerts ({result.benign_rate_per_100k:.2f} per 100k), "
        f"{result.benign_incidents} incidents ({result.benign_incidents_per_100k:.2f} per 100k), "
        f"{result.audit_alerts} audit alerts; {result.replies:,} reply records, "
        f"{result.reply_alerts} alerts from replies"
    )
    risk = Table(title="Risk of findings by score (connections not plainly allowed)")
    risk.add_column("")
    for low in range(0, 100, 10):
        risk.add_column(str(low), justify="right")
    for kind, buckets in result.risk.items():
        risk.add_row(kind, *(str(n) for n in buckets))
    _out.print(risk)
    severities = "; ".join(
        f"{kind}: " + (", ".join(f"{n} {sev}" for sev, n in counts.items()) or "none")
        for kind, counts in result.severities.items()
    )
    typer.echo(f"incidents by severity: {severities}")


@app.command("train")
def train_cmd(
    events: Annotated[
        list[Path],
        typer.Option("--events", help="Enriched events (`analyze --events`), repeatable."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifact to write (.joblib).")],
    window: Annotated[str, typer.Option(help="Per-source window length.")] = "10m",
) -> None:
    """Train the learned detector (LOF over per-source windows) on enriched events; use
    the artifact with `analyze --ml`."""
    import joblib

    from detector.detect.ml import ModelArtifactError, train

    def read() -> Any:
        for path in events:
            try:
                with path.open("rb") as handle:
                    for number, line in enumerate(handle, 1):
                        if line.strip():
                            try:
                                yield orjson.loads(line)
                            except orjson.JSONDecodeError:
                                fail(f"{path}:{number}: not a JSON event")
            except OSError as exc:
                fail(f"{path}: cannot read: {exc.strerror or exc}")

    try:
        artifact = train(read(), _duration(window, "--window"))
    except ModelArtifactError as exc:
        fail(str(exc))
    joblib.dump(artifact, output)
    typer.echo(f"segwatch: trained on {artifact['windows']:,} windows -> {output}", err=True)
