"""How evenly the score stage's work spreads over the partitions of the normalized
topic, by the key the normalize stage gives each event: today's source zone against
the connection's initiator host (``CompiledModel.initiator_host``).

Each example model's simulated traffic (a day, no attacks) is parsed, and every event
is hashed as Kafka's Java producer (and the worker's ``murmur2_random`` partitioner)
would place its key. The figure is the busiest partition's share of the events over
the mean share (1.0 is perfectly even; with P partitions it is at most P). A synthetic
trace with one host opening 30% of all connections shows what one hot key does.
No broker is involved: the keys and the hash are the whole of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from bench import Row
from detector.assets import MODELS
from detector.connection import key_partition
from detector.errors import ParseError
from detector.model import compile_model, load_model
from detector.parsers import ParseOptions, make_parser
from detector.simulate import SimulationError, Simulator

START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
PARTITIONS = (6, 12)


def busiest(keys: Counter[bytes], partitions: int) -> float:
    """The busiest partition's share of the events over the mean share."""
    load = [0] * partitions
    for key, n in keys.items():
        load[key_partition(key, partitions)] += n
    return max(load) / (sum(load) / partitions)


def _keys(model_name: str, days: float) -> tuple[Counter[bytes], Counter[bytes]]:
    """(source-zone keys, initiator-host keys) of a model's simulated traffic."""
    model = compile_model(load_model(MODELS / model_name))
    try:
        family, simulator = "vpcflow", Simulator(model, "vpcflow", seed=3)
    except SimulationError:  # pod zones without addresses: flow logs that carry labels
        family, simulator = "calico", Simulator(model, "calico", seed=3)
    parser = make_parser(family, ParseOptions(reference_time=START + 30 * 86_400))
    zones: Counter[bytes] = Counter()
    hosts: Counter[bytes] = Counter()
    for record, _ in simulator.run(START, days * 86_400, 1.0, []):
        for event in parser.parse(record):
            if isinstance(event, ParseError) or "source" not in event:
                continue
            zones[(model.zone_of(event.get("source")) or "").encode()] += 1
            hosts[model.initiator_host(event).encode()] += 1
    return zones, hosts


def _hot_host(hosts: int = 2_000, share: float = 0.3, n: int = 1_000_000) -> Counter[bytes]:
    """One host opening ``share`` of ``n`` connections, the rest spread over ``hosts``."""
    keys: Counter[bytes] = Counter({b"10.0.0.1": int(n * share)})
    rest = n - keys[b"10.0.0.1"]
    for i in range(hosts):
        keys[f"10.1.{i // 256}.{i % 256}".encode()] += rest // hosts
    return keys


def _worst(figures: Iterable[tuple[str, float]]) -> tuple[float, str]:
    found = sorted(figures, key=lambda kv: -kv[1])
    return found[0][1], ", ".join(f"{name} {value:.2f}" for name, value in found)


def run(scale: float) -> list[Row]:
    days = max(scale, 0.1)
    models = sorted(p.name for p in MODELS.iterdir() if p.name.endswith(".yaml"))
    keyed = {name: _keys(name, days) for name in models}
    rows = []
    for partitions in PARTITIONS:
        for label, index in (("source-zone key (today)", 0), ("initiator-host key", 1)):
            value, each = _worst(
                (name.removesuffix(".yaml"), busiest(keys[index], partitions))
                for name, keys in keyed.items()
            )
            rows.append(Row(
                f"busiest partition's share of scoring / mean, {partitions} partitions, {label}",
                value, "x", f"worst of every example model's simulated day: {each}; "
                "target <= 1.3 (initiator key)"))  # fmt: skip
    top = max(
        (max(hosts.values()) / sum(hosts.values()), name.removesuffix(".yaml"))
        for name, (_, hosts) in keyed.items()
    )
    rows.append(Row("busiest initiator host's share of events, simulator traffic",
                    100 * top[0], "%", f"the worst example model: {top[1]}"))  # fmt: skip
    hot = _hot_host()
    for partitions in PARTITIONS:
        rows.append(Row(
            f"busiest partition's share of scoring / mean, {partitions} partitions, one host "
            "at 30% of connections", busiest(hot, partitions), "x",
            "initiator-host key, 1M synthetic connections, the rest over 2,000 hosts; target "
            "<= 1.5 or the documented cap (a lone key is at least 30% x partitions)"))  # fmt: skip
    return rows
