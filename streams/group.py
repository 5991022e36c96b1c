"""``segwatch worker --processes N``: the worker's stages over N supervised processes
on one machine.

A Python process runs one core at a time, so a worker that should use the machine
runs several. The group is the parent of N ``segwatch worker`` processes, each with
the roles :func:`layout` gives it (normalize apart from the rest, the layout that
measures best: see docs/scaling.md), each on a web port of its own on the loopback
interface. The parent

- restarts a child that exits (logged, counted, after a backoff that grows while the
  child keeps dying young);
- stops them all on SIGTERM or Ctrl-C: each drains as a lone worker does (its batch
  in hand written and committed), and one that has not stopped after
  ``drain_seconds`` is killed;
- serves the group's ``/healthz``, ``/readyz`` and ``/metrics`` on ``worker.web_port``:
  health fails only when a child's does (a stage stopped for good), readiness needs
  every child ready, and the metrics are every child's, each sample labelled with its
  ``worker_process``, beside the group's own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ALL_ROLES", "WorkerGroup", "cpu_quota", "layout", "merge_metrics", "process_count"]

log = logging.getLogger("segwatch.group")

ALL_ROLES: tuple[str, ...] = ("normalize", "score", "index", "alert")
# normalize's share of the worker's CPU per record (39 of 125 us in the pipeline bench of
# 2026-12-07; 14 of 37 us on a faster machine): how many of the processes normalize
_NORMALIZE_SHARE = 1 / 3
_BACKOFF_MAX = 30.0
_HEALTHY_AFTER = 60.0  # a child that ran this long starts its backoff afresh
_CANNOT_START = 2  # `segwatch worker`'s exit status for a configuration or model it refuses


def process_count(value: str | int) -> int:
    """``auto`` (one per core this process may use: its CPU affinity, bounded by a
    container's CPU quota) or a positive number."""
    if isinstance(value, int) or str(value).strip().lstrip("-").isdigit():
        count = int(value)
        if count < 1:
            raise ValueError(f"--processes must be 1 or more, or auto (got {value})")
        return count
    if str(value).strip().lower() == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)  # fmt: skip
        quota = cpu_quota()
        return max(1, min(cores, quota)) if quota is not None else cores
    raise ValueError(f"--processes must be a number or auto (got {value!r})")


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cores a CPU quota allows this process's cgroup (Kubernetes' CPU limit), rounded
    up; None without one. Reads cgroup v2's ``cpu.max``, else v1's ``cpu.cfs_*``."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def layout(processes: int, roles: Sequence[str] = ALL_ROLES) -> list[tuple[str, ...]]:
    """The roles of each of ``processes`` processes. With every role: all in one for a
    single process, otherwise about 40% normalize-only processes (at least one) and the
    rest scoring, indexing and alerting. With fewer roles configured: that set in
    every process (one stage scaled on its own)."""
    roles = tuple(roles)
    if processes <= 1 or set(roles) != set(ALL_ROLES):
        return [roles] * max(processes, 1)
    normalize = max(1, min(processes - 1, round(processes * _NORMALIZE_SHARE)))
    rest = tuple(r for r in ALL_ROLES if r != "normalize")
    return [("normalize",)] * normalize + [rest] * (processes - normalize)


def merge_metrics(texts: Iterable[tuple[str, str]]) -> list[Metric]:
    """Metric families of several processes' exposition texts, ``(process, text)``, each
    sample labelled ``worker_process``; a family several processes expose is one."""
    merged: dict[str, Metric] = {}
    for process, text in texts:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation,
                                                    family.type, family.unit)  # fmt: skip
            for sample in family.samples:
                labels = {**sample.labels, "worker_process": process}
                into.add_sample(sample.name, labels, sample.value, sample.timestamp,
                                sample.exemplar)  # fmt: skip
    return list(merged.values())


