"""The core's command-line commands: those that work on files, with no service running.

The console script ``segwatch`` is :func:`streams.cli.main`, which adds the
commands that talk to Kafka and Elasticsearch to the :data:`app` defined here.
"""

from __future__ import annotations

import platform

import typer

from detector import __version__

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
