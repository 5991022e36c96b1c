"""The HTML report, read as a browser reads it: its sections in on-call's order, the
incidents' steps on a timeline, labelled axes with the gaps on a scale of their own,
and the zone matrix as a grid coloured by the worst verdict."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from detector.analyze import Analysis
from detector.detect import DetectorSettings, Engine
from detector.report import render_report

from .detect.conftest import MONDAY, event, example


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page() -> tuple[str, _Page, Analysis]:
    model = example("retail_store.yaml")
    run = Analysis(model, Engine(model, DetectorSettings(learning_seconds=3 * 3600)))
    n = 0
    for hour in range(24):  # a day of allowed traffic, and both directions of it
        for i in range(50):
            at = MONDAY + hour * 3600 + i * 60
            for e in (event("10.50.20.5", "10.50.30.5", 5432, at, sport=40000 + i),
                      event("10.50.30.5", "10.50.20.5", 40000 + i, at, sport=5432)):  # fmt: skip
                run.process(e, f"b:{n}")
                n += 1
    for i in range(60):  # then a scan of a POS terminal, mostly refused
        run.process(event("10.50.10.1", "10.50.2.1", 1 + i, MONDAY + 80_000 + i,
                          denied=i % 5 != 0), f"s:{i}")  # fmt: skip
    run.finish()
    html = render_report(run.summary, run.alert_documents(), "t", run.incident_documents())
    parsed = _Page()
    parsed.feed(html)
    return html, parsed, run


def test_sections_come_in_the_order_on_call_reads_them() -> None:
    html, _, _ = page()
    order = [html.index(h) for h in ("<h2>Incidents", "<h2>Connections over time",
                                     "<h2>Top alerts", "<h2>Zone matrix")]  # fmt: skip
    assert order == sorted(order)


def test_each_incident_has_its_steps_on_a_timeline() -> None:
    _, parsed, run = page()
    (incident,) = run.incident_documents()
    cards = [a for t, a in parsed.tags if t == "div" and a.get("class") == "card"]
    assert len(cards) == 1
    steps = [
        a for t, a in parsed.tags if t == "svg" and a.get("aria-label") == "steps on a timeline"
    ]
    assert len(steps) == len([incident]) and incident["segwatch"]["incident"]["step_count"] == 1
    assert any("vertical scan of 10.50.2.1" in t for t in parsed.text)


def test_the_timeline_has_labelled_axes_and_the_gaps_on_their_own_scale() -> None:
    _, parsed, run = page()
    assert "connections / hour" in parsed.text and "violations, blocked / hour" in parsed.text
    assert "hour (UTC)" in parsed.text
    ticks = [t for t in parsed.text if t.replace(",", "").isdigit()]
    assert "100" in ticks  # the connections' scale: 100 an hour
    assert run.summary.replies == 1200 and sum(run.summary.verdicts.values()) == 1260
    # the refused probes, 48 of them in one hour, get a scale where they are visible
    assert any(t in ticks for t in ("20", "25", "50"))


def test_the_zone_matrix_is_a_grid_coloured_by_the_worst_verdict() -> None:
    html, _, _ = page()
    grid = html[html.index('<table class="grid">') :]
    assert grid.count("<tr>") == 1 + 2  # the header and two initiators' zones: app, dmz
    assert 'style="background:#d73027"' in grid  # dmz -> pos: a violation among them
    assert 'style="background:#74add1"' in grid  # app -> db: all allowed
