"""The data segwatch ships inside its package (found with :mod:`importlib.resources`,
so they are there in a wheel as in a checkout): the default detection rules
(``rules/``) and the example segmentation models with their tests (``models/``).
The Elasticsearch templates and Kibana saved objects are :mod:`streams.assets`'.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["MODELS", "RULES", "asset_folder"]


def asset_folder(package: str, name: str) -> Path:
    """A folder of a package's data on disk (wheels are installed unpacked)."""
    return Path(str(files(package) / name))


RULES = asset_folder(__name__, "rules")
MODELS = asset_folder(__name__, "models")
