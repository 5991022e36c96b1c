"""The learned detector: training artifact, version checks, finding an unusual window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import pytest
from typer.testing import CliRunner

from detector.detect import DetectorSettings, Engine, MLDetector
from detector.detect.base import Context
from detector.detect.ml import FEATURES, ModelArtifactError, train
from detector.parsers import ParseOptions, make_parser
from detector.simulate import Simulator
from streams.cli import app

from .conftest import MODELS, MONDAY, event, example

DAY = 86_400


def enriched(days: float, attacks: list[str] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    model = example("retail_store.yaml")
    parser = make_parser("vpcflow", ParseOptions(reference_time=MONDAY + 30 * DAY))
    engine = Engine(model, DetectorSettings(learning_seconds=3600))
    out = []
    for record, _ in Simulator(model, "vpcflow", seed=5).run(
        MONDAY, days * DAY, 1.0, list(attacks)
    ):
        for e in parser.parse(record):
            engine.process(e, model.place(e), "x")
            out.append(e)
    return out


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return enriched(1)


@pytest.fixture(scope="module")
def artifact(events: list[dict[str, Any]]) -> dict[str, Any]:
    return train(events)


def test_artifact_records_what_it_was_trained_on(artifact: dict[str, Any]) -> None:
    assert artifact["features"] == list(FEATURES)
    assert artifact["seed"] == 20261125 and artifact["windows"] >= 50
    assert artifact["trained_from"] >= MONDAY and artifact["trained_to"] <= MONDAY + DAY + 60
    assert {"segwatch", "scikit-learn", "numpy", "python"} <= set(artifact["versions"])


def test_training_is_reproducible(artifact: dict[str, Any], events: list[dict[str, Any]]) -> None:
    again = train(events)
    assert again["threshold"] == artifact["threshold"]


def test_a_scan_window_is_unusual(artifact: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(artifact, path)
    detector = MLDetector.load(path)
    model = example("retail_store.yaml")
    found = []
    start = MONDAY + 3 * DAY
    for i in range(300):  # one source, 300 ports on 30 hosts in 5 minutes
        e = event("10.50.10.3", f"10.50.30.{i % 30 + 2}", 1000 + i, start + i, denied=True)
        found += detector.observe(Context.of(e, model.place(e)), False)
    closing = event("10.50.10.3", "10.50.20.2", 8080, start + 700)
    found += detector.observe(Context.of(closing, model.place(closing)), False)
    assert found and found[0].detector == "ml"
    assert "300 flows" in found[0].reason and "300 ports" in found[0].reason
    assert "100% denied" in found[0].reason and "model score" in found[0].reason


def test_a_mismatched_artifact_is_a_clear_error(artifact: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "old.joblib"
    joblib.dump({**artifact, "features": ["flows", "bytes"]}, path)
    with pytest.raises(ModelArtifactError, match="train it again"):
        MLDetector.load(path)
    joblib.dump({**artifact, "versions": {**artifact["versions"], "scikit-learn": "0.24.2"}}, path)
    with pytest.raises(ModelArtifactError, match=r"made with scikit-learn 0\.24\.2"):
        MLDetector.load(path)
    path.write_text("not a pickle")
    with pytest.raises(ModelArtifactError, match="not a segwatch model artifact"):
        MLDetector.load(path)


def test_too_little_data_is_refused() -> None:
    with pytest.raises(ModelArtifactError, match="source windows"):
        train([event("10.50.10.3", "10.50.20.2", 8080, MONDAY)])


def test_train_and_analyze_with_the_artifact(tmp_path: Path) -> None:
    runner = CliRunner(mix_stderr=False)
    model = str(MODELS / "retail_store.yaml")
    log = tmp_path / "flows.log"
    assert (
        runner.invoke(
            app, ["simulate", "-m", model, "-o", str(log), "--duration", "1d", "--rate", "0.5"]
        ).exit_code
        == 0
    )
    events = tmp_path / "events.jsonl"
    alerts, report = tmp_path / "alerts.jsonl", tmp_path / "report.html"
    done = runner.invoke(
        app,
        [
            "analyze",
            "-m",
            model,
            str(log),
            "--events",
            str(events),
            "--no-summary",
            "--year",
            "2026",
        ],
    )
    assert done.exit_code == 0, done.output
    artifact = tmp_path / "m.joblib"
    trained = runner.invoke(app, ["train", "--events", str(events), "-o", str(artifact)])
    assert trained.exit_code == 0, trained.output
    scored = runner.invoke(
        app,
        [
            "analyze",
            "-m",
            model,
            str(log),
            "--ml",
            str(artifact),
            "--alerts",
            str(alerts),
            "--report",
            str(report),
            "--year",
            "2026",
        ],
    )
    assert scored.exit_code == 0, scored.output
    page = report.read_text()
    assert "Zone matrix" in page and "<svg" in page and "Top alerts" in page
    for line in alerts.read_text().splitlines():
        assert json.loads(line)["event"]["kind"] == "alert"
    bad = runner.invoke(app, ["analyze", "-m", model, str(log), "--ml", str(log)])
    assert bad.exit_code == 2 and "not a segwatch model artifact" in bad.stderr
