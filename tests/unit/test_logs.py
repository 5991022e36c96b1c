"""ECS JSON log lines."""

from __future__ import annotations

import json
import logging

from streams.logs import EcsJsonFormatter


def test_a_log_line_is_one_ecs_json_object_with_the_error() -> None:
    try:
        raise ValueError("broken model")
    except ValueError:
        record = logging.getLogger("segwatch.model").makeRecord(
            "segwatch.model", logging.ERROR, __file__, 1, "model refused: %s", ("x",), exc_info=True
        )
        import sys

        record.exc_info = sys.exc_info()
    line = EcsJsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["log.level"] == "error" and doc["log"]["logger"] == "segwatch.model"
    assert doc["message"] == "model refused: x" and doc["@timestamp"].endswith("Z")
    assert doc["service"] == {"name": "segwatch"} and doc["ecs.version"]
    assert doc["error"]["type"] == "ValueError" and "broken model" in doc["error"]["stack_trace"]
