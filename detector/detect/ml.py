"""The learned model: Local Outlier Factor (novelty mode) over per-source window features.

Why not IsolationForest, the first candidate: its splits are drawn inside the
training data's range, so a window far beyond anything seen in training (a
scan: hundreds of ports where there were three) scores no lower than the most
extreme training window, and goes unnoticed. LOF compares a window's density
with its neighbours' by distance (on standardized features), so "far outside"
scores far lower: on simulated traffic, a 300-port scan window scores about
-14 against a threshold near -6. The training set (thousands of distinct
windows) is small enough to keep in the artifact, and scoring happens once per
closed window, not per flow. scikit-learn's estimator is deterministic; the
artifact still records a seed and the library versions.

Each source address's traffic is cut into tumbling windows (``WINDOW`` s);
when a window closes its features are scored, and a window scoring below the
artifact's threshold (the training scores' 0.1% quantile, at most -1.5)
becomes evidence on the event that closed it.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.detect.base import Context, Evidence, event_time
from detector.errors import DetectorError

__all__ = ["FEATURES", "WINDOW", "MLDetector", "ModelArtifactError", "WindowFeatures", "train"]

FEATURES = (
    "flows",
    "log_bytes",
    "distinct_hosts",
    "distinct_ports",
    "distinct_zones",
    "deny_ratio",
    "violation_ratio",
    "new_paths",
    "night_share",
)
WINDOW = 600
SEED = 20261125
FORMAT = 1
# Sources the model learns: those inside the model's zones. Internet and
# unmanaged sources are countless and short-lived (one probe each); the scan
# detector and the verdicts cover them, and they would only blur the picture.
_OUTSIDE = frozenset(("internet", "(none)"))


class ModelArtifactError(DetectorError):
    """A model artifact that cannot be used here, and why."""


@dataclass
class _Acc:
    start: float
    flows: int = 0
    bytes: int = 0
    denied: int = 0
    violations: int = 0
    new_paths: int = 0
    night: int = 0
    hosts: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    zones: set[str] = field(default_factory=set)

    def describe(self) -> str:
        """The window in numbers a person reads."""
        n = max(self.flows, 1)
        return (f"{self.flows:,} flows, {self.bytes / 1e6:,.1f} MB, {len(self.hosts)} hosts, "
                f"{len(self.ports)} ports, {len(self.zones)} zones, {100 * self.denied / n:.0f}% "
                f"denied, {self.new_paths} new paths")  # fmt: skip

    def vector(self) -> list[float]:
        n = max(self.flows, 1)
        log = math.log1p  # counts on a log scale: a scan is orders of magnitude, not a step
        return [log(self.flows), log(self.bytes), log(len(self.hosts)), log(len(self.ports)),
                float(len(self.zones)), self.denied / n, self.violations / n,
                log(self.new_paths), self.night / n]  # fmt: skip


class WindowFeatures:
    """Per-source tumbling windows; ``add`` returns a window it closes."""

    def __init__(self, window: int = WINDOW, max_sources: int = 200_000) -> None:
        self.window = window
        self.max_sources = max_sources
        self.open: dict[str, _Acc] = {}

    def add(
        self,
        src: str,
        when: float,
        dst: str,
        port: int | None,
        zone: str,
        nbytes: int,
        denied: bool,
        violation: bool,
        new_path: bool,
    ) -> _Acc | None:
        acc = self.open.get(src)
        closed = None
        if acc is None or when - acc.start >= self.window:
            if acc is not None:
                closed = acc
            acc = self.open[src] = _Acc(when)
            if len(self.open) > self.max_sources:
                stale = [s for s, a in self.open.items() if when - a.start >= self.window]
                for s in stale:
                    del self.open[s]
        acc.flows += 1
        acc.bytes += nbytes
        acc.denied += denied
        acc.violations += violation
        acc.new_paths += new_path
        acc.night += int(when // 3600 % 24) < 6
        if len(acc.hosts) < 1000:
            acc.hosts.add(dst)
        if port is not None and len(acc.ports) < 1000:
            acc.ports.add(port)
        acc.zones.add(zone)
        return closed

    def flush(self) -> list[_Acc]:
        out = list(self.open.values())
        self.open.clear()
        return out


class MLDetector:
    """Scores closed windows with a trained artifact."""

    name = "ml"

    def __init__(self, artifact: dict[str, Any]) -> None:
        self.estimator = artifact["estimator"]
        self.threshold = float(artifact["threshold"])
        self.windows = WindowFeatures(int(artifact["window_seconds"]))

    @classmethod
    def load(cls, path: str | Path) -> MLDetector:
        """Load and check an artifact written by :func:`train`.

        :raises ModelArtifactError: unreadable, or made for other features or library versions.
        """
        import joblib
        import sklearn

        try:
            artifact = joblib.load(path)
        except Exception as exc:  # joblib raises anything pickle can
            raise ModelArtifactError(f"{path}: not a segwatch model artifact ({exc})") from None
        if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
            raise ModelArtifactError(f"{path}: not a segwatch model artifact (format {FORMAT})")
        if tuple(artifact.get("features", ())) != FEATURES:
            raise ModelArtifactError(
                f"{path}: trained on features {artifact.get('features')}, this segwatch uses "
                f"{FEATURES}: train it again with `segwatch train`"
            )
        made = artifact.get("versions", {}).get("scikit-learn", "")
        if made.split(".")[:2] != sklearn.__version__.split(".")[:2]:
            raise ModelArtifactError(
                f"{path}: made with scikit-learn {made}, this is {sklearn.__version__}: "
                "train it again with `segwatch train`"
            )
        return cls(artifact)

    def observe(self, ctx: Context, new_path: bool) -> list[Evidence]:
        if ctx.src_zone in _OUTSIDE:
            return []
        closed = self.windows.add(
            ctx.src_ip,
            ctx.time,
            ctx.dst_ip,
            ctx.port,
            ctx.dst_zone,
            ctx.bytes,
            ctx.denied,
            ctx.placement.verdict == "violation",
            new_path,
        )
        if closed is None:
            return []
        score = float(self.estimator.score_samples([closed.vector()])[0])
        if score >= self.threshold:
            return []
        parts = closed.describe()
        reason = (
            f"unusual {self.windows.window // 60}-minute window for {ctx.src_ip}: {parts} "
            f"(model score {score:.3f} < {self.threshold:.3f})"
        )
        return [Evidence(self.name, 50, reason, "ml")]


def train(events: list[dict[str, Any]] | Any, window: int = WINDOW) -> dict[str, Any]:
    """Fit the detector on enriched events (as ``segwatch analyze --events`` writes).

    :returns: the artifact (estimator, features, window, training span, versions, seed).
    :raises ModelArtifactError: too little data to learn from.
    """
    import numpy as np
    import sklearn
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from detector import __version__

    windows = WindowFeatures(window)
    vectors: list[list[float]] = []
    first = last = None
    for event in events:
        if ((event.get("segmentation") or {}).get("source_zone") or "(none)") in _OUTSIDE:
            continue
        when = event_time(event)
        first = when if first is None else min(first, when)
        last = when if last is None else max(last, when)
        seg = event.get("segmentation") or {}
        types = (event.get("event") or {}).get("type") or ()
        closed = windows.add(
            (event.get("source") or {}).get("ip") or "",
            when,
            (event.get("destination") or {}).get("ip") or "",
            (event.get("destination") or {}).get("port"),
            seg.get("destination_zone") or "",
            (event.get("network") or {}).get("bytes") or 0,
            "denied" in types,
            seg.get("verdict") == "violation",
            any(r.startswith("new path") for r in seg.get("reasons") or ()),
        )
        if closed is not None:
            vectors.append(closed.vector())
    vectors += [acc.vector() for acc in windows.flush()]
    if len(vectors) < 50:
        raise ModelArtifactError(
            f"only {len(vectors)} source windows of {window} s in the events: give more "
            "traffic (several days of enriched events from `segwatch analyze --events`)"
        )
    data = np.asarray(vectors)
    data = np.unique(data, axis=0)  # identical quiet windows would crowd the neighbourhoods
    estimator = make_pipeline(
        StandardScaler(), LocalOutlierFactor(n_neighbors=min(20, len(data) - 1), novelty=True)
    ).fit(data)
    threshold = min(float(np.quantile(estimator.score_samples(data), 0.001)), -1.5)
    return {
        "format": FORMAT,
        "estimator": estimator,
        "features": list(FEATURES),
        "window_seconds": window,
        "threshold": threshold,
        "trained_from": first,
        "trained_to": last,
        "windows": len(vectors),
        "seed": SEED,
        "versions": {
            "segwatch": __version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
