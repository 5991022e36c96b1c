#!/usr/bin/env python3
"""The local stack: a real Apache Kafka broker and a real Elasticsearch node, no Docker.

    python deploy/local/stack.py up       [--only kafka|elasticsearch]
    python deploy/local/stack.py down     [--only ...] [--kill]
    python deploy/local/stack.py status
    python deploy/local/stack.py logs     [--only ...] [-n LINES]

Both come from Maven Central, resolved by Maven from ``deploy/local/pom.xml``
into one cache folder (``$SEGWATCH_CACHE``, default ``<repo>/.cache``), where
their data, logs and pid files live too. ``up`` waits for health (Kafka answers
a metadata request; Elasticsearch cluster health is yellow or green) and, on
failure, says which service, why, and prints the end of its log. A second
``up`` while both are healthy returns at once. ``down`` stops exactly the
processes whose pid files it wrote, after checking that each pid still runs
the program it started.

Settings (environment):
    SEGWATCH_CACHE              cache folder (downloads, data, logs, pids)
    SEGWATCH_KAFKA_PORT         broker listener on 127.0.0.1 (9092)
    SEGWATCH_KAFKA_CONTROLLER_PORT  KRaft controller listener (9093)
    SEGWATCH_ES_PORT            Elasticsearch HTTP on 127.0.0.1 (9200)
    SEGWATCH_ES_TRANSPORT_PORT  Elasticsearch transport on 127.0.0.1 (9300)
    SEGWATCH_ES_HEAP            Elasticsearch heap (1g)
    SEGWATCH_KAFKA_HEAP         Kafka heap (512m)
    SEGWATCH_STARTUP_TIMEOUT    seconds to wait for health (180)
    SEGWATCH_KAFKA_JAVA_HOME    JDK for Kafka (JAVA_HOME, else the `java` on PATH)
    SEGWATCH_ES_JAVA_HOME       JDK for Elasticsearch (JDK 17 found on this machine)
    SEGWATCH_ES_USER            unprivileged user that runs Elasticsearch (segwatch-es)

Only the standard library and, for the Kafka health check, confluent-kafka.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
POM = HERE / "pom.xml"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _pom_property(name: str) -> str:
    text = POM.read_text()
    start = text.index(f"<{name}>") + len(name) + 2
    return text[start : text.index(f"</{name}>", start)]


KAFKA_VERSION = _pom_property("kafka.version")
ES_VERSION = _pom_property("elasticsearch.version")


class StackError(Exception):
    """A service could not be installed, started or stopped; the message says why."""


def _log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    data = path.read_bytes()[-64 * 1024 :].decode("utf-8", "replace").splitlines()
    return "\n".join(data[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _find_java(home_env: str, prefer_major: int | None = None) -> str:
    """Return the `java` binary to use: an explicit *_JAVA_HOME, a JDK of the wanted major, PATH."""
    explicit = os.environ.get(home_env) or (None if prefer_major else os.environ.get("JAVA_HOME"))
    if explicit:
        java = Path(explicit) / "bin" / "java"
        if not java.exists():
            raise StackError(f"{home_env}={explicit} has no bin/java")
        return str(java)
    if prefer_major is not None:
        for jvm in sorted(Path("/usr/lib/jvm").glob("*")):
            java = jvm / "bin" / "java"
            if java.exists() and not jvm.is_symlink() and _java_major(str(java)) == prefer_major:
                return str(java)
    found = shutil.which("java")
    if not found:
        raise StackError("no Java found: install a JDK 17+ or set " + home_env)
    return found


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    for token in out.split('"')[1:2]:
        head = token.split(".")[0]
        return int(head) if head.isdigit() else 0
    return 0


@dataclass
class Service(ABC):
    """What every service of the stack knows about itself."""

    name: str
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid this script started, if that process still runs our program."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and self.marker() in _cmdline(pid):
            return pid
        return None

    @abstractmethod
    def marker(self) -> str:  # a string the service's command line must contain
        ...

    @abstractmethod
    def install(self) -> None: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def healthy(self) -> tuple[bool, str]: ...

    @abstractmethod
    def endpoint(self) -> str: ...

    def up(self, timeout: float) -> None:
        ok, detail = self.healthy()
        if ok:
            _log(f"{self.name}: already up at {self.endpoint()} ({detail})")
            return
        if self.pid() is None:
            self.install()
            _log(f"{self.name}: starting, log at {self.log_file}")
            self.start()
        else:
            _log(f"{self.name}: process {self.pid()} runs, waiting for it to be healthy")
        self.wait(timeout)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        detail = "no answer yet"
        while time.monotonic() < deadline:
            ok, detail = self.healthy()
            if ok:
                _log(f"{self.name}: healthy at {self.endpoint()} ({detail})")
                return
            if self.pid() is None and self.pid_file.exists() and self._started_long_ago():
                raise StackError(
                    f"{self.name} exited during start-up ({detail})\n"
                    f"--- last lines of {self.log_file} ---\n{_tail(self.log_file)}"
                )
            time.sleep(1.0)
        raise StackError(
            f"{self.name} not healthy after {timeout:.0f}s at {self.endpoint()}: {detail}\n"
            f"--- last lines of {self.log_file} ---\n{_tail(self.log_file)}"
        )

    def _started_long_ago(self) -> bool:
        # the pid file may be written a moment after the launcher starts (Elasticsearch)
        return time.time() - self.pid_file.stat().st_mtime > 5

    def down(self, kill: bool = False) -> None:
        """Stop it: SIGTERM (SIGKILL after a minute), or with ``kill`` SIGKILL at once (a
        crash, for the fault tests)."""
        pid = self.pid()
        if pid is None:
            _log(f"{self.name}: not running (no live process from {self.pid_file})")
            self.pid_file.unlink(missing_ok=True)
            return
        _log(f"{self.name}: {'killing' if kill else 'stopping'} pid {pid}")
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _pid_alive(pid):
            _log(f"{self.name}: pid {pid} ignored SIGTERM for 60s, sending SIGKILL")
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        _log(f"{self.name}: stopped")

    def status(self) -> dict[str, object]:
        ok, detail = self.healthy()
        return {
            "service": self.name,
            "endpoint": self.endpoint(),
            "pid": self.pid(),
            "healthy": ok,
            "detail": detail,
        }


def _maven_copy(profile: str, out_dir: Path, log_file: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (`mvn`) is not on PATH; it resolves the stack from Maven Central")
    out_dir.mkdir(parents=True, exist_ok=True)
    _log(f"resolving {profile} from Maven Central into {out_dir}")
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM),
        "-P",
        profile,
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out_dir}",
    ]
    with log_file.open("ab") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise StackError(
            f"Maven could not resolve the {profile} artifacts (exit {proc.returncode})\n"
            f"--- last lines of {log_file} ---\n{_tail(log_file)}"
        )


class Kafka(Service):
    """Apache Kafka in KRaft mode: one node that is broker and controller."""

    def __init__(self, cache: Path) -> None:
        super().__init__("kafka", cache / "kafka")
        self.port = int(_env("SEGWATCH_KAFKA_PORT", "9092"))
        self.controller_port = int(_env("SEGWATCH_KAFKA_CONTROLLER_PORT", "9093"))
        self.heap = _env("SEGWATCH_KAFKA_HEAP", "512m")
        self.lib = self.root / f"lib-{KAFKA_VERSION}"
        self.data = self.root / "data"
        self.config = self.root / "server.properties"

    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def marker(self) -> str:
        return str(self.config)

    def install(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            _maven_copy("kafka", self.lib, self.root / "maven.log")
        template = (HERE / "kafka" / "server.properties").read_text()
        self.config.write_text(
            template.replace("@KAFKA_PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(self.data))
        )
        if not (self.data / "meta.properties").exists():
            self._format()

    def _java_cmd(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        java = _find_java("SEGWATCH_KAFKA_JAVA_HOME")
        return [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.root}",
            "-cp",
            f"{self.lib}/*",
            main,
            *args,
        ]

    def _format(self) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        _log(f"kafka: formatting storage in {self.data} (cluster id {cluster_id})")
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.config),
        )
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"kafka: formatting storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self) -> None:
        cmd = self._java_cmd("kafka.Kafka", str(self.config), heap=self.heap)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        self.pid_file.write_text(str(proc.pid))

    def healthy(self) -> tuple[bool, str]:
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError:
            return False, "confluent-kafka is not installed (run `make install`)"
        admin = AdminClient({"bootstrap.servers": self.endpoint(), "log_level": 0})
        try:
            meta = admin.list_topics(timeout=2)
        except Exception as exc:  # KafkaException: the broker did not answer
            return False, f"no metadata answer: {exc}"
        return True, f"{len(meta.brokers)} broker(s), {len(meta.topics)} topic(s)"


class Elasticsearch(Service):
    """One Elasticsearch node from the Maven Central distribution zip, run unprivileged."""

    def __init__(self, cache: Path) -> None:
        super().__init__("elasticsearch", cache / "elasticsearch")
        self.port = int(_env("SEGWATCH_ES_PORT", "9200"))
        self.transport_port = int(_env("SEGWATCH_ES_TRANSPORT_PORT", "9300"))
        self.heap = _env("SEGWATCH_ES_HEAP", "1g")
        self.user = _env("SEGWATCH_ES_USER", "segwatch-es")
        self.dist = self.root / "dist"
        self.runtime = self._runtime_root()
        self.home = self.runtime / f"elasticsearch-{ES_VERSION}"
        self.data = self.runtime / "data"
        self.logs = self.runtime / "logs"

    def _runtime_root(self) -> Path:
        """Where the unpacked node lives: in the cache, unless the user cannot reach it.

        Elasticsearch runs as an unprivileged user, who must be able to walk
        into every parent folder. A clone under a private home (mode 700) would
        not allow that, so the node then lives in /var/tmp instead, under a
        name derived from the cache path.
        """
        inside = self.root / "node"
        if os.geteuid() != 0 or self._world_traversable(self.root):
            return inside
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"segwatch-es-{digest}"

    @staticmethod
    def _world_traversable(path: Path) -> bool:
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                return False
        return True

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def marker(self) -> str:
        return str(self.home)

    def install(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        zip_path = self.dist / f"elasticsearch-{ES_VERSION}.zip"
        if not zip_path.exists():
            _maven_copy("elasticsearch", self.dist, self.root / "maven.log")
        if not (self.home / "bin" / "elasticsearch").exists():
            _log(f"elasticsearch: unpacking {zip_path.name} into {self.runtime}")
            self.runtime.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(zip_path) as archive:
                for info in archive.infolist():
                    target = Path(archive.extract(info, self.runtime))
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        target.chmod(mode)
        config = (HERE / "elasticsearch" / "elasticsearch.yml").read_text()
        (self.home / "config" / "elasticsearch.yml").write_text(
            config.replace("@HTTP_PORT@", str(self.port))
            .replace("@TRANSPORT_PORT@", str(self.transport_port))
            .replace("@DATA_DIR@", str(self.data))
            .replace("@LOGS_DIR@", str(self.logs))
        )
        (self.home / "config" / "jvm.options.d" / "heap.options").write_text(
            f"-Xms{self.heap}\n-Xmx{self.heap}\n"
        )
        self.data.mkdir(exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._ensure_user()
        self.runtime.chmod(0o755)
        subprocess.run(["chown", "-R", f"{self.user}:", str(self.runtime)], check=True)

    def _ensure_user(self) -> None:
        if os.geteuid() != 0:
            return  # not root: Elasticsearch runs as the current (unprivileged) user
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            _log(f"elasticsearch: creating system user {self.user} (it refuses to run as root)")
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    self.user,
                ],
                check=True,
            )

    def start(self) -> None:
        java = _find_java("SEGWATCH_ES_JAVA_HOME", prefer_major=17)
        env = {
            "PATH": "/usr/bin:/bin",
            "ES_JAVA_HOME": str(Path(java).parent.parent),
            "ES_TMPDIR": str(self.runtime / "tmp"),
            "LANG": "C.UTF-8",
        }
        (self.runtime / "tmp").mkdir(exist_ok=True)
        shutil.chown(self.runtime / "tmp", user=self._run_as())
        self.pid_file.unlink(missing_ok=True)
        pid_file = self.runtime / "es.pid"
        pid_file.unlink(missing_ok=True)
        cmd = [str(self.home / "bin" / "elasticsearch"), "-d", "-p", str(pid_file)]
        if os.geteuid() == 0:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            cmd = [
                runuser,
                "-u",
                self.user,
                "--",
                "env",
                *[f"{k}={v}" for k, v in env.items()],
                *cmd,
            ]
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.runtime,
                env={**os.environ, **env},
            )
        # `-d` returns once the node has started (or failed); the node writes its own pid file
        deadline = time.monotonic() + float(_env("SEGWATCH_STARTUP_TIMEOUT", "180"))
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if proc.returncode not in (0, None) or not pid_file.exists():
            raise StackError(
                f"elasticsearch: the launcher exited with {proc.returncode} and no node runs\n"
                f"--- last lines of {self.log_file} ---\n{_tail(self.log_file)}\n"
                f"--- last lines of the node log ---\n{_tail(self.logs / 'segwatch-local.log')}"
            )
        self.pid_file.write_text(pid_file.read_text().strip())

    def _run_as(self) -> str:
        return self.user if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def healthy(self) -> tuple[bool, str]:
        url = f"{self.endpoint()}/_cluster/health?timeout=1s"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            return False, f"HTTP {exc.code} from {url}"
        except (OSError, ValueError) as exc:
            return False, f"no answer from {url}: {exc}"
        status = body.get("status")
        return status in ("yellow", "green"), f"cluster health {status}"


def _services(cache: Path, only: str | None) -> list[Service]:
    makers: dict[str, Callable[[Path], Service]] = {
        "kafka": Kafka,
        "elasticsearch": Elasticsearch,
    }
    names = [only] if only else list(makers)
    return [makers[n](cache) for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "status", "logs"])
    parser.add_argument("--only", choices=["kafka", "elasticsearch"])
    parser.add_argument("-n", "--lines", type=int, default=40, help="log lines for `logs`")
    parser.add_argument(
        "--kill", action="store_true", help="`down` with SIGKILL at once: a crash, for fault tests"
    )
    args = parser.parse_args(argv)
    cache = Path(_env("SEGWATCH_CACHE", str(REPO / ".cache"))).resolve()
    services = _services(cache, args.only)
    try:
        if args.action == "up":
            timeout = float(_env("SEGWATCH_STARTUP_TIMEOUT", "180"))
            for svc in services:
                svc.up(timeout)
        elif args.action == "down":
            for svc in reversed(services):
                svc.down(kill=args.kill)
        elif args.action == "status":
            rows = [svc.status() for svc in services]
            for row in rows:
                state = "healthy" if row["healthy"] else "DOWN"
                print(
                    f"{row['service']:<14} {state:<8} pid={row['pid']} {row['endpoint']} "
                    f"- {row['detail']}"
                )
            return 0 if all(r["healthy"] for r in rows) else 1
        else:
            for svc in services:
                print(f"--- {svc.log_file} ---\n{_tail(svc.log_file, args.lines)}")
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
