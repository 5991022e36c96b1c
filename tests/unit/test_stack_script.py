"""deploy/local/stack.py: start-up failures say which service, why, and show its log."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.py"


@pytest.fixture(scope="module")
def stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segwatch_stack", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["segwatch_stack"] = module
    spec.loader.exec_module(module)
    return module


def test_versions_come_from_the_pom(stack: ModuleType) -> None:
    assert stack.KAFKA_VERSION.startswith("4.")
    assert stack.ES_VERSION.count(".") == 2


def test_a_service_that_dies_at_start_up_is_reported_with_its_log(
    stack: ModuleType, tmp_path: Path
) -> None:
    class Broken(stack.Service):  # type: ignore[name-defined,misc]
        def marker(self) -> str:
            return "segwatch-broken-marker"

        def install(self) -> None:
            self.root.mkdir(parents=True, exist_ok=True)

        def start(self) -> None:
            with self.log_file.open("ab") as log:
                proc = subprocess.Popen(
                    [
                        "sh",
                        "-c",
                        "echo 'FATAL: port 9092 already in use'; exit 3",
                        "segwatch-broken-marker",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.pid_file.write_text(str(proc.pid))
            proc.wait()

        def healthy(self) -> tuple[bool, str]:
            return False, "connection refused"

        def endpoint(self) -> str:
            return "127.0.0.1:1"

        def _started_long_ago(self) -> bool:
            return True

    svc = Broken("broken", tmp_path / "broken")
    with pytest.raises(stack.StackError) as err:
        svc.up(timeout=20)
    message = str(err.value)
    assert message.startswith("broken exited during start-up (connection refused)")
    assert "FATAL: port 9092 already in use" in message


def test_timeout_names_the_endpoint_and_reason(stack: ModuleType, tmp_path: Path) -> None:
    class Silent(stack.Service):  # type: ignore[name-defined,misc]
        def marker(self) -> str:
            return "never"

        def install(self) -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.log_file.write_text("still starting\n")

        def start(self) -> None:
            pass

        def healthy(self) -> tuple[bool, str]:
            return False, "HTTP 503"

        def endpoint(self) -> str:
            return "http://127.0.0.1:1"

    expected = r"silent not healthy after 1s at http://127\.0\.0\.1:1: HTTP 503"
    with pytest.raises(stack.StackError, match=expected):
        Silent("silent", tmp_path / "s").up(timeout=1)


def test_down_leaves_a_foreign_process_alone(stack: ModuleType, tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        svc = stack.Kafka(tmp_path)
        svc.root.mkdir(parents=True)
        svc.pid_file.write_text(str(sleeper.pid))  # a pid that is not our broker
        assert svc.pid() is None
        svc.down()
        assert sleeper.poll() is None, "down() must only stop the process it started"
    finally:
        sleeper.kill()
        sleeper.wait()
