"""segwatch's domain core: flow events, parsers, the segmentation model, verdicts, scoring.

Everything in this package is a pure function of its inputs: no Kafka, no HTTP,
no Elasticsearch, no environment. The stream app in ``streams/`` is the shell.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segwatch")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
