"""``segwatch model ...``: the segmentation model on files (``analyze`` and the other
commands on flow-log files are in ``detector.analyze_cli``).

Registered on :data:`detector.cli.app`. Nothing here needs a running service.
"""

from __future__ import annotations

import gc
import ipaddress
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from detector.cli import (
    FamilyOpt,
    app,
    build_parser,
    fail,
    parse_files,
)

if TYPE_CHECKING:
    from detector.model import CompiledModel
    from detector.model.diff import ModelDiff

__all__ = ["model_app"]

model_app = typer.Typer(
    name="model",
    help=(
        "Work with segmentation models: validate, lint, test, blast radius, graph, diff, "
        "recommendations from traffic, quarantine policies, import from and export to "
        "Kubernetes, Calico, Cilium and AWS security groups."
    ),
    no_args_is_help=True,
)
app.add_typer(model_app)

ModelOpt = Annotated[
    Path, typer.Option("--model", "-m", help="Model file (YAML, apiVersion segwatch/v1).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
_out = Console()


def _events(files: list[str], family: str) -> Iterator[dict[str, Any]]:
    """The events of flow-log files (``--events``), bad records reported and skipped."""
    counts = {"records": 0, "events": 0, "errors": 0}
    return (event for _, event in parse_files(files, build_parser(family), True, counts))


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
    events: Annotated[
        list[str] | None,
        typer.Option("--events", help="Flow-log files: compare with the observed reach."),
    ] = None,
    family: FamilyOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """If START is compromised, what can the attacker reach: zones, hops and ports (with
    --events: and what the traffic shows it reached, declared or not)."""
    from detector.model.expect import observed_edges
    from detector.model.reach import blast_radius, path_text, paths

    compiled = load_compiled(model)
    try:
        radius = blast_radius(compiled, start)
    except KeyError as exc:
        fail(str(exc.args[0]))
    observed = None
    if events:
        observed = paths(observed_edges(compiled, _events(events, family))[0], radius.start)
    declared = {r.zone for r in radius.reached}
    if as_json:
        data: dict[str, Any] = radius.to_dict()
        if observed is not None:
            data["observed"] = [
                {"zone": z, "declared": z in declared, "hops": [h.__dict__ for h in hops]}
                for z, hops in sorted(observed.items())
            ]
            data["declared_not_observed"] = sorted(declared - set(observed))
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    origin = f"{radius.address} (zone {radius.start})" if radius.address else radius.start
    table = Table(title=f"Reachable from {origin}: {len(radius.reached)} zone(s)")
    for column in ("zone", "sensitivity", "hops", "path", *(["observed"] if events else [])):
        table.add_column(column)
    for reached in radius.reached:
        seen = [] if observed is None else ["yes" if reached.zone in observed else "no"]
        table.add_row(reached.zone, reached.sensitivity, str(len(reached.hops)),
                      escape(path_text(reached.hops)), *seen)  # fmt: skip
    _out.print(table)
    beyond = {z: h for z, h in (observed or {}).items() if z not in declared}
    if beyond:
        table = Table(title="Reached in the traffic, though the model allows no path")
        for column in ("zone", "observed path"):
            table.add_column(column)
        for zone, hops in sorted(beyond.items()):
            table.add_row(zone, escape(path_text(hops)))
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
        replay = diff_on_events(before, after, _events(events, family))
    if as_json:
        data: dict[str, Any] = result.to_dict()
        if replay is not None:
            data["observed"] = replay.to_dict()
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_diff(result)
        if replay is not None:
            typer.echo(f"observed: {sum(replay.changes.values())} of {replay.events} flows change")
            for (src, dst, svc, was, now), n in replay.changes.most_common():
                typer.echo(f"  {n:>7}  {src} -> {dst} {svc}: {was} -> {now}")
            for title, counts in (
                ("now enforced (monitor -> enforce), these observed flows are blocked",
                 replay.newly_enforced),
                ("still in monitor mode, enforcing would block", replay.would_block),
            ):  # fmt: skip
                if counts:
                    typer.echo(f"{title}: {sum(counts.values())} flows")
                    for (src, dst, svc), n in counts.most_common():
                        typer.echo(f"  {n:>7}  {src} -> {dst} {svc}")
    changed = not result.empty or (replay is not None and bool(replay.changes))
    raise typer.Exit(1 if changed else 0)


def _print_diff(result: ModelDiff) -> None:
    for label, names in (("zone added", result.zones_added),
                         ("zone removed", result.zones_removed),
                         ("zone members changed", result.zones_changed)):  # fmt: skip
        for name in names:
            typer.echo(f"{label}: {name}")
    for name, was, now in result.modes_changed:
        typer.echo(f"zone mode: {name} {was} -> {now}")
    for sign, rows in (("+ allow", result.allowed), ("- deny ", result.denied)):
        for src, dst, services in rows:
            typer.echo(f"{sign} {src} -> {dst} {services}")


@model_app.command("recommend")
def recommend_cmd(
    model: ModelOpt,
    events: Annotated[
        list[str], typer.Option("--events", help="Flow-log files to learn from (repeatable).")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the proposed model here.")
    ] = None,
    family: FamilyOpt = "auto",
    min_connections: Annotated[
        int, typer.Option(help="Forbidden traffic proposed as a rule: at least this many.")
    ] = 10,
    min_hours: Annotated[int, typer.Option(help="... on at least this many distinct hours.")] = 3,
    max_sources: Annotated[int, typer.Option(help="... from at most this many hosts.")] = 5,
    business_share: Annotated[
        float, typer.Option(help="... this share of it inside the source zone's hours.")
    ] = 0.8,
    as_json: JsonOpt = False,
) -> None:
    """Per allow rule, what the traffic used; rules never used, ranges and protocol any
    wider than the use, and forbidden traffic that looks like a service — proposed as a
    model diff and (-o) a new model file. Nothing is applied (docs/model.md)."""
    from detector.model import compile_model
    from detector.model.diff import diff_models
    from detector.model.recommend import recommend

    compiled = load_compiled(model)
    found = recommend(compiled, _events(events, family), min_connections=min_connections,
                      min_hours=min_hours, max_sources=max_sources,
                      business_share=business_share)  # fmt: skip
    change = diff_models(compiled, compile_model(found.model))
    if as_json:
        data = {**found.to_dict(), "diff": change.to_dict()}
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        span = f", {found.to_dict()['from']} to {found.to_dict()['to']}" if found.first else ""
        typer.echo(f"{found.connections} connections{span}")
        for use in found.usage:
            services = ", ".join(f"{s} ({n})" for s, n in use.services.most_common(4))
            last = use.to_dict()["last_used"] or "never"
            typer.echo(f"  {use.rule:<32} {use.connections:>9}  last {last}  {services}")
        if found.unused:
            typer.echo(f"never used (removed from the proposal; the traffic may not cover "
                       f"their use): {', '.join(found.unused)}")  # fmt: skip
        for item in found.narrowed:
            typer.echo(f"narrower: {item['rule']}: allowed {item['allowed']}, used "
                       f"{', '.join(item['used'])} -> {', '.join(item['proposed'])}")  # fmt: skip
        for flow in found.proposed:
            ports = ",".join(map(str, flow.get("ports", []))) or "all"
            share = flow["business_hours_share"]
            typer.echo(f"proposed (forbidden, looks like a service; no owner: review): "
                       f"{flow['from']} -> {flow['to']} {flow['protocol']}/{ports}: "
                       f"{flow['connections']} connections from {len(flow['sources'])} "
                       f"host(s), {share:.0%} in business hours")  # fmt: skip
        _print_diff(change)
    if output is not None:
        write_text(output, found.model.to_yaml())
        typer.echo(f"wrote the proposed model to {output}; review it with segwatch model diff "
                   f"{model} {output} --events ...", err=True)  # fmt: skip
    elif not change.empty:
        typer.echo("-o FILE writes the proposed model", err=True)


@model_app.command("test")
def test_cmd(
    tests: Annotated[Path, typer.Argument(help="Tests file (kind: SegmentationTests).")],
    model: ModelOpt,
    events: Annotated[
        list[str] | None,
        typer.Option("--events", help="Flow-log files: check the observed reach too (repeatable)."),
    ] = None,
    family: FamilyOpt = "auto",
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write the results as JUnit XML here.")
    ] = None,
) -> None:
    """Check segmentation expectations against the model (and, with --events, against
    what the traffic shows): exit 1 when one fails (docs/model.md "Segmentation tests")."""
    from detector.model.expect import TestsProblem, check_all, junit_xml, load_tests, observed_edges

    compiled = load_compiled(model)
    observed, seen = None, None
    try:
        expectations = load_tests(tests)
        if events:
            observed, seen = observed_edges(compiled, _events(events, family))
        outcomes = check_all(compiled, expectations, observed, str(tests))
    except TestsProblem as exc:
        fail(str(exc))
    for outcome in outcomes:
        word = "skip" if outcome.skipped else "PASS" if outcome.passed else "FAIL"
        typer.echo(f"{word}  {outcome.view:<8}  {outcome.expectation.name}")
        for failure in outcome.failures:
            typer.echo(f"        {failure}")
    failed = sum(not o.passed for o in outcomes)
    if seen is not None:
        silent = [z for z in compiled.zones if not seen[z]]
        if silent:
            typer.echo(f"not in the traffic: {', '.join(silent)} (are their boundaries logged?)")
    typer.echo(f"{len(outcomes) - failed} passed, {failed} failed", err=True)
    if junit is not None:
        write_text(junit, junit_xml(outcomes, compiled.model.document.metadata.name))
    raise typer.Exit(1 if failed else 0)


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
        str,
        typer.Option(
            "--from", help="k8s (NetworkPolicy), calico (v3 policies), cilium (L3/L4) or aws-sg."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Model file to write; - for stdout.")
    ],
    name: Annotated[str, typer.Option(help="metadata.name of the model.")] = "",
    apiserver: Annotated[
        list[str] | None,
        typer.Option(
            "--apiserver",
            help="cilium: the API server's addresses (CIDR, repeatable), the zone of rules "
            "naming the kube-apiserver entity.",
        ),
    ] = None,
) -> None:
    """Derive a native model from the policies you already have (docs/model.md)."""
    from detector.model import ModelError
    from detector.model.formats import IMPORTERS, ImportProblem
    from detector.model.formats._derive import catch_all_zones

    if source not in IMPORTERS:
        fail(f"--from {source!r} is not one of {', '.join(IMPORTERS)}")
    options: dict[str, Any] = {}
    if apiserver:
        if source != "cilium":
            fail(f"--apiserver is for --from cilium, not --from {source}")
        for cidr in apiserver:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                fail(f"--apiserver {cidr!r} is not an address or network")
        options["apiserver"] = apiserver
    try:
        model, warnings = IMPORTERS[source](files, name or f"imported-{source}", **options)
    except ImportProblem as exc:
        fail(str(exc))
    except ModelError as exc:  # the policies translate to a model segwatch cannot use
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        fail(f"{', '.join(files)}: the derived model has {len(exc.problems)} problem(s)")
    except RecursionError:
        fail(f"{', '.join(files)}: the policies are nested too deeply to translate")
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a field of a shape
        # no policy has (a list where a selector goes, say): the files are not what --from says
        fail(
            f"{', '.join(files)}: not {source} policies segwatch can read "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        )
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    write_text(output, model.to_yaml())
    doc = model.document
    typer.echo(f"segwatch: {len(doc.zones)} zones, {len(doc.flows)} flows -> {output}", err=True)
    for zone, why in catch_all_zones(model):
        typer.echo(f"  catch-all zone {zone}: {why}", err=True)


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,250}")


