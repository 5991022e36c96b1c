"""The core's command-line commands: those that work on files, with no service running.

The console script ``segwatch`` is :func:`streams.cli.main`, which adds the
commands that talk to Kafka and Elasticsearch to the :data:`app` defined here.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import orjson
import typer
from rich.console import Console

from detector import __version__
from detector.errors import DetectorError

__all__ = ["app"]

app = typer.Typer(
    name="segwatch",
    help=(
        "segwatch: streaming network-segmentation violation detector.\n\n"
        "Flow logs (AWS VPC Flow Logs, Calico, iptables/nftables) are read from Kafka or\n"
        "files, normalized to Elastic Common Schema, checked against your declared\n"
        "segmentation model, scored, and written to Elasticsearch and on-call webhooks.\n\n"
        "Configuration comes from a YAML file (--config or SEGWATCH_CONFIG) and\n"
        "SEGWATCH_* environment variables; `segwatch config show` prints the result."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.command("version")
def version_cmd() -> None:
    """Print segwatch's version and the Python it runs on."""
    typer.echo(f"segwatch {__version__} (Python {platform.python_version()})")


_FAMILY_HELP = "Log family: auto (per record), " + ", ".join(
    ["vpcflow", "calico", "iptables", "hubble"]
)


@app.command("parse")
def parse_cmd(
    files: Annotated[
        list[str], typer.Argument(help="Flow-log files (gzip is read transparently); - for stdin.")
    ],
    family: Annotated[str, typer.Option("--family", "-f", help=_FAMILY_HELP)] = "auto",
    vpc_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="VPC flow-log format, as in AWS: '${version} ${vpc-id} ...' (default: header "
            "lines, then the field count).",
        ),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            "-k",
            help="Report every bad record and exit 0; without it the first bad record stops "
            "the run with exit status 1.",
        ),
    ] = False,
    year: Annotated[
        int | None,
        typer.Option(help="Year of syslog timestamps that have none (default: the current year)."),
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="Zone of syslog timestamps that have none (IANA name).")
    ] = "UTC",
    max_record_bytes: Annotated[int, typer.Option(help="Records larger than this are errors.")] = 64
    * 1024,
    original: Annotated[
        bool, typer.Option("--original/--no-original", help="Keep event.original.")
    ] = True,
) -> None:
    """Normalize flow-log records to ECS: one JSON document per line on stdout.

    Bad records go to stderr as FILE:LINE: reason. A summary line ends the run
    on stderr. Families and fields: see README "Flow-log families".
    """
    from detector.files import iter_records
    from detector.parsers import PARSERS, ParseOptions, make_parser

    if family != "auto" and family not in PARSERS:
        _fail(f"--family {family!r} is not one of auto, {', '.join(PARSERS)}")
    try:
        options = ParseOptions(
            syslog_timezone=timezone, syslog_year=year, vpc_format=vpc_format,
            max_record_bytes=max_record_bytes, keep_original=original,
        )  # fmt: skip
        options.tz  # noqa: B018  (validates the zone name now)
        parser = make_parser(family, options)
    except (ValueError, KeyError) as exc:
        _fail(f"invalid option: {exc}")
    except DetectorError as exc:
        _fail(f"--format: {exc}")
    out = sys.stdout.buffer
    counts = {"records": 0, "events": 0, "errors": 0}
    with _progress(files) as advance:
        for path in files:
            try:
                for number, raw in iter_records(path):
                    counts["records"] += 1
                    for result in parser.parse(raw):
                        if isinstance(result, DetectorError):
                            counts["errors"] += 1
                            typer.echo(f"{path}:{number}: {result}", err=True)
                            if not keep_going:
                                _summary(counts)
                                raise typer.Exit(1)
                        else:
                            counts["events"] += 1
                            out.write(orjson.dumps(result) + b"\n")
                    advance(path, len(raw) + 1)
            except OSError as exc:
                _fail(f"{path}: cannot read: {exc.strerror or exc}")
    out.flush()
    _summary(counts)


def _summary(counts: dict[str, int]) -> None:
    typer.echo(
        f"segwatch parse: {counts['records']} records, {counts['events']} events, "
        f"{counts['errors']} errors",
        err=True,
    )


def _fail(message: str) -> NoReturn:
    typer.echo(f"segwatch: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def _progress(files: list[str]) -> Iterator[Callable[[str, int], None]]:
    """A progress bar on stderr for inputs over 4 MB when stderr is a terminal."""
    sizes = {f: os.path.getsize(f) for f in files if f != "-" and os.path.isfile(f)}
    total = sum(sizes.values())
    if not sys.stderr.isatty() or total < 4 * 1024 * 1024:
        yield lambda _path, _n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("parsing", total=total)
        done = 0

        def advance(_path: str, n: int) -> None:
            nonlocal done
            done += n
            if done >= 1 << 20:  # compressed files advance by uncompressed bytes: approximate
                progress.advance(task, done)
                done = 0

        yield advance
