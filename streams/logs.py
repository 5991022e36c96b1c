"""ECS JSON logs for the worker, one JSON object per line on stderr, through Elastic's
``ecs-logging`` (the ECS logging spec: ``@timestamp``, ``log.level``, ``message``,
``ecs.version``, ``log.logger``, ``log.origin``, ``process.*``, ``error.*`` for
exceptions), with ``service.name: segwatch``."""

from __future__ import annotations

from typing import Any

import ecs_logging

__all__ = ["EcsJsonFormatter", "logging_config"]


class EcsJsonFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter, naming the service."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("extra", {"service": {"name": "segwatch"}})
        super().__init__(**kwargs)


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