@model_app.command("export")
def export_cmd(
    model: ModelOpt,
    target: Annotated[str, typer.Option("--to", help="k8s, calico, cilium or aws-sg.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
    isolate_system: Annotated[
        bool,
        typer.Option(
            "--isolate-system",
            help="k8s, cilium: also isolate zones in kube-system, kube-public and "
            "kube-node-lease (left alone by default: a default deny there breaks the cluster).",
        ),
    ] = False,
) -> None:
    """Write the model as Kubernetes NetworkPolicies, Calico or Cilium policies, or AWS
    security groups."""
    from detector.model.formats import EXPORTERS, ExportProblem

    if target not in EXPORTERS:
        fail(f"--to {target!r} is not one of {', '.join(EXPORTERS)}")
    if isolate_system and target not in ("k8s", "cilium"):
        fail(f"--isolate-system is for --to k8s or cilium, not --to {target}")
    options = {"isolate_system": True} if isolate_system else {}
    try:
        files, warnings = EXPORTERS[target](load_compiled(model), **options)
    except ExportProblem as exc:
        fail(f"{model}: {exc}")
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    _write_files(files, output)


def _write_files(files: dict[str, Any], output: Path) -> None:
    """Write policy files (YAML documents, JSON, or script text) into ``output``."""
    from detector.model.load import dump_yaml_all

    unsafe = [name for name in files if not _SAFE_NAME.fullmatch(name) or name in (".", "..")]
    if unsafe:  # a namespace such as ../x or /etc must not become a path
        fail(
            f"refusing to write {', '.join(repr(n) for n in unsafe[:3])}: an exported file name "
            f"must be one plain name inside {output} (check the namespaces in the model)"
        )
    output.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, str):  # a script
            text = content
        elif name.endswith(".json"):
            text = orjson.dumps(content, option=orjson.OPT_INDENT_2).decode() + "\n"
        else:
            text = dump_yaml_all(content)
        write_text(output / name, text)
        if name.endswith(".sh"):
            (output / name).chmod(0o755)
        typer.echo(f"wrote {output / name}", err=True)


@model_app.command("quarantine")
def quarantine_cmd(
    model: ModelOpt,
    target: Annotated[str, typer.Option("--to", help="k8s, calico, cilium or aws-sg.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
    host: Annotated[
        str | None, typer.Option(help="The host to cut off, by address (calico, cilium, aws-sg).")
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            help="The pod, NAMESPACE/POD, or the pods NAMESPACE:key=value[,key=value] "
            "(k8s, calico, cilium)."
        ),
    ] = None,
    forensics: Annotated[
        str | None,
        typer.Option(help="A zone that may still reach it and that it may reach (forensics)."),
    ] = None,
) -> None:
    """The policies that isolate one compromised workload or host: everything in and out
    is denied except DNS and the --forensics zone. Writes them with apply.sh and undo.sh;
    nothing is applied (docs/model.md "Containment")."""
    from detector.model.quarantine import QuarantineProblem, Workload, quarantine

    compiled = load_compiled(model)
    try:
        parsed = Workload.parse(workload) if workload is not None else None
        result = quarantine(compiled, target, host=host, workload=parsed, forensics=forensics)
    except QuarantineProblem as exc:
        fail(f"{model}: {exc}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    _write_files(result.files, output)
    typer.echo(f"review {output}, then apply: sh {output / 'apply.sh'}; "
               f"undo: sh {output / 'undo.sh'}", err=True)  # fmt: skip


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
