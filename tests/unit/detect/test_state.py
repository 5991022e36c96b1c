"""Detector state through the worker's table layout (streams.state): journalled paths and
snapshots restore an engine that alerts the same as one that never stopped.

The table here is a dict: the layout and the restore are under test; the changelog
itself is faust's, exercised against the real broker in tests/integration/test_worker.py.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from streams.pipeline import Scorer
from streams.state import DetectorState

from .conftest import MONDAY, event, example

RETAIL = example("retail_store.yaml")
APP, DB, DMZ = "10.50.20.5", "10.50.30.5", "10.50.10.5"
HOUR = 3600


def _scorer(table: dict[bytes, bytes], **settings: Any) -> tuple[Scorer, DetectorState]:
    from detector.detect import DetectorSettings

    state = DetectorState(table, snapshot_seconds=0.0)
    scorer = Scorer(RETAIL, DetectorSettings(learning_seconds=HOUR, **settings),
                    restore=state.restore)  # fmt: skip
    return scorer, state


def _run(scorer: Scorer, state: DetectorState, events: list[dict[str, Any]],
         partition: int = 0) -> list[str]:  # fmt: skip
    """The detectors' reasons the events got."""
    reasons = []
    for i, e in enumerate(events):
        e.setdefault("event", {})["id"] = f"t-{partition}-{i}"
        scored, _ = scorer.score(e, partition)
        state.save(partition, scorer.engines[partition])
        reasons += [r.split(" (")[0] for r in scored["segmentation"].get("reasons", [])]
    return reasons


def test_a_restored_engine_remembers_paths_and_learning() -> None:
    table: dict[bytes, bytes] = {}
    scorer, state = _scorer(table)
    learning = [event(APP, DB, 5432, MONDAY + 16 * HOUR + i * 30) for i in range(200)]
    assert _run(scorer, state, learning) == []
    opened = [event(DMZ, APP, 8080, MONDAY + 18 * HOUR)]
    assert _run(scorer, state, opened) == ["new path dmz -> app tcp/8080"]
    assert scorer.engines[0].new_paths.journal == {}  # drained into the table
    paths = [k for k in table if k.startswith(b"0/path/")]
    assert len(paths) == 2 and b"0" in table  # app->db/5432, dmz->app/8080 and the snapshot

    again, state2 = _scorer(table)  # a new worker on the same table
    assert _run(again, state2, [event(DMZ, APP, 8080, MONDAY + 19 * HOUR)]) == []
    fresh = _run(again, state2, [event(APP, DB, 22, MONDAY + 19 * HOUR + 1)])
    assert "new path app -> db tcp/22" in fresh  # learning stayed over: new paths still count


def test_partitions_keep_their_own_state_and_forgotten_paths_are_deleted() -> None:
    table: dict[bytes, bytes] = {}
    scorer, state = _scorer(table, max_paths=10)
    events = [event(APP, DB, 1000 + i, MONDAY + i) for i in range(30)]
    _run(scorer, state, events, partition=3)
    kept = [k for k in table if k.startswith(b"3/path/")]
    assert 0 < len(kept) <= 10  # forgotten paths were deleted from the table too
    assert not any(k.startswith(b"0/") for k in table) and b"3" in table
    scorer.keep({0})
    assert scorer.engines == {}


def test_restoring_partitions_merges_their_zone_memory_into_the_workers() -> None:
    """Keyed by initiator, one zone's flows are in many partitions: a worker that takes
    two of them knows the paths and port counts of both, and the learning start of the
    earlier, whatever order it restores them in."""
    for order in ((1, 2), (2, 1)):
        table: dict[bytes, bytes] = {}
        one, one_state = _scorer(table)
        _run(one, one_state, [event(APP, DB, 5432, MONDAY + i * 30) for i in range(100)], 1)
        two, two_state = _scorer(table)  # another worker, learning later and elsewhere
        _run(two, two_state, [event(DMZ, APP, 8080, MONDAY + HOUR + i) for i in range(50)], 2)
        worker, state = _scorer(table)
        for partition in order:
            worker.engine(partition)
        memory = worker.memory
        assert all(e.memory is memory for e in worker.engines.values())  # one memory
        assert memory.port_totals == {"db": 100, "app": 50}
        assert memory.started["new_path"] == MONDAY
        assert len(memory.paths) == 2
        # neither path is new to either partition; a third one is
        later = MONDAY + 3 * HOUR
        found = [
            event(DMZ, APP, 8080, later),
            event(APP, DB, 5432, later),
            event(DMZ, DB, 5432, later),
        ]
        new = [[r for r in _run(worker, state, [e], p) if r.startswith("new path")]
               for e, p in zip(found, (1, 2, 1), strict=True)]  # fmt: skip
        assert new == [[], [], ["new path dmz -> db tcp/5432"]]


def _snapshot(table: dict[bytes, bytes], partition: int) -> dict[str, Any]:
    return dict(orjson.loads(zlib.decompress(table[b"%d" % partition])))


def test_a_worker_judges_port_rarity_from_every_workers_counts() -> None:
    """Worker A scores the initiators that use the database on 9187, worker B those on
    6379: once B has A's snapshot (the changelog's), 9187 is no stranger to B."""
    later = MONDAY + 2 * HOUR

    def worker_b(told: bool) -> list[str]:
        table: dict[bytes, bytes] = {}
        a, a_state = _scorer(table, rare_port_min_flows=50)
        b, b_state = _scorer(table, rare_port_min_flows=50)
        _run(a, a_state, [event(APP, DB, 9187, MONDAY + i * 10) for i in range(300)], 1)
        _run(b, b_state, [event(APP, DB, 6379, MONDAY + i * 10) for i in range(100)], 2)
        if told:
            b.remote(1, _snapshot(table, 1))
            b.remote(2, _snapshot(table, 2))  # its own partition: ignored
            assert b.memory.port_totals == {"db": 400}
        return [r for r in _run(b, b_state, [event(DMZ, DB, 9187, later)], 2) if "port" in r]

    assert worker_b(told=False) == ["port 9187 never seen for zone db in 2.0 h"]
    assert worker_b(told=True) == []


def test_a_partition_handed_over_keeps_counting_until_its_next_worker_snapshots_it() -> None:
    table: dict[bytes, bytes] = {}
    a, a_state = _scorer(table)
    _run(a, a_state, [event(APP, DB, 5432, MONDAY + i) for i in range(30)], 1)
    _run(a, a_state, [event(APP, DB, 5432, MONDAY + 100 + i) for i in range(20)], 2)
    assert a.memory.port_totals == {"db": 50}
    a.keep({2})  # partition 1 moves to another worker ...
    assert a.memory.port_totals == {"db": 50}
    b, b_state = _scorer(table)  # ... which restores it and goes on counting
    _run(b, b_state, [event(APP, DB, 5432, MONDAY + 200 + i) for i in range(10)], 1)
    a.remote(1, _snapshot(table, 1))
    assert a.memory.port_totals == {"db": 60}  # 40 of partition 1, 20 of partition 2
    assert b.memory.port_totals == {"db": 40}  # b has not heard of partition 2 yet
