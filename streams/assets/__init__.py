"""Data of the worker's sinks, inside the package (:mod:`importlib.resources`): the
Elasticsearch component templates (``elasticsearch/``) and the Kibana saved objects
(``kibana/``, written by ``deploy/kibana/build.py``)."""

from __future__ import annotations

from detector.assets import asset_folder

__all__ = ["SAVED_OBJECTS", "TEMPLATES"]

TEMPLATES = asset_folder(__name__, "elasticsearch")
SAVED_OBJECTS = asset_folder(__name__, "kibana")
