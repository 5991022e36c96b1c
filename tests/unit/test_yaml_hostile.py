"""Every YAML segwatch reads — models, the worker's model topic, detection rules,
imported policies, the settings file — refuses aliases (a "billion laughs" bomb is
an error at its line, at once), duplicate keys, and nesting past a bound."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from detector.detect.rules import load_rules
from detector.model import ModelError, load_model, model_from_text
from detector.model.formats import ImportProblem
from detector.model.formats._io import read_documents
from streams.model_sync import ModelWatcher
from streams.settings import SettingsError, load_settings

BOMB = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=False)
    ]
)
DEEP = "zones: " + "[" * 200 + "]" * 200
DUPLICATE = "zones:\n  - name: a\n    cidrs: [10.0.0.0/8]\n    cidrs: [0.0.0.0/0]\n"


@pytest.mark.parametrize("text, problem", [
    (BOMB, "aliases are not allowed (*a)"),
    (DEEP, "nested more than 64 levels"),
    (DUPLICATE, "duplicate key 'cidrs'"),
])  # fmt: skip
def test_a_model_refuses_it_at_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(ModelError) as raised:
        load_model(path)
    assert time.monotonic() - started < 5  # refused, not expanded
    assert problem in str(raised.value) and f"{path}:" in str(raised.value)


def test_the_worker_refuses_a_bomb_from_the_model_topic() -> None:
    watcher = ModelWatcher(None, "model")
    watcher._offer(BOMB, "model@7")
    assert watcher.latest is None
    (refused,) = watcher.refused
    assert "model@7" in refused and "aliases are not allowed" in refused


def test_rules_imports_and_settings_refuse_it(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bomb.yaml").write_text(BOMB)
    with pytest.raises(ModelError, match="aliases are not allowed"):
        load_rules(rules)
    policy = tmp_path / "policy.yaml"
    policy.write_text(BOMB)
    with pytest.raises(ImportProblem, match="aliases are not allowed"):
        list(read_documents([policy]))
    config = tmp_path / "segwatch.yaml"
    config.write_text("kafka: &k {bootstrap_servers: x}\nworker: *k\n")
    with pytest.raises(SettingsError, match="aliases are not allowed"):
        load_settings(config)
    config.write_text("kafka: {bootstrap_servers: a}\nkafka: {bootstrap_servers: b}\n")
    with pytest.raises(SettingsError, match="duplicate key 'kafka'"):
        load_settings(config)


def test_text_models_keep_working() -> None:
    text = (
        Path(__file__).resolve().parents[2] / "detector" / "assets" / "models" / "retail_store.yaml"
    ).read_text()
    assert model_from_text(text, "retail").name == "retail-store"
