"""ECS JSON logs for the worker: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

__all__ = ["EcsJsonFormatter", "logging_config"]


class EcsJsonFormatter(logging.Formatter):
    """``@timestamp``, ``log.level``, ``log.logger``, ``message``, ``service.name``,
    ``process.pid`` and, for exceptions, ``error.type`` / ``error.message`` /
    ``error.stack_trace``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {
            "@timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "log": {"level": record.levelname.lower(), "logger": record.name},
            "message": record.getMessage(),
            "service": {"name": "segwatch"},
            "process": {"pid": record.process},
            "ecs": {"version": "8.11.0"},
        }
        if record.exc_info and record.exc_info[0] is not None:
            doc["error"] = {
                "type": record.exc_info[0].__name__,
                "message": str(record.exc_info[1]),
                "stack_trace": self.formatException(record.exc_info),
            }
        return orjson.dumps(doc).decode()


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for faust's worker: every logger, ECS JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ecs": {"()": EcsJsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "ecs",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
