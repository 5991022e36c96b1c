"""The segmentation model: compile time for a large model, and placement throughput
for models of 10, 1k and 100k zones under the same traffic, beside a linear scan.

Traffic, the same for every model size: 80% of events on (up to) 2,000 declared
flows between two hosts of each zone, 20% between random hosts of a 4,000-host
working set on random ports. The caches (addresses, decisions) are bounded;
a "cold" row shows the cost when every address is new.
"""

from __future__ import annotations

import gc
import ipaddress
import random
import time
from typing import Any

from bench import Row
from detector.model import CompiledModel, compile_model, model_from_data


def _network(i: int) -> str:
    """Zone i's /26 inside 10.0.0.0/8 (room for 262,144 zones)."""
    base = (10 << 24) + (i << 6)
    return f"{ipaddress.IPv4Address(base)}/26"


def _host(i: int, k: int) -> str:
    return str(ipaddress.IPv4Address((10 << 24) + (i << 6) + 1 + k % 60))


def _data(zones: int, flows: int, seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    ports = [22, 443, 5432, 8080, "9000-9100"]
    return {
        "apiVersion": "segwatch/v1",
        "metadata": {"name": f"bench-{zones}"},
        "zones": [{"name": f"z{i}", "cidrs": [_network(i)]} for i in range(zones)],
        "flows": [
            {"id": f"f{j}", "from": f"z{rnd.randrange(zones)}", "to": f"z{rnd.randrange(zones)}",
             "ports": [rnd.choice(ports)]}
            for j in range(flows)
        ],
    }  # fmt: skip


def _events(model: CompiledModel, zones: int, n: int, seed: int = 11) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    flows = [r for r in model.rules if r.ports]
    hosts = [(rnd.randrange(zones), rnd.randrange(60)) for _ in range(4000)]
    out = []
    for k in range(n):
        if k % 5 and flows:  # on a declared flow
            rule = flows[rnd.randrange(min(len(flows), 2000))]
            a, b = int(rule.source[1:]), int(rule.destination[1:])
            port = rule.ports[0][0]
            src, dst = _host(a, rnd.randrange(2)), _host(b, rnd.randrange(2))
        else:
            (a, ka), (b, kb) = rnd.choice(hosts), rnd.choice(hosts)
            src, dst, port = _host(a, ka), _host(b, kb), rnd.choice((22, 80, 443, 3389, 5432))
        out.append({
            "@timestamp": "2026-11-25T10:00:00.000Z",
            "event": {"type": ["connection", "allowed" if k % 7 else "denied"]},
            "source": {"ip": src, "port": 32768 + k % 28000},
            "destination": {"ip": dst, "port": port},
            "network": {"iana_number": "6"},
        })  # fmt: skip
    return out


def _rate(model: CompiledModel, events: list[dict[str, Any]]) -> float:
    gc.freeze()  # as the commands do after loading a model: its objects live for the run
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for event in events:
            model.place(event)
        best = max(best, len(events) / (time.perf_counter() - started))
    return best


class _LinearScan:
    """The baseline: every zone's network tested with ``ipaddress``, every rule scanned."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.nets = [(ipaddress.ip_network(z["cidrs"][0]), z["name"]) for z in data["zones"]]
        self.rules = [(f["from"], f["to"], f["ports"]) for f in data["flows"]]

    def zone(self, ip: str) -> str | None:
        address = ipaddress.ip_address(ip)
        best = None
        for net, name in self.nets:
            if address in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, name)
        return best[1] if best else None

    def place(self, event: dict[str, Any]) -> bool:
        src, dst = self.zone(event["source"]["ip"]), self.zone(event["destination"]["ip"])
        port = event["destination"]["port"]
        return any(
            s == src and d == dst and any(_port_in(port, p) for p in ports)
            for s, d, ports in self.rules
        )


def _port_in(port: int, spec: int | str) -> bool:
    if isinstance(spec, int):
        return port == spec
    lo, hi = spec.split("-")
    return int(lo) <= port <= int(hi)


def run(scale: float) -> list[Row]:
    rows = []
    zones, flows = max(int(50_000 * scale), 100), max(int(200_000 * scale), 400)
    data = _data(zones, flows)
    started = time.perf_counter()
    model = model_from_data(data, "bench")
    validated = time.perf_counter()
    compile_model(model)
    done = time.perf_counter()
    cond = f"{zones:,} zones, {flows:,} flows; target < 3 s in all"
    rows.append(Row("model validate + check (pydantic, overlaps)", validated - started, "s", cond))
    rows.append(Row("model compile (lookup structures)", done - validated, "s", cond))
    rows.append(Row("model load + compile, total", done - started, "s", cond))

    n = max(int(200_000 * scale), 2000)
    for size in (10, 1_000, 100_000):
        size = max(int(size * min(scale, 1.0)), 10) if size > 10 else size
        compiled = compile_model(model_from_data(_data(size, size * 2), "bench"))
        events = _events(compiled, size, n)
        rows.append(
            Row(
                f"place, {size:,}-zone model",
                _rate(compiled, events),
                "events/s",
                f"{n:,} events, 4k-host working set, 1 core; target >= 500,000/s",
            )
        )
        if size == 1_000:
            baseline = _LinearScan(_data(size, size * 2))
            sample = events[: max(n // 100, 200)]
            started = time.perf_counter()
            for event in sample:
                baseline.place(event)
            rate = len(sample) / (time.perf_counter() - started)
            rows.append(
                Row(
                    "  baseline: linear scan with ipaddress (1,000 zones)",
                    rate,
                    "events/s",
                    f"{len(sample):,} of the same events",
                )
            )
        if size == 100_000 or (scale < 1 and size > 1_000):
            cold = compile_model(model_from_data(_data(size, size * 2), "bench"))
            rnd = random.Random(5)
            fresh = [
                {**e, "source": {"ip": _host(rnd.randrange(size), k), "port": 40000},
                 "destination": {"ip": _host(rnd.randrange(size), k + 1), "port": 443}}
                for k, e in enumerate(events[: n // 2])
            ]  # fmt: skip
            started = time.perf_counter()
            for event in fresh:
                cold.place(event)
            rows.append(
                Row(
                    f"  place, cold caches, {size:,}-zone model",
                    len(fresh) / (time.perf_counter() - started),
                    "events/s",
                    "every address and zone pair new: the bound when caches miss",
                )
            )
    return rows
