"""`segwatch parse`: JSON lines out, FILE:LINE errors, exit codes, gzip and stdin."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from streams.cli import app

V2 = "2 123456789010 eni-1 10.0.0.1 10.0.0.2 40000 443 6 10 1000 1700000000 1700000060 ACCEPT OK"
BAD = V2.replace(" 443 ", " 99999 ")


def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner(mix_stderr=False).invoke(app, ["parse", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_writes_one_ecs_document_per_line(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    log.write_text(f"{V2}\n\n{V2}\n")
    code, out, err = _run(str(log))
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(docs) == 2
    assert docs[0]["destination"]["port"] == 443
    assert "2 records, 2 events, 0 errors" in err


def test_first_bad_record_stops_with_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    log.write_text(f"{V2}\n{BAD}\n{V2}\n")
    code, out, err = _run(str(log))
    assert code == 1
    assert f"{log}:2: vpcflow at field 7 'dstport': dstport is '99999'" in err
    assert len(out.splitlines()) == 1


def test_keep_going_reports_every_bad_record_and_exits_0(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    log.write_text(f"{BAD}\n{V2}\n{BAD}\n")
    code, out, err = _run("--keep-going", str(log))
    assert code == 0 and len(out.splitlines()) == 1
    assert f"{log}:1:" in err and f"{log}:3:" in err
    assert "3 records, 1 events, 2 errors" in err


def test_gzip_input_and_stdin(tmp_path: Path) -> None:
    packed = tmp_path / "flows.log.gz"
    packed.write_bytes(gzip.compress(f"{V2}\n".encode()))
    assert len(_run(str(packed))[1].splitlines()) == 1
    assert len(_run("-", stdin=f"{V2}\n{V2}\n")[1].splitlines()) == 2


def test_format_option_and_pretty_json_documents(tmp_path: Path) -> None:
    log = tmp_path / "custom.log"
    log.write_text("10.0.0.1 10.0.0.2 5432 6 1700000000 1700000060 REJECT\n")
    code, out, _ = _run(
        "--family",
        "vpcflow",
        "--format",
        "${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${end} ${action}",
        str(log),
    )
    assert code == 0 and json.loads(out)["event"]["outcome"] == "failure"
    pretty = tmp_path / "flow.json"
    pretty.write_text(
        json.dumps(
            {
                "flow": {
                    "time": "2026-01-01T00:00:00Z",
                    "verdict": "DROPPED",
                    "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
                }
            },
            indent=2,
        )
    )
    code, out, err = _run(str(pretty))
    assert code == 0, err
    assert json.loads(out)["event"]["dataset"] == "segwatch.hubble"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _run("--family", "netflow", "x")[0] == 2
    code, _, err = _run("--family", "vpcflow", "--format", "${bogus}", "x")
    assert code == 2 and "unknown field" in err
    code, _, err = _run(str(tmp_path / "missing.log"))
    assert code == 2 and "cannot read" in err
