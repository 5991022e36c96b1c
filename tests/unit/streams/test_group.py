"""The worker group (`segwatch worker --processes N`) without a broker: the layout, the
process count, merged metrics, and the supervision of real child processes (small
Python programs standing in for workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streams.group import (
    ALL_ROLES,
    WorkerGroup,
    cpu_quota,
    layout,
    merge_metrics,
    process_count,
)

pytestmark = pytest.mark.unit


def test_layout_puts_normalize_apart_and_keeps_every_role() -> None:
    assert layout(1) == [ALL_ROLES]
    assert layout(2) == [("normalize",), ("score", "index", "alert")]
    assert layout(3) == [("normalize",), ("score", "index", "alert"), ("score", "index", "alert")]
    for n in range(2, 17):
        roles = layout(n)
        assert len(roles) == n
        normalize = sum(r == ("normalize",) for r in roles)
        assert 1 <= normalize < n  # both halves always run
        assert abs(normalize - n / 3) <= 1, (n, normalize)
    # a worker configured for some stages scales those
    assert layout(3, ("normalize",)) == [("normalize",)] * 3


def test_process_count() -> None:
    assert process_count(3) == process_count("3") == 3
    quota = cpu_quota()
    cores = len(os.sched_getaffinity(0))
    assert process_count("auto") == (min(cores, quota) if quota else cores)
    for bad in ("0", 0, "many", "-2"):
        with pytest.raises(ValueError, match="processes"):
            process_count(bad)


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),  # a limit of 1.5 CPUs
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_containers_cpu_limit_bounds_auto(
    tmp_path: Path, files: dict[str, str], cores: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == cores


def test_merged_metrics_label_each_process_and_keep_one_family() -> None:
    one = (
        "# HELP segwatch_records_in_total Records in\n# TYPE segwatch_records_in_total counter\n"
        'segwatch_records_in_total{topic="raw"} 5.0\n'
    )
    two = one.replace("5.0", "7.0").replace('"raw"', '"normalized"')
    families = merge_metrics([("0", one), ("1", two), ("2", "")])
    assert len(families) == 1
    samples = {(s.labels["worker_process"], s.labels["topic"]): s.value
               for s in families[0].samples}  # fmt: skip
    assert samples == {("0", "raw"): 5.0, ("1", "normalized"): 7.0}


def _group(tmp_path: Path, program: str, n: int = 2, drain: float = 5.0) -> WorkerGroup:
    """A group whose children run ``program`` (they append their pid to a file)."""
    marker = tmp_path / "pids"
    code = f"import os; open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n" + program
    return WorkerGroup([sys.executable, "-c", code], n, data_dir=tmp_path, drain_seconds=drain)


def _pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_child_that_dies_is_started_again_and_a_stop_drains_them(tmp_path: Path) -> None:
    group = _group(tmp_path, "import time\ntime.sleep(60)")
    runner = threading.Thread(target=lambda: setattr(group, "status", group.run()))
    runner.start()
    try:
        deadline = time.time() + 20
        while time.time() < deadline and len(_pids(tmp_path)) < 2:
            time.sleep(0.05)
        first = group.children[0].process
        assert first is not None
        first.kill()  # as the kernel's OOM killer would
        while time.time() < deadline and len(_pids(tmp_path)) < 3:
            time.sleep(0.05)
        assert len(_pids(tmp_path)) == 3, "the dead child was not started again"
        assert group.children[0].restarts == 1 and group.children[1].restarts == 0
        assert b'segwatch_worker_process_restarts_total{worker_process="0"} 1.0' in (
            group.metrics()
        )
    finally:
        group.stop()
        runner.join(30)
    assert group.status == 0  # type: ignore[attr-defined]  # every child stopped on SIGTERM
    assert all(c.process is not None and c.process.poll() is not None for c in group.children)


def test_a_child_that_cannot_start_stops_the_group(tmp_path: Path) -> None:
    """Exit status 2 is `segwatch worker` refusing its configuration or model: starting it
    again would refuse it again, so the group stops with that status."""
    group = _group(tmp_path, "import sys\nsys.exit(2)", n=2)
    started = time.time()
    assert group.run() == 2
    assert time.time() - started < 10
    assert group.failed and all(c.restarts == 0 for c in group.children)


def test_a_child_that_ignores_sigterm_is_killed_after_the_drain(tmp_path: Path) -> None:
    program = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    group = _group(tmp_path, program, n=1 + 1, drain=0.5)
    runner = threading.Thread(target=lambda: setattr(group, "status", group.run()))
    runner.start()
    deadline = time.time() + 20
    while time.time() < deadline and len(_pids(tmp_path)) < 2:
        time.sleep(0.05)
    time.sleep(0.3)  # the children have set their handlers
    group.stop()
    runner.join(30)
    assert group.status == 1  # type: ignore[attr-defined]
    assert all(c.process is not None and c.process.returncode == -9 for c in group.children)


def test_each_child_gets_its_roles_port_and_data_folder(tmp_path: Path) -> None:
    group = WorkerGroup(["true"], 3, data_dir=tmp_path)
    envs = [c.env for c in group.children]
    assert [e["SEGWATCH_WORKER__ROLES"] for e in envs] == [
        '["normalize"]',
        '["score", "index", "alert"]',
        '["score", "index", "alert"]',
    ]
    assert len({e["SEGWATCH_WORKER__WEB_PORT"] for e in envs}) == 3
    assert [e["SEGWATCH_WORKER__DATA_DIR"] for e in envs] == [
        str(tmp_path / f"process-{i}") for i in range(3)
    ]


def test_the_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A group SIGKILLed (no drain) leaves no worker behind."""
    marker = tmp_path / "pids"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from streams.group import WorkerGroup\n"
        f"code = \"import os; open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\\\n'); "
        'import time; time.sleep(120)"\n'
        "WorkerGroup([sys.executable, '-c', code], 2, data_dir=Path(sys.argv[1])).run()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              cwd=Path(__file__).resolve().parents[3])  # fmt: skip
    try:
        deadline = time.time() + 20
        while time.time() < deadline and len(_pids(tmp_path)) < 2:
            time.sleep(0.05)
        children = _pids(tmp_path)
        assert len(children) == 2
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
