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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console

from detector import __version__
from detector.definitions import FAMILIES
from detector.errors import DetectorError

if TYPE_CHECKING:
    from detector.parsers import Parser

__all__ = ["app", "build_parser", "fail", "parse_files", "progress_bar"]

app = typer.Typer(
    name="segwatch",
    help=(
        "segwatch: streaming network-segmentation violation detector.\n\n"
        "Flow logs (AWS VPC Flow Logs, Calico, iptables/nftables, Hubble)\n"
        "are read from Kafka or files, normalized to Elastic Common Schema,\n"
        "told apart as the requests and replies of connections, checked\n"
        "against your declared segmentation model, scored, grouped into\n"
        "incidents, written to Elasticsearch and paged to on-call webhooks.\n\n"
        "Configuration comes from a YAML file (--config or SEGWATCH_CONFIG) and\n"
        "SEGWATCH_* environment variables; `segwatch config show` prints the result."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    # an unexpected error is one line (streams.cli.main), never a traceback with locals
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


@app.command("version")
def version_cmd() -> None:
    """Print segwatch's version and the Python it runs on."""
    typer.echo(f"segwatch {__version__} (Python {platform.python_version()})")


_FAMILY_HELP = "Log family: auto (per record), " + ", ".join(FAMILIES)


# Options shared by the commands that read flow-log files.
FilesArg = Annotated[
    list[str], typer.Argument(help="Flow-log files (gzip is read transparently); - for stdin.")
]
FamilyOpt = Annotated[str, typer.Option("--family", "-f", help=_FAMILY_HELP)]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="VPC flow-log format, as in AWS: '${version} ${vpc-id} ...' (default: header "
        "lines, then the field count).",
    ),
]
KeepGoingOpt = Annotated[
    bool,
    typer.Option(
        "--keep-going",
        "-k",
        help="Report every bad record and go on; without it the first bad record stops "
        "the run with exit status 1.",
    ),
]
YearOpt = Annotated[
    int | None,
    typer.Option(help="Year of syslog timestamps that have none (default: the current year)."),
]
TimezoneOpt = Annotated[
    str, typer.Option(help="Zone of syslog timestamps that have none (IANA name).")
]


def build_parser(
    family: str,
    vpc_format: str | None = None,
    year: int | None = None,
    timezone: str = "UTC",
    max_record_bytes: int = 64 * 1024,
    original: bool = True,
) -> Parser:
    """A parser from command-line options; bad options end the run with a clear message."""
    from detector.parsers import PARSERS, ParseOptions, make_parser

    if family != "auto" and family not in PARSERS:
        fail(f"--family {family!r} is not one of auto, {', '.join(PARSERS)}")
    try:
        options = ParseOptions(
            syslog_timezone=timezone, syslog_year=year, vpc_format=vpc_format,
            max_record_bytes=max_record_bytes, keep_original=original,
        )  # fmt: skip
        options.tz  # noqa: B018  (validates the zone name now)
        return make_parser(family, options)
    except (ValueError, KeyError) as exc:
        fail(f"invalid option: {exc}")
    except DetectorError as exc:
        fail(f"--format: {exc}")


@app.command("parse")
def parse_cmd(
    files: FilesArg,
    family: FamilyOpt = "auto",
    vpc_format: FormatOpt = None,
    keep_going: KeepGoingOpt = False,
    year: YearOpt = None,
    timezone: TimezoneOpt = "UTC",
    max_record_bytes: Annotated[int, typer.Option(help="Records larger than this are errors.")] = 64
    * 1024,
    original: Annotated[
        bool, typer.Option("--original/--no-original", help="Keep event.original.")
    ] = True,
) -> None:
    """Normalize flow-log records to ECS: one JSON document per line on stdout.

    Bad records go to stderr as FILE:LINE: reason; with --keep-going the run
    goes on and exits 0. A summary line ends the run on stderr. Families and
    fields: see README "Flow-log families".
    """
    parser = build_parser(family, vpc_format, year, timezone, max_record_bytes, original)
    out = sys.stdout.buffer
    counts = {"records": 0, "events": 0, "errors": 0}
    for where, event in parse_files(files, parser, keep_going, counts):
        try:
            out.write(orjson.dumps(event) + b"\n")
        except TypeError as exc:  # a value JSON cannot carry (an integer beyond 64 bits)
            counts["events"] -= 1
            counts["errors"] += 1
            typer.echo(f"{where}: the event cannot be written as JSON: {exc}", err=True)
            if not keep_going:
                _summary(counts)
                raise typer.Exit(1) from None
    out.flush()
    _summary(counts)


def parse_files(
    files: list[str], parser: Parser, keep_going: bool, counts: dict[str, int]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``FILE:LINE`` id, event) for every file, in order; bad records reported as
    ``FILE:LINE: reason``.

    Without ``keep_going`` the first bad record ends the run (exit status 1).
    ``counts`` (records, events, errors) is updated as the files are read.
    """
    from detector.files import iter_records

    with progress_bar(files) as advance:
        for path in files:
            if hasattr(parser, "use_layout"):
                parser.use_layout(None)  # a VPC header line holds for its own file only
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
                            yield f"{Path(path).name}:{number}", result
                    advance(len(raw) + 1)
            except OSError as exc:
                _summary(counts)  # what was written before stays accounted for
                fail(f"{path}: cannot read: {exc.strerror or exc}")


def _summary(counts: dict[str, int]) -> None:
    typer.echo(
        f"segwatch: {counts['records']} records, {counts['events']} events, "
        f"{counts['errors']} errors",
        err=True,
    )


def fail(message: str) -> NoReturn:
    """Print ``segwatch: message`` on stderr and exit with status 2 (bad usage or input)."""
    typer.echo(f"segwatch: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def progress_bar(files: list[str], label: str = "parsing") -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr for inputs over 4 MB when stderr is a terminal;
    yields ``advance(bytes)``."""
    sizes = {f: os.path.getsize(f) for f in files if f != "-" and os.path.isfile(f)}
    total = sum(sizes.values())
    if not sys.stderr.isatty() or total < 4 * 1024 * 1024:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(label, total=total)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if done >= 1 << 20:  # compressed files advance by uncompressed bytes: approximate
                progress.advance(task, done)
                done = 0

        yield advance
