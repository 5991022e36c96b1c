"""The Kibana saved objects (streams/assets/kibana/*.ndjson) and `segwatch kibana import`,
the latter against a real local HTTP server standing in for Kibana's API."""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.elastic import choose_lifecycle
from streams.errors import Fatal
from streams.kibana import (
    SAVED_OBJECTS,
    KibanaError,
    auto_interval,
    field_problems,
    fields_used,
    import_objects,
    load_objects,
    mapped_fields,
    panel_request,
    panels,
)

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(SAVED_OBJECTS.glob("*.ndjson"))


def test_the_files_are_what_the_build_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("kibana_build", ROOT / "deploy/kibana/build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build  # (its dataclasses look their module up)
    spec.loader.exec_module(build)
    assert build.main(["--check"]) == 0
    assert sorted(p.name for p in FILES) == sorted(build.render())


def test_every_line_is_a_saved_object_and_every_reference_resolves() -> None:
    assert {p.name for p in FILES} == {
        "segmentation-overview.ndjson", "anomalies.ndjson", "alerts.ndjson", "incidents.ndjson",
    }  # fmt: skip
    for path in FILES:
        objects = [o for _, o in load_objects([path])]
        by_id = {(o["type"], o["id"]) for o in objects}
        for obj in objects:
            for ref in obj["references"]:
                assert (ref["type"], ref["id"]) in by_id, (path.name, obj["id"], ref)
        (board,) = [o for o in objects if o["type"] == "dashboard"]
        grid = json.loads(board["attributes"]["panelsJSON"])
        names = {r["name"] for r in board["references"]}
        assert grid and all(p["panelRefName"] in names for p in grid)
        assert all(p["gridData"]["x"] + p["gridData"]["w"] <= 48 for p in grid)


def test_the_dashboards_hold_the_panels_users_expect() -> None:
    titles: dict[str, set[str]] = {}
    for path in FILES:
        objects = [o for _, o in load_objects([path])]
        board = next(o for o in objects if o["type"] == "dashboard")
        titles[board["attributes"]["title"]] = {
            o["attributes"]["title"] for o in objects if o["type"] == "visualization"
        }
    assert titles == {
        "segwatch: Segmentation overview": {
            "Flows by verdict over time", "Zone-to-zone matrix", "Top violations",
            "Blocked attempts by source", "Over-restrictive policies", "Unmanaged endpoints"},
        "segwatch: Anomalies": {
            "Risk distribution", "New paths", "Off-hours traffic", "Scans by source",
            "Ports by rarity"},
        "segwatch: Alerts": {"Open alerts by severity", "Alert timeline", "Alerts by rule"},
        "segwatch: Incidents": {
            "Open incidents by severity", "Incidents over time", "Lateral-movement paths",
            "Time to the most sensitive zone", "Incidents by finding"},
    }  # fmt: skip


def test_every_field_a_panel_uses_is_mapped_and_aggregatable_where_aggregated() -> None:
    mapped = mapped_fields()
    found = panels(load_objects(FILES))
    assert len(found) == 19
    for panel in found:
        assert field_problems(panel, mapped) == []


def test_a_text_field_or_an_unknown_one_is_reported(tmp_path: Path) -> None:
    path = SAVED_OBJECTS / "anomalies.ndjson"
    broken = path.read_text().replace('"field\\": \\"destination.port\\"',
                                      '"field\\": \\"segmentation.reasons\\"', 1)  # fmt: skip
    broken = broken.replace('{\\"segmentation.anomalies\\": \\"scan\\"}',
                            '{\\"segmentation.anomaly\\": \\"scan\\"}', 1)  # fmt: skip
    assert broken != path.read_text()
    (tmp_path / "a.ndjson").write_text(broken)
    mapped = mapped_fields()
    problems = [p for panel in panels(load_objects([tmp_path / "a.ndjson"]))
                for p in field_problems(panel, mapped)]  # fmt: skip
    assert any("segmentation.reasons is text, not aggregatable" in p for p in problems)
    assert any("segmentation.anomaly is not in the index templates" in p for p in problems)


def test_a_negated_filter_names_its_field(tmp_path: Path) -> None:
    scans = SAVED_OBJECTS / "anomalies.ndjson"
    (tmp_path / "a.ndjson").write_text(
        scans.read_text().replace('\\"negate\\": false', '\\"negate\\": true')
    )
    (panel,) = [p for p in panels(load_objects([tmp_path / "a.ndjson"]))
                if p.title == "Scans by source"]  # fmt: skip
    assert panel.filters == [
        {"bool": {"must_not": [{"match_phrase": {"segmentation.anomalies": "scan"}}]}},
        {"bool": {"must_not": [{"match_phrase": {"segmentation.reply": "true"}}]}},
    ]  # fmt: skip
    assert ("segmentation.anomalies", "filtered") in fields_used(panel)


def test_a_line_that_is_not_json_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_text('{"id": "a", "type": "index-pattern", "attributes": {}}\n{"id": \n')
    with pytest.raises(KibanaError, match=r"x\.ndjson:2: not JSON"):
        load_objects([path])
    path.write_text('{"id": "a"}\n')
    with pytest.raises(
        KibanaError, match=r"x\.ndjson:1: not a saved object \(no type, attributes\)"
    ):
        load_objects([path])


def test_a_panel_request_nests_buckets_in_order_with_metrics_innermost() -> None:
    scans = next(p for p in panels(load_objects(FILES)) if p.title == "Scans by source")
    body = panel_request(scans)
    assert body["query"] == {"bool": {"filter": [
        {"match_phrase": {"segmentation.anomalies": "scan"}},
        {"bool": {"must_not": [{"match_phrase": {"segmentation.reply": "true"}}]}},
    ]}}  # fmt: skip
    (outer,) = body["aggs"].values()
    assert outer["terms"] == {"field": "source.ip", "size": 20, "order": {"_count": "desc"}}
    assert sorted(a["cardinality"]["field"] for a in outer["aggs"].values()) == [
        "destination.ip", "destination.port"]  # fmt: skip
    rare = next(p for p in panels(load_objects(FILES)) if p.title == "Ports by rarity")
    (outer,) = panel_request(rare)["aggs"].values()
    assert outer["terms"]["order"] == {"_count": "asc"}
    (inner,) = outer["aggs"].values()
    assert inner["terms"]["field"] == "segmentation.destination_zone"
    timeline = next(p for p in panels(load_objects(FILES)) if p.title == "Alert timeline")
    (outer,) = panel_request(timeline, "3h")["aggs"].values()
    assert outer["date_histogram"]["fixed_interval"] == "3h"


def test_auto_interval_keeps_about_a_hundred_buckets() -> None:
    assert auto_interval(0) == "1m"
    assert auto_interval(100 * 60) == "1m"
    assert auto_interval(100 * 60 + 1) == "5m"
    assert auto_interval(24 * 3600) == "30m"
    assert auto_interval(7 * 86400) == "3h"
    assert auto_interval(10**9) == "30d"


@pytest.mark.parametrize(
    ("wanted", "dsl", "ilm", "chosen"),
    [
        ("auto", True, True, "dsl"),
        ("auto", True, False, "dsl"),
        ("auto", False, True, "ilm"),
        ("auto", False, False, "none"),
        ("ilm", True, True, "ilm"),
        ("dsl", True, False, "dsl"),
        ("none", True, True, "none"),
    ],
)
def test_the_lifecycle_is_the_one_asked_for_or_the_best_the_server_runs(
    wanted: str, dsl: bool, ilm: bool, chosen: str
) -> None:
    assert choose_lifecycle(wanted, dsl, ilm)[0] == chosen


def test_a_lifecycle_the_server_does_not_run_is_refused() -> None:
    with pytest.raises(
        Fatal, match=r"elasticsearch\.lifecycle is ilm, but this server does not run ILM"
    ):
        choose_lifecycle("ilm", True, False)


class _Kibana(http.server.BaseHTTPRequestHandler):
    """The saved-objects import endpoint, as far as the client sees it."""

    requests: ClassVar[list[dict[str, Any]]] = []
    answer: ClassVar[list[tuple[int, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Kibana.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, answer = _Kibana.answer[0] if _Kibana.answer else (200, {})
        if not answer:
            lines = [line for line in body.split(b"\n") if line.startswith(b"{")]
            answer = {"success": True, "successCount": len(lines)}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kibana() -> Iterator[str]:
    _Kibana.requests.clear()
    _Kibana.answer.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Kibana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_import_posts_every_file_to_the_saved_objects_api(kibana: str) -> None:
    done = import_objects(kibana, FILES, space="secops", headers={"Authorization": "ApiKey k"})
    assert len(_Kibana.requests) == len(FILES) == 4
    for request, path in zip(_Kibana.requests, FILES, strict=True):
        assert request["path"] == "/s/secops/api/saved_objects/_import?overwrite=true"
        assert request["headers"]["kbn-xsrf"] == "segwatch"
        assert request["headers"]["Authorization"] == "ApiKey k"
        assert request["headers"]["Content-Type"].startswith("multipart/form-data")
        assert f'filename="{path.name}"'.encode() in request["body"]
        assert path.read_bytes() in request["body"]
    objects = {p.name: len(p.read_text().splitlines()) for p in FILES}
    assert done == [f"{name}: {n} objects" for name, n in objects.items()]


def test_import_says_what_kibana_refused(kibana: str, tmp_path: Path) -> None:
    _Kibana.answer.append((200, {"success": False, "successCount": 0, "errors": [
        {"type": "dashboard", "id": "segwatch-alerts", "error": {"type": "missing_references"}}]}))  # fmt: skip
    with pytest.raises(KibanaError, match="dashboard segwatch-alerts: missing_references"):
        import_objects(kibana, FILES[:1])
    _Kibana.answer[0] = (401, {"statusCode": 401, "message": "unauthorized"})
    with pytest.raises(KibanaError, match="Kibana answered 401"):
        import_objects(kibana, FILES[:1])


def test_the_import_command_uses_the_configured_credentials(
    kibana: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGWATCH_KIBANA__USERNAME", "elastic")
    monkeypatch.setenv("SEGWATCH_KIBANA__PASSWORD", "changeme")
    result = CliRunner(mix_stderr=False).invoke(app, ["kibana", "import", "--url", kibana])
    assert result.exit_code == 0, result.stderr
    assert f"imported into {kibana}:" in result.stdout
    assert len(_Kibana.requests) == len(FILES)
    assert _Kibana.requests[0]["path"] == "/api/saved_objects/_import?overwrite=true"
    assert _Kibana.requests[0]["headers"]["Authorization"] == "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
    assert "changeme" not in result.stdout + result.stderr


def test_the_import_command_fails_clearly_when_kibana_is_not_there() -> None:
    result = CliRunner(mix_stderr=False).invoke(
        app, ["kibana", "import", "--url", "http://127.0.0.1:9", "--space", "x"]
    )
    assert result.exit_code == 1
    assert "cannot reach Kibana" in result.stderr


def test_import_options_override_the_configuration(
    kibana: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGWATCH_KIBANA__URL", "http://127.0.0.1:9")  # overridden by --url
    monkeypatch.setenv("SEGWATCH_KIBANA__PASSWORD", "pw")
    result = CliRunner(mix_stderr=False).invoke(
        app, ["kibana", "import", "--url", kibana, "--username", "ops", "--space", "noc",
              str(FILES[0])],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (request,) = _Kibana.requests
    assert request["path"] == "/s/noc/api/saved_objects/_import?overwrite=true"
    assert request["headers"]["Authorization"] == "Basic b3BzOnB3"  # ops:pw


def test_a_user_without_a_password_is_refused_off_a_terminal(kibana: str) -> None:
    result = CliRunner(mix_stderr=False).invoke(
        app, ["kibana", "import", "--url", kibana, "--username", "ops"]
    )
    assert result.exit_code == 2
    assert "no password for Kibana user ops" in result.stderr
    assert _Kibana.requests == []


def test_the_flow_panels_count_connections_not_reply_records() -> None:
    replies = {"bool": {"must_not": [{"match_phrase": {"segmentation.reply": "true"}}]}}
    for path in FILES:
        for panel in panels(load_objects([path])):
            counts_flows = path.name not in ("alerts.ndjson", "incidents.ndjson")
            assert (replies in panel.filters) == counts_flows, (path.name, panel.title)
