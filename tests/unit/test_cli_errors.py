"""What a user can cause never prints a traceback, local variables or a secret: one
line saying what is wrong (and where), ``--debug`` for the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams import cli
from streams.errors import mask_url, mask_urls

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "detector" / "assets" / "models" / "retail_store.yaml"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def _boom(password: str) -> Any:
    def fail(config: Any = None) -> None:
        hidden = password  # a local a pretty traceback would print
        raise TypeError(f"unexpected shape near {len(hidden)} things")

    return fail


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_line_without_locals(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    monkeypatch.setattr(cli, "load_settings", _boom("hunter2-secret"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["config", "show", *(["--debug"] if debug else [])])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "hunter2-secret" not in err
    assert "error: TypeError: unexpected shape near 14 things" in err
    assert ("Traceback" in err) is debug
    assert ("--debug" in err) is not debug


def test_client_errors_are_translated_and_credentials_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def kafka(config: Any = None) -> None:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker sasl://u:pw@b:9 down"))

    monkeypatch.setattr(cli, "load_settings", kafka)
    with pytest.raises(SystemExit):
        cli.main(["config", "show"])
    err = capsys.readouterr().err
    assert "error: Kafka: _TRANSPORT: broker sasl://u:***@b:9 down" in err
    assert "pw@" not in err and "Traceback" not in err


def test_urls_lose_their_credentials_and_tokens_but_keep_their_place() -> None:
    assert mask_url("http://127.0.0.1:9200") == "http://127.0.0.1:9200"
    assert (
        mask_url("https://elastic:changeme@es.example:9243/")
        == "https://elastic:***@es.example:9243/"
    )
    assert (
        mask_url("https://hooks.slack.com/services/T0/B0/abcdef") == "https://hooks.slack.com/***"
    )
    assert (
        mask_url("https://hooks.example/segwatch?token=abc")
        == "https://hooks.example/segwatch?token=***"
    )
    assert mask_url("https://x.example/h/0123456789abcdefXYZ/in") == "https://x.example/h/***/in"
    assert mask_urls("at http://a:b@h/ and http://c/") == "at http://a:***@h/ and http://c/"


def test_config_show_and_status_mask_every_url_with_a_secret(tmp_path: Path) -> None:
    env = {"SEGWATCH_ELASTICSEARCH__URL": "http://bob:es-pass@127.0.0.1:9",
           "SEGWATCH_KIBANA__URL": "http://kim:kb-pass@127.0.0.1:9",
           "SEGWATCH_WEBHOOKS": '[{"name": "s", "kind": "slack", '
                                '"url": "https://hooks.slack.com/services/T1/B2/slack-token"}]',
           "SEGWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "SEGWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "SEGWATCH_KAFKA__SASL_MECHANISM": "PLAIN", "SEGWATCH_KAFKA__SASL_USERNAME": "u",
           "SEGWATCH_KAFKA__SASL_PASSWORD": "kafka-pass"}  # fmt: skip
    shown = _run("config", "show", **env)
    assert shown.returncode == 0, shown.stderr
    status = _run("status", **env)
    assert status.returncode == 1  # nothing answers there
    everything = shown.stdout + shown.stderr + status.stdout + status.stderr
    for secret in ("es-pass", "kb-pass", "slack-token", "kafka-pass"):
        assert secret not in everything, secret
    assert "bob:***@" in shown.stdout and "https://hooks.slack.com/***" in shown.stdout
    assert "Traceback" not in everything and "DOWN" in status.stdout


def test_evaluate_says_what_shape_of_labels_it_expects(tmp_path: Path) -> None:
    flows = tmp_path / "f.log"
    flows.write_text("")
    for bad in ('{"scenario": "x"}', '[{"scenario": "s", "lines": "1,2"}]', '["a"]', "not json"):
        labels = tmp_path / "l.json"
        labels.write_text(bad + "  SECRET-CONTENT")
        done = _run("evaluate", "-m", str(MODEL), str(flows), "--labels", str(labels))
        assert done.returncode != 0
        assert f"{labels}: " in done.stderr and "expected a JSON array of {scenario" in done.stderr
        assert "Traceback" not in done.stderr and "SECRET-CONTENT" not in done.stderr
