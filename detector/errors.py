"""The core's errors: one root, specific subclasses, each saying what and where."""

from __future__ import annotations

__all__ = ["DetectorError", "ParseError"]


class DetectorError(Exception):
    """Root of every error the ``detector`` package raises or returns."""


class ParseError(DetectorError):
    """A record that could not be normalized.

    Parsers *return* these (they never raise them), so a bad record becomes a
    dead-letter entry instead of stopping the stream.

    :param family: the log family that was tried (``vpcflow``, ``iptables``, ...).
    :param reason: what is wrong, phrased so a person can act on it.
    :param raw: the record's raw bytes, unchanged.
    :param position: where in the record, if known (``field 7 'dstport'``, ``byte 12``).
    """

    def __init__(self, family: str, reason: str, raw: bytes, position: str | None = None) -> None:
        self.family = family
        self.reason = reason
        self.raw = raw
        self.position = position
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" at {self.position}" if self.position else ""
        return f"{self.family}{where}: {self.reason}"

    def __repr__(self) -> str:
        return f"ParseError({self.family!r}, {self.reason!r}, raw={self.raw[:60]!r})"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the dead-letter topic and ``segwatch parse`` errors."""
        return {
            "family": self.family,
            "reason": self.reason,
            "position": self.position,
            "raw": self.raw.decode("utf-8", "backslashreplace"),
        }
