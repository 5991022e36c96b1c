"""The console script's surface."""

from __future__ import annotations

import re

from typer.testing import CliRunner

import detector
import streams
from streams.cli import app


def test_help_lists_the_command_groups() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "status", "topics", "config"):
        assert re.search(rf"\b{command}\b", result.output), command


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert detector.__version__ in result.output


def test_public_surface_is_declared() -> None:
    assert detector.__all__ == ["__version__"]
    assert isinstance(streams.__all__, list)