def _die_with_parent() -> None:
    """In a child, before it runs: SIGTERM it when the parent dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG), so no worker outlives its group."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the children outlive a killed parent
        pass


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class _Child:
    index: int
    roles: tuple[str, ...]
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    due: float = 0.0  # when a dead child is started again

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of one of its endpoints; (0, {}) when it does not answer."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, dict(json.loads(exc.read()))
            except ValueError:
                return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def metrics(self, timeout: float = 2.0) -> str:
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return str(response.read().decode())
        except OSError:
            return ""


@dataclass
class WorkerGroup:
    """N ``segwatch worker`` processes and their supervision.

    :param command: the command line of one child worker (its roles, web port and data
        folder come through its environment).
    :param processes: how many.
    :param roles: the configured ``worker.roles`` (see :func:`layout`).
    :param web: (host, port) of the group's endpoints, or None for none.
    :param data_dir: ``worker.data_dir``: each child gets a folder of its own in it.
    :param drain_seconds: how long a stop waits for the children before killing them.
    """

    command: list[str]
    processes: int
    roles: Sequence[str] = ALL_ROLES
    web: tuple[str, int] | None = None
    data_dir: Path = Path("var/worker")
    drain_seconds: float = 60.0
    children: list[_Child] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self.failed = False  # a child refused its configuration: the group stopped
        self._registry = CollectorRegistry(auto_describe=True)
        self._restarts = Counter("segwatch_worker_process_restarts",
                                 "Worker processes of the group started again after they "
                                 "exited", ["worker_process"], registry=self._registry)  # fmt: skip
        for index, roles in enumerate(layout(self.processes, self.roles)):
            port = _free_port("127.0.0.1")
            env = {
                **os.environ,
                "SEGWATCH_WORKER__ROLES": json.dumps(list(roles)),
                "SEGWATCH_WORKER__WEB_HOST": "127.0.0.1",
                "SEGWATCH_WORKER__WEB_PORT": str(port),
                "SEGWATCH_WORKER__DATA_DIR": str(self.data_dir / f"process-{index}"),
            }
            self.children.append(_Child(index, roles, port, env))

    # --- running ----------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them until SIGTERM or SIGINT; 0 when every
        child stopped on its own after the signal, 2 when a child could not start (its
        configuration or model was refused), 1 when one had to be killed."""
        before = {}
        if threading.current_thread() is threading.main_thread():  # else: stop() ends it
            for signum in (signal.SIGTERM, signal.SIGINT):
                before[signum] = signal.signal(signum, lambda *_: self._stop.set())
        server = self._serve() if self.web is not None else None
        for child in self.children:
            self._start(child)
        try:
            while not self._stop.wait(0.5):
                self._supervise()
        finally:
            clean = self._drain()
            if server is not None:
                server.shutdown()
                server.server_close()
            for signum, handler in before.items():
                signal.signal(signum, handler)
        return 2 if self.failed else 0 if clean else 1

    def stop(self) -> None:
        self._stop.set()

    def _start(self, child: _Child) -> None:
        child.process = subprocess.Popen(self.command, env=child.env,
                                         preexec_fn=_die_with_parent)  # fmt: skip
        child.started = time.monotonic()
        log.info("worker process %d (%s) started, pid %d, web port %d", child.index,
                 ",".join(child.roles), child.process.pid, child.port)  # fmt: skip

    def _supervise(self) -> None:
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is None:
                continue
            if process is not None and process.returncode == _CANNOT_START:
                # the worker refused its configuration or model: starting it again would
                # refuse it again, forever; the group stops and says so
                log.critical("worker process %d (%s) cannot start (exit status %d, its error "
                             "is above): stopping the group", child.index,
                             ",".join(child.roles), process.returncode)  # fmt: skip
                self.failed = True
                self._stop.set()
                return
            if process is not None:  # it just died
                lived = now - child.started
                if lived >= _HEALTHY_AFTER:
                    child.backoff = 1.0
                child.due = now + child.backoff
                log.error("worker process %d (%s, pid %d) exited with status %s after %.0f s; "
                          "starting it again in %.0f s", child.index, ",".join(child.roles),
                          process.pid, process.returncode, lived, child.backoff)  # fmt: skip
                child.backoff = min(child.backoff * 2, _BACKOFF_MAX)
                child.process = None
            if now >= child.due and not self._stop.is_set():
                child.restarts += 1
                self._restarts.labels(str(child.index)).inc()
                self._start(child)

    def _drain(self) -> bool:
        """SIGTERM every child, wait up to ``drain_seconds``, kill what is left."""
        running = [c.process for c in self.children
                   if c.process is not None and c.process.poll() is None]  # fmt: skip
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds
        clean = True
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("worker process pid %d did not stop in %.0f s: killed", process.pid,
                          self.drain_seconds)  # fmt: skip
                process.kill()
                process.wait()
                clean = False
        return clean

    # --- the group's endpoints ----------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """200 unless a child reports a stage stopped for good (a child being started
        again is no failure: the group does that itself)."""
        failed = []
        for child in self.children:
            status, body = child.get("/healthz")
            if status >= 500:
                failed.append({"worker_process": child.index, **body})
        if failed:
            return 500, {"status": "failed", "processes": failed}
        return 200, {"status": "ok"}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """200 when every child answers ready; each child's own report in the body."""
        reports = []
        for child in self.children:
            status, body = child.get("/readyz")
            process = child.process
            reports.append({
                "worker_process": child.index, "roles": list(child.roles),
                "pid": process.pid if process is not None else None,
                "restarts": child.restarts, "ready": status == 200, "report": body,
            })  # fmt: skip
        ready = all(r["ready"] for r in reports)
        return (200 if ready else 503), {"ready": ready, "processes": reports}

    def metrics(self) -> bytes:
        texts = [(str(c.index), c.metrics()) for c in self.children]
        families = merge_metrics(texts)

        class _Children:
            def collect(self) -> list[Metric]:
                return families

        registry = CollectorRegistry()
        registry.register(_Children())  # type: ignore[arg-type]
        return generate_latest(registry) + generate_latest(self._registry)

    def _serve(self) -> ThreadingHTTPServer:
        assert self.web is not None
        group = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                content_type = "application/json"
                if self.path.startswith("/healthz"):
                    status, body = group.health()
                    data = json.dumps(body).encode()
                elif self.path.startswith("/readyz"):
                    status, body = group.readiness()
                    data = json.dumps(body).encode()
                elif self.path.startswith("/metrics"):
                    status, data, content_type = 200, group.metrics(), CONTENT_TYPE_LATEST
                else:
                    status, data = 404, b'{"error": "not found"}'
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(self.web, Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="group-web", daemon=True).start()
        return server
