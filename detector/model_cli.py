"""``segwatch analyze`` and ``segwatch model ...``: the segmentation model on files.

Registered on :data:`detector.cli.app`. Nothing here needs a running service.
"""

from __future__ import annotations

import gc
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from pydantic import TypeAdapter
from rich.console import Console
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

if TYPE_CHECKING:
    from detector.detect import Engine
    from detector.model import CompiledModel

__all__ = ["model_app"]

model_app = typer.Typer(
    name="model",
    help=(
        "Work with segmentation models: validate, lint, blast radius, graph, diff, "
        "import from and export to Kubernetes, Calico and AWS security groups."
    ),
    no_args_is_help=True,
)
app.add_typer(model_app)

ModelOpt = Annotated[
    Path, typer.Option("--model", "-m", help="Model file (YAML, apiVersion segwatch/v1).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
_out = Console()


def load_compiled(path: Path) -> CompiledModel:
    """Load and compile a model; a bad model lists every problem and exits with status 2."""
    from detector.model import ModelError, compile_model, load_model

    try:
        compiled = compile_model(load_model(path))
    except ModelError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        fail(f"{path}: {len(exc.problems)} problem(s); the model was not used")
    gc.freeze()  # the model lives for the whole run: keep the collector from rescanning it
    return compiled


RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules", help="Detection rules folder (default: rules/detections if it exists)."
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
    from detector.detect import DetectorSettings, Engine, MLDetector, load_rules
    from detector.detect.ml import ModelArtifactError
    from detector.model import ModelError

    seconds = _duration(learning, "--learning")
    folder = rules if rules is not None else Path("rules/detections")
    loaded = []
    if rules is not None or folder.is_dir():
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
    """Parse flow-log files, place every connection on the model, score it, group the
    alerts into incidents, and report.

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
        data["incidents"] = [_incident_row(d) for d in incidents]
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif summary:
        _print_incidents(incidents)
        _print_alerts(documents)
        _print_summary(stats)
    typer.echo(
        f"segwatch: {counts['records']} records, {counts['events']} events "
        f"({stats.replies} replies), {counts['errors']} errors, {len(incidents)} incidents, "
        f"{len(documents)} alerts; connections: "
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


@model_app.command("validate")
def validate_cmd(
    models: Annotated[list[Path], typer.Argument(help="Model files.")],
) -> None:
    """Check model files: schema, references, overlapping CIDRs. Exit 2 on any problem."""
    for path in models:
        compiled = load_compiled(path)
        doc = compiled.model.document
        typer.echo(
            f"{path}: ok, model {compiled.model.name} version {compiled.version}: "
            f"{len(doc.zones)} zones, {len(doc.flows)} flows"
        )


@model_app.command("lint")
def lint_cmd(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    as_json: JsonOpt = False,
    strict: Annotated[bool, typer.Option(help="Warnings fail the run too.")] = False,
) -> None:
    """The design-review checklist (README "Model lint"); exit 1 on errors."""
    from detector.model.lint import lint

    findings = lint(load_compiled(model))
    if as_json:
        typer.echo(orjson.dumps([f.__dict__ for f in findings], option=orjson.OPT_INDENT_2))
    else:
        for finding in findings:
            typer.echo(f"{model}: {finding}\n    fix: {finding.hint}")
        errors = sum(f.severity == "error" for f in findings)
        warnings = sum(f.severity == "warning" for f in findings)
        typer.echo(f"{model}: {errors} error(s), {warnings} warning(s)", err=True)
    failing = {"error", "warning"} if strict else {"error"}
    if any(f.severity in failing for f in findings):
        raise typer.Exit(1)


@model_app.command("blast-radius")
def blast_radius_cmd(
    model: ModelOpt,
    start: Annotated[
        str, typer.Option("--from", help="A zone name, 'internet', or an IP address.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """If START is compromised, what can the attacker reach: zones, hops and ports."""
    from detector.model.reach import blast_radius

    compiled = load_compiled(model)
    try:
        radius = blast_radius(compiled, start)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if as_json:
        typer.echo(orjson.dumps(radius.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    origin = f"{radius.address} (zone {radius.start})" if radius.address else radius.start
    table = Table(title=f"Reachable from {origin}: {len(radius.reached)} zone(s)")
    for column in ("zone", "sensitivity", "hops", "path"):
        table.add_column(column)
    for reached in radius.reached:
        path = "  ".join(f"{h.source} -({h.service} {h.rule_id})-> {h.destination}"
                         for h in reached.hops)  # fmt: skip
        table.add_row(reached.zone, reached.sensitivity, str(len(reached.hops)), escape(path))
    _out.print(table)


@model_app.command("diff")
def diff_cmd(
    old: Annotated[Path, typer.Argument(help="The model in force.")],
    new: Annotated[Path, typer.Argument(help="The proposed model.")],
    events: Annotated[
        list[str] | None,
        typer.Option("--events", help="Flow-log files to replay under both models (repeatable)."),
    ] = None,
    family: FamilyOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """What a model change allows and denies, and which observed flows change verdict.

    Exit status 0 when nothing changes, 1 when something does (like diff(1)).
    """
    from detector.model.diff import diff_models, diff_on_events

    before, after = load_compiled(old), load_compiled(new)
    result = diff_models(before, after)
    replay = None
    if events:
        counts = {"records": 0, "events": 0, "errors": 0}
        parser = build_parser(family)
        replay = diff_on_events(
            before, after, (event for _, event in parse_files(events, parser, True, counts))
        )
    if as_json:
        data: dict[str, Any] = result.to_dict()
        if replay is not None:
            data["observed"] = replay.to_dict()
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        for label, names in (("zone added", result.zones_added),
                             ("zone removed", result.zones_removed),
                             ("zone members changed", result.zones_changed)):  # fmt: skip
            for name in names:
                typer.echo(f"{label}: {name}")
        for sign, rows in (("+ allow", result.allowed), ("- deny ", result.denied)):
            for src, dst, services in rows:
                typer.echo(f"{sign} {src} -> {dst} {services}")
        if replay is not None:
            typer.echo(f"observed: {sum(replay.changes.values())} of {replay.events} flows change")
            for (src, dst, svc, was, now), n in replay.changes.most_common():
                typer.echo(f"  {n:>7}  {src} -> {dst} {svc}: {was} -> {now}")
    changed = not result.empty or (replay is not None and bool(replay.changes))
    raise typer.Exit(1 if changed else 0)


def write_text(path: Path, text: str) -> None:
    """Write a command's output file, or stdout for ``-``."""
    if str(path) == "-":
        sys.stdout.write(text)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot write: {exc.strerror or exc}")


@model_app.command("import")
def import_cmd(
    files: Annotated[list[str], typer.Argument(help="Policy files (YAML or JSON).")],
    source: Annotated[
        str, typer.Option("--from", help="k8s (NetworkPolicy), calico (v3 policies) or aws-sg.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Model file to write; - for stdout.")
    ],
    name: Annotated[str, typer.Option(help="metadata.name of the model.")] = "",
) -> None:
    """Derive a native model from the policies you already have (README "Import and export")."""
    from detector.model.formats import IMPORTERS, ImportProblem

    if source not in IMPORTERS:
        fail(f"--from {source!r} is not one of {', '.join(IMPORTERS)}")
    try:
        model, warnings = IMPORTERS[source](files, name or f"imported-{source}")
    except ImportProblem as exc:
        fail(str(exc))
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    write_text(output, model.to_yaml())
    doc = model.document
    typer.echo(f"segwatch: {len(doc.zones)} zones, {len(doc.flows)} flows -> {output}", err=True)


@model_app.command("export")
def export_cmd(
    model: ModelOpt,
    target: Annotated[str, typer.Option("--to", help="k8s, calico or aws-sg.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
) -> None:
    """Write the model as Kubernetes NetworkPolicies, Calico policies or AWS security groups."""
    from detector.model.formats import EXPORTERS
    from detector.model.load import dump_yaml_all

    if target not in EXPORTERS:
        fail(f"--to {target!r} is not one of {', '.join(EXPORTERS)}")
    files, warnings = EXPORTERS[target](load_compiled(model))
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    output.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = (
            orjson.dumps(content, option=orjson.OPT_INDENT_2).decode() + "\n"
            if name.endswith(".json") else dump_yaml_all(content)
        )  # fmt: skip
        write_text(output / name, text)
        typer.echo(f"wrote {output / name}", err=True)


@model_app.command("graph")
def graph_cmd(
    model: ModelOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="model.svg, model.png or model.html.")
    ],
    start: Annotated[
        str | None,
        typer.Option("--from", help="Highlight the blast radius of a zone, 'internet' or an IP."),
    ] = None,
) -> None:
    """Draw zones (coloured by sensitivity) and allowed flows; the format follows -o."""
    from detector.model.graph import to_html, to_png, to_svg
    from detector.model.reach import blast_radius

    compiled = load_compiled(model)
    suffix = output.suffix.lower()
    if suffix not in (".svg", ".png", ".html"):
        fail(f"-o {output}: the file must end in .svg, .png or .html")
    radius = None
    if start is not None:
        try:
            radius = blast_radius(compiled, start)
        except KeyError as exc:
            fail(str(exc.args[0]))
    if suffix == ".png":
        try:
            output.write_bytes(to_png(compiled, radius))
        except OSError as exc:
            fail(f"{output}: cannot write: {exc.strerror or exc}")
    else:
        write_text(output, (to_svg if suffix == ".svg" else to_html)(compiled, radius))
    typer.echo(f"wrote {output}", err=True)


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
    family: Annotated[str, typer.Option(help="vpcflow, calico or iptables.")] = "vpcflow",
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
    as_json: JsonOpt = False,
) -> None:
    """Run the analysis over simulated traffic: per scenario the incidents it made (one
    is right), the pages they would send, the time to the first page, the path and
    the reasons; benign alerts and incidents per 100k flows after the learning
    period; and the risk of benign and attack findings. Exit status 1 if a scenario
    went undetected."""
    from detector.analyze import Analysis
    from detector.evaluate import evaluate

    compiled = load_compiled(model)
    labels_path = labels or flows.with_name(flows.name + ".labels.json")
    try:
        truth = orjson.loads(labels_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        fail(f"{labels_path}: cannot read the labels: {exc}")
    run = Analysis(compiled, build_engine(compiled, rules, ml, learning))
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
