"""A traffic simulator for a model: benign flows with the model's declared
dependencies, daily and weekly rhythm, DNS and a little noise, written as real
flow-log records, with named attack scenarios and their ground truth.

Benign traffic: every allowed flow of the model (DNS included) is a service;
each service carries a share of the traffic, between a fixed pool of hosts per
zone, at a rate that follows office hours (full from 08:00 to 19:00 UTC on
weekdays, 30% in the evening, 10% at night, 20% at weekends). Replies are
logged too, as VPC flow logs do, and 0.2% of flows are the Internet's
background noise: probes of internet-facing hosts on random ports, rejected.
Simulated time runs as fast as the machine allows.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from detector.errors import DetectorError
from detector.model.compile import CompiledModel
from detector.model.schema import INTERNET, SENSITIVITY_ORDER, Zone

__all__ = ["SCENARIOS", "Label", "SimulationError", "Simulator"]

FORMATS = ("vpcflow", "calico", "iptables", "zeek")  # the families the simulator writes
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SimulationError(DetectorError):
    """A simulation that cannot be made as asked, and why."""


@dataclass
class Host:
    ip: str
    zone: str
    k8s: tuple[str, tuple[tuple[str, str], ...]] | None = None  # namespace, labels


@dataclass
class Flow:
    """One simulated connection (a record, or two with the reply)."""

    start: float
    src: Host
    dst: Host
    port: int
    proto: int
    nbytes: int
    packets: int
    accepted: bool = True
    sport: int = 0


@dataclass
class Label:
    """Ground truth for one injected scenario: the records (1-based lines) it wrote."""

    scenario: str
    description: str
    start: float
    end: float
    lines: list[int] = field(default_factory=list)
    expect: str = ""  # a reason the detection must carry

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__


def _rhythm(when: float) -> float:
    t = datetime.fromtimestamp(when, UTC)
    if t.weekday() >= 5:
        return 0.2
    if 8 <= t.hour < 19:
        return 1.0
    return 0.3 if 19 <= t.hour < 23 or t.hour == 7 else 0.1


class Simulator:
    """Writes simulated records for one model."""

    def __init__(self, model: CompiledModel, family: str, seed: int = 1) -> None:
        if family not in FORMATS:
            raise SimulationError(f"family {family!r}: one of {', '.join(FORMATS)}")
        self.model = model
        self.family = family
        self.rnd = random.Random(seed)
        self.hosts: dict[str, list[Host]] = {}
        self.spare: dict[str, list[Host]] = {}  # addresses of the zone benign traffic never uses
        for index, zone in enumerate(model.zones.values()):
            self.hosts[zone.name], self.spare[zone.name] = self._pool(zone, index)
        public = [f"203.0.113.{i}" for i in range(1, 200)] + [
            f"198.51.100.{i}" for i in range(1, 200)
        ]  # the Internet: the documentation ranges, less what the model's zones claim
        self.public = [Host(ip, INTERNET) for ip in public if model.zone_of_ip(ip) == INTERNET]
        self.hosts[INTERNET] = self.public
        self.services = self._services()
        if not self.services:
            raise SimulationError("the model allows no flow to simulate")

    def _pool(self, zone: Zone, index: int) -> tuple[list[Host], list[Host]]:
        v4 = [n for n in zone.cidrs if n.version == 4]
        if v4:
            net = v4[0]
            addresses = [
                str(a)
                for a in (list(net.hosts()) if net.num_addresses > 2 else [net.network_address])[
                    :300
                ]
            ]
            cut = min(len(addresses), max(1, min(12, len(addresses) // 4)))
            used = [Host(a, zone.name) for a in addresses[:cut]]
            spare = [Host(a, zone.name) for a in addresses[cut:]] or used
            return used, spare
        if not zone.kubernetes or self.family != "calico":
            raise SimulationError(
                f"zone {zone.name} has no IPv4 network: its workloads can only be simulated "
                "with --family calico (flow logs that carry Kubernetes labels)"
            )
        sel = zone.kubernetes[0]
        namespace = sel.namespaces[0] if sel.namespaces else f"ns-{zone.name}"
        labels = dict(sel.pod_selector.match_labels) if sel.pod_selector else {}
        for expr in sel.pod_selector.match_expressions if sel.pod_selector else ():
            if expr.operator == "In":
                labels[expr.key] = expr.values[0]
            elif expr.operator == "Exists":
                labels[expr.key] = "x"
        meta = (namespace, tuple(sorted(labels.items())))
        base = ipaddress.IPv4Address("10.240.0.0") + (index << 8)
        hosts = [Host(str(base + i + 1), zone.name, meta) for i in range(250)]
        return hosts[:12], hosts[12:]

    def _services(self) -> list[tuple[str, str, int, int]]:
        out = []
        for rule in self.model.rules:
            sources = [z for z in self.model.zones] if rule.source == "*" else [rule.source]
            for src in sources:
                dst = rule.destination
                if dst == "*" or dst not in self.hosts:
                    continue
                proto = rule.protocols[0] if rule.protocols else 6
                proto = 6 if proto in (1, 58) else proto  # ICMP has no ports: simulate TCP
                port = rule.ports[0][0] if rule.ports else 443
                out.append((src, dst, port, proto))
        return out

    # --- benign traffic --------------------------------------------------------------

    def benign(self, start: float, duration: float, rate: float) -> Iterator[Flow]:
        """Flows in time order, ``rate`` per second on average at full activity."""
        rnd, services, hosts = self.rnd, self.services, self.hosts
        now, end = start, start + duration
        expo, choice, randint = rnd.expovariate, rnd.choice, rnd.randint
        facing = [h for z in self.model.zones.values() if z.tags.internet_facing
                  for h in hosts.get(z.name, ())]  # fmt: skip
        while True:
            factor = _rhythm(now)
            now += expo(rate * factor)
            if now >= end:
                return
            if facing and rnd.random() < 0.002:  # background noise: probes from the Internet
                yield Flow(now, choice(self.public), choice(facing), randint(1, 65535), 6, 60, 1,
                           False, randint(1024, 65535))  # fmt: skip
                continue
            src_zone, dst_zone, port, proto = choice(services)
            nbytes = int(rnd.lognormvariate(8, 1.2)) + 60
            yield Flow(
                now,
                choice(hosts[src_zone]),
                choice(hosts[dst_zone]),
                port,
                proto,
                nbytes,
                nbytes // 700 + 1,
                True,
                randint(32768, 60999),
            )

    # --- records ---------------------------------------------------------------------

    def records(self, flow: Flow) -> list[str]:
        """The flow as the family's records: request, and the reply for VPC logs."""
        if self.family == "vpcflow":
            out = [self._vpc(flow.src.ip, flow.dst.ip, flow.sport, flow.port, flow)]
            if flow.accepted:
                out.append(self._vpc(flow.dst.ip, flow.src.ip, flow.port, flow.sport, flow))
            return out
        if self.family == "iptables":
            return [self._iptables(flow)]
        if self.family == "zeek":
            return [self._zeek(flow)]
        return [self._calico(flow)]

    def _vpc(self, src: str, dst: str, sport: int, dport: int, f: Flow) -> str:
        t = int(f.start)
        action = "ACCEPT" if f.accepted else "REJECT"
        return (
            f"2 123456789012 eni-0a1b2c3d4e5f60718 {src} {dst} {sport} {dport} {f.proto} "
            f"{f.packets} {f.nbytes} {t} {t + 30} {action} OK"
        )

    def _iptables(self, f: Flow) -> str:
        t = datetime.fromtimestamp(f.start, UTC)
        stamp = f"{_MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S}"
        prefix = "ACCEPT-FWD" if f.accepted else "DROP-FWD"
        proto = {6: "TCP", 17: "UDP"}.get(f.proto, "TCP")
        tail = "WINDOW=64240 RES=0x00 SYN URGP=0" if proto == "TCP" else "LEN=40"
        return (
            f"{stamp} fw-1 kernel: {prefix}: IN=eth0 OUT=eth1 SRC={f.src.ip} DST={f.dst.ip} "
            f"LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=1 DF PROTO={proto} SPT={f.sport} "
            f"DPT={f.port} {tail}"
        )

    def _zeek(self, f: Flow) -> str:
        """A conn.log JSON line: the originator is the flow's source; refused TCP is REJ,
        unanswered UDP S0."""
        transport = {6: "tcp", 17: "udp", 1: "icmp"}.get(f.proto, "tcp")
        state = "SF" if f.accepted else ("REJ" if transport == "tcp" else "S0")
        uid = "C" + hashlib.blake2b(f"{f.start}{f.src.ip}{f.sport}{f.dst.ip}{f.port}".encode(),
                                    digest_size=9).hexdigest()  # fmt: skip
        doc: dict[str, Any] = {
            "ts": round(f.start, 6), "uid": uid, "id.orig_h": f.src.ip, "id.orig_p": f.sport,
            "id.resp_h": f.dst.ip, "id.resp_p": f.port, "proto": transport,
            "duration": 30.0 if f.accepted else 0.0, "conn_state": state,
            "history": "ShADadFf" if f.accepted and transport == "tcp" else "Sr",
            "orig_pkts": f.packets, "orig_ip_bytes": f.nbytes,
            "resp_pkts": f.packets if f.accepted else (1 if state == "REJ" else 0),
            "resp_ip_bytes": f.nbytes // 3 if f.accepted else (40 if state == "REJ" else 0),
            "missed_bytes": 0,
        }  # fmt: skip
        return orjson.dumps(doc).decode()

    def _calico(self, f: Flow) -> str:
        doc: dict[str, Any] = {
            "start_time": int(f.start),
            "end_time": int(f.start) + 30,
            "source_ip": f.src.ip,
            "dest_ip": f.dst.ip,
            "dest_port": f.port,
            "proto": {6: "tcp", 17: "udp"}.get(f.proto, "tcp"),
            "action": "allow" if f.accepted else "deny",
            "reporter": "src",
            "bytes_out": f.nbytes,
            "bytes_in": f.nbytes // 3,
            "packets_out": f.packets,
            "packets_in": f.packets,
            "num_flows": 1,
        }
        for side, host in (("source", f.src), ("dest", f.dst)):
            if host.k8s is not None:
                namespace, labels = host.k8s
                doc[f"{side}_namespace"] = namespace
                doc[f"{side}_labels"] = {"labels": [f"{k}={v}" for k, v in labels]}
                doc[f"{side}_name_aggr"] = f"{host.zone}-*"
                doc[f"{side}_type"] = "wep"
            else:
                doc[f"{side}_type"] = "net"
        return orjson.dumps(doc).decode()

    # --- the run -----------------------------------------------------------------------

    def run(
        self, start: float, duration: float, rate: float, attacks: list[str]
    ) -> Iterator[tuple[str, Label | None]]:
        """(record, label of the scenario it belongs to or None), in time order."""
        injected: list[tuple[Flow, Label]] = []
        for name in attacks:
            scenario = SCENARIOS.get(name)
            if scenario is None:
                raise SimulationError(f"no scenario {name!r}: one of {', '.join(SCENARIOS)}")
            label, flows = scenario(self, start, duration)
            injected += [(flow, label) for flow in flows]
        injected.sort(key=lambda item: item[0].start)
        pending = iter(injected)
        nxt = next(pending, None)
        for flow in self.benign(start, duration, rate):
            while nxt is not None and nxt[0].start <= flow.start:
                for record in self.records(nxt[0]):
                    yield record, nxt[1]
                nxt = next(pending, None)
            for record in self.records(flow):
                yield record, None
        while nxt is not None:
            for record in self.records(nxt[0]):
                yield record, nxt[1]
            nxt = next(pending, None)

    # --- helpers for the scenarios -------------------------------------------------------

    def zones_where(self, test: Callable[[Zone], bool]) -> list[Zone]:
        return [z for z in self.model.zones.values() if test(z)]

    def allowed(self, src: str, dst: str) -> bool:
        return bool(self.model.rules_between(src, dst))

    def forbids(self, src: str, dst: str, proto: int, port: int) -> bool:
        """No rule admits connections src -> dst on ``port`` (and the default denies)."""
        rule, _ = self.model.match(src, dst, proto, port, None)
        return rule is None and self.model.defaults.action == "deny"

    def addresses(self, zone: str) -> list[Host]:
        """Every simulated host of a zone: those benign traffic uses, then the spare ones."""
        return self.hosts[zone] + [h for h in self.spare[zone] if h not in self.hosts[zone]]


# --- scenarios -----------------------------------------------------------------------------

Scenario = Callable[[Simulator, float, float], tuple[Label, list[Flow]]]


def _at(start: float, duration: float, day: int, hour: float) -> float:
    """``hour`` UTC on day ``day`` of the run (clamped into the run)."""
    base = start - start % 86_400 + day * 86_400 + hour * 3600
    return min(max(base, start + 3600), start + duration - 3600)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise SimulationError(message)


def _sensitivity(zone: Zone) -> int:
    return SENSITIVITY_ORDER[zone.tags.sensitivity]


def vendor_pivot(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    vendors = sim.zones_where(lambda z: z.tags.extra.get("role") == "vendor") or sim.zones_where(
        lambda z: z.tags.sensitivity == "low" and not z.tags.internet_facing
    )
    _need(
        bool(vendors),
        "vendor-pivot needs a vendor zone (tags: {role: vendor}) or a "
        "low-sensitivity zone that is not internet-facing",
    )
    source = vendors[0]
    targets = sorted(
        (
            z
            for z in sim.model.zones.values()
            if z.name != source.name
            and not sim.allowed(source.name, z.name)
            and _sensitivity(z) > _sensitivity(source)
        ),
        key=lambda z: -_sensitivity(z),
    )
    _need(
        bool(targets),
        f"vendor-pivot needs a zone more sensitive than {source.name} that it has no flow to",
    )
    target = targets[0]
    t = _at(start, duration, 3, 15)
    attacker = sim.hosts[source.name][0]
    flows = [
        Flow(
            t + i * 90,
            attacker,
            sim.rnd.choice(sim.hosts[target.name]),
            port,
            6,
            4000 + i * 50,
            12,
            True,
            40000 + i,
        )
        for i, port in enumerate([22, 443, 445, 5432, 8443] * 4)
    ]
    label = Label(
        "vendor-pivot",
        f"{source.name} (vendor) -> {target.name}: a zone it has no "
        "flow to, through an enforcement gap",
        flows[0].start,
        flows[-1].start,
        expect="new path",
    )
    return label, flows


def port_scan(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    dmz = sim.zones_where(lambda z: z.tags.internet_facing and bool(z.cidrs))
    _need(bool(dmz), "port-scan needs an internet-facing zone with addresses (the DMZ)")
    others = [z for z in sim.model.zones.values() if z.name != dmz[0].name and z.cidrs]
    _need(bool(others), "port-scan needs another zone with addresses to scan")
    target = max(others, key=_sensitivity)
    t = _at(start, duration, 2, 10)
    attacker, victim = sim.hosts[dmz[0].name][0], sim.hosts[target.name][0]
    ports = list(range(1, 1025))
    sim.rnd.shuffle(ports)
    flows = [
        Flow(t + i * 0.2, attacker, victim, port, 6, 60, 1, i % 10 == 0, 50000 + i)
        for i, port in enumerate(ports[:200])
    ]
    label = Label(
        "port-scan",
        f"a compromised host in {dmz[0].name} scans 200 ports of a host in {target.name}",
        flows[0].start,
        flows[-1].start,
        expect="vertical scan of",
    )
    return label, flows


def offhours_exfil(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    _need(
        sim.family != "iptables",
        "offhours-exfil needs byte counts, which iptables LOG "
        "lines do not have: use --family vpcflow or calico",
    )
    sensitive = sorted(
        sim.zones_where(lambda z: _sensitivity(z) >= 2), key=lambda z: -_sensitivity(z)
    )
    _need(bool(sensitive), "offhours-exfil needs a high or restricted zone (the database)")
    source = sensitive[0]
    t = _at(start, duration, 4, 8.2)  # 02:12 in US Central, 09:12 in Berlin: off-hours for US zones
    host = sim.hosts[source.name][0]
    outside = Host("198.18.7.9", INTERNET)  # not among the benign Internet peers
    flows = [
        Flow(t + i * 300, host, outside, 443, 6, 250_000_000, 180_000, True, 45000 + i)
        for i in range(4)
    ]
    label = Label(
        "offhours-exfil",
        f"bulk transfer out of {source.name} to the Internet at night",
        flows[0].start,
        flows[-1].start,
        expect="bulk transfer",
    )
    return label, flows


def dev_to_prod(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    dev = sim.zones_where(lambda z: z.tags.environment not in (None, "production"))
    prod = sim.zones_where(lambda z: z.tags.environment == "production")
    _need(
        bool(dev) and bool(prod),
        "dev-to-prod needs zones tagged environment: development "
        "(or test) and environment: production",
    )
    closed = [z for z in prod if not sim.allowed(dev[0].name, z.name)]
    _need(bool(closed), f"dev-to-prod: {dev[0].name} may already reach every production zone")
    target = max(closed, key=_sensitivity)
    t = _at(start, duration, 5, 11)
    host = sim.hosts[dev[0].name][0]
    flows = [
        Flow(t + i * 20, host, sim.hosts[target.name][0], 5432, 6, 9000, 20, True, 41000 + i)
        for i in range(10)
    ]
    label = Label(
        "dev-to-prod",
        f"{dev[0].name} opens a new path into {target.name}",
        flows[0].start,
        flows[-1].start,
        expect="new path",
    )
    return label, flows


def tenant_crossing(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    tenants = sim.zones_where(lambda z: z.tags.tenant is not None)
    pairs = [(a, b) for a in tenants for b in tenants if a.tags.tenant != b.tags.tenant]
    _need(bool(pairs), "tenant-crossing needs two zones with different tenant tags")
    a, b = pairs[0]
    t = _at(start, duration, 3, 13)
    flows = [
        Flow(
            t + i * 30,
            sim.hosts[a.name][0],
            sim.hosts[b.name][1 % len(sim.hosts[b.name])],
            8080,
            6,
            3000,
            10,
            True,
            42000 + i,
        )
        for i in range(10)
    ]
    label = Label(
        "tenant-crossing",
        f"tenant {a.tags.tenant} ({a.name}) reaches tenant {b.tags.tenant} ({b.name})",
        flows[0].start,
        flows[-1].start,
        expect="rule tenant-crossing",
    )
    return label, flows


def slow_sweep(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    sources = sim.zones_where(lambda z: _sensitivity(z) <= 1 and not z.tags.internet_facing)
    _need(bool(sources), "slow-sweep needs a low or medium zone to start from")
    spare = [h for name, hosts in sim.spare.items() if name != sources[0].name for h in hosts]
    _need(len(spare) >= 60, "slow-sweep needs 60 addresses to sweep")
    sim.rnd.shuffle(spare)
    t = _at(start, duration, 4, 14)
    host = sim.hosts[sources[0].name][-1]
    flows = [
        Flow(t + i * 240, host, target, 445, 6, 120, 2, i % 5 == 0, 43000 + i)
        for i, target in enumerate(spare[:60])
    ]
    label = Label(
        "slow-sweep",
        f"a host in {sources[0].name} touches tcp/445 on 60 hosts over 4 hours",
        flows[0].start,
        flows[-1].start,
        expect="slow sweep",
    )
    return label, flows


def _flows(start: float, every: float, pairs: list[tuple[Host, Host, int, bool]], proto: int = 6,
           nbytes: int = 600, sport: int = 44000) -> list[Flow]:  # fmt: skip
    """One flow per (source, destination, port, accepted), ``every`` seconds apart."""
    return [Flow(start + i * every, a, b, port, proto, nbytes if ok else 60, 4 if ok else 1, ok,
                 sport + i) for i, (a, b, port, ok) in enumerate(pairs)]  # fmt: skip


def _workstations(sim: Simulator) -> list[Zone]:
    """Zones of many hosts that are not internet-facing, the DNS zone or the most sensitive."""
    dns = sim.model.defaults.dns.zone if sim.model.defaults.dns else None
    return sorted(
        sim.zones_where(lambda z: not z.tags.internet_facing and z.name != dns
                        and _sensitivity(z) <= 1 and len(sim.addresses(z.name)) >= 16),
        key=lambda z: (-_sensitivity(z), z.name),
    )  # fmt: skip


def lateral_movement(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    zones = _workstations(sim)
    _need(bool(zones), "lateral-movement needs a zone of 16 or more hosts that is neither "
          "internet-facing nor the DNS zone (the workstations)")  # fmt: skip
    zone = zones[0]
    hosts = sim.addresses(zone.name)
    attacker, peers = hosts[1], [h for h in hosts if h is not hosts[1]][:15]
    t = _at(start, duration, 2, 2)  # 02:00 UTC on a weekday: a quiet hour
    pairs = [(attacker, peer, 3389 if i % 3 else 445, i % 5 != 4) for i, peer in enumerate(peers)]
    flows = _flows(t, 23, pairs, sport=52000)
    label = Label("lateral-movement", f"a workstation in {zone.name} sweeps 15 of its peers on "
                  "RDP and SMB at night", flows[0].start, flows[-1].start,
                  expect="lateral movement in zone")  # fmt: skip
    return label, flows


def _target(sim: Simulator) -> Zone:
    """The most sensitive zone with addresses (not the DNS zone)."""
    dns = sim.model.defaults.dns.zone if sim.model.defaults.dns else None
    zones = [z for z in sim.model.zones.values() if z.name != dns and sim.hosts.get(z.name)]
    _need(bool(zones), "the scenario needs a zone with addresses to attack")
    return max(zones, key=lambda z: (_sensitivity(z), -list(sim.model.zones).index(z.name)))


def slow_scan(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    target = _target(sim)
    sources = [z for z in _workstations(sim) if z.name != target.name] or [
        z for z in sim.model.zones.values() if z.name != target.name and sim.hosts.get(z.name)
    ]
    _need(bool(sources), "slow-scan needs a zone to scan from")
    attacker, victim = sim.hosts[sources[-1].name][2 % len(sim.hosts[sources[-1].name])], \
        sim.hosts[target.name][-1]  # fmt: skip
    ports = sorted(sim.rnd.sample(range(1, 1025), 40))
    t = _at(start, duration, 1, 20)
    flows = _flows(
        t, 105, [(attacker, victim, p, i % 10 == 3) for i, p in enumerate(ports)], sport=53000
    )  # under one probe a minute: 40 ports in 68 minutes
    label = Label("slow-scan", f"a host in {sources[-1].name} probes 40 ports of a host in "
                  f"{target.name}, under one a minute", flows[0].start, flows[-1].start,
                  expect="vertical scan of")  # fmt: skip
    return label, flows


def blocked_series(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    guarded = [z for z in sim.model.zones.values()
               if _sensitivity(z) >= 2 and sim.hosts.get(z.name)]  # fmt: skip
    pairs = [
        (a, z)
        for z in sorted(guarded, key=lambda z: -_sensitivity(z))
        for a in sim.model.zones.values()
        if a.name != z.name and sim.hosts.get(a.name) and sim.forbids(a.name, z.name, 6, 22)
    ]
    _need(bool(pairs), "blocked-series needs a high or restricted zone that some other zone may "
          "not reach on tcp/22")  # fmt: skip
    source, target = pairs[0]
    attacker = sim.hosts[source.name][3 % len(sim.hosts[source.name])]
    victims = sim.hosts[target.name][:3]
    t = _at(start, duration, 1, 16)
    flows = _flows(
        t, 8, [(attacker, victims[i % len(victims)], 22, False) for i in range(30)], sport=54000
    )  # 30 refused in 4 minutes
    label = Label("blocked-series", f"a host in {source.name} keeps trying SSH into "
                  f"{target.name}: 30 refused in 4 minutes", flows[0].start, flows[-1].start,
                  expect="blocked series")  # fmt: skip
    return label, flows


def pivot_chain(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    target = _target(sim)
    zones = [z for z in sim.model.zones.values() if z.name != target.name and sim.hosts.get(z.name)
             and not z.tags.internet_facing]  # fmt: skip
    # the second host: in the most sensitive zone short of the target's, if there is one
    ranked = sorted(
        zones, key=lambda z: (_sensitivity(z) >= _sensitivity(target), -_sensitivity(z))
    )
    chains = [(a, b) for a in sorted(zones, key=_sensitivity) for b in ranked
              if a.name != b.name and sim.forbids(a.name, b.name, 6, 22)
              and sim.forbids(b.name, target.name, 6, 445)]  # fmt: skip
    _need(
        bool(chains),
        "pivot-chain needs two zones besides the most sensitive one: one that "
        "may not reach the other on tcp/22, which may not reach the most sensitive on tcp/445",
    )
    first, second = chains[0]
    foothold = sim.hosts[first.name][4 % len(sim.hosts[first.name])]
    middle = sim.hosts[second.name][-2 % len(sim.hosts[second.name])]
    t = _at(start, duration, 3, 18)
    hop1 = _flows(t, 40, [(foothold, middle, 22, True)] * 6, nbytes=40_000, sport=55000)
    hop2 = _flows(t + 1800, 30, [(middle, h, 445, True) for h in sim.hosts[target.name][:4]] * 2,
                  nbytes=90_000, sport=56000)  # fmt: skip
    flows = hop1 + hop2
    label = Label("pivot-chain", f"a foothold in {first.name} logs into a host in {second.name} "
                  f"over SSH, which then reaches {target.name} over SMB", flows[0].start,
                  flows[-1].start, expect="new path")  # fmt: skip
    return label, flows


def dns_tunnel(sim: Simulator, start: float, duration: float) -> tuple[Label, list[Flow]]:
    dns = sim.model.defaults.dns
    _need(dns is not None, "dns-tunnel needs a model with a DNS zone (defaults.dns)")
    assert dns is not None
    sources = [z for z in sim.model.zones.values() if z.name != dns.zone and sim.hosts.get(z.name)
               and not z.tags.internet_facing]  # fmt: skip
    _need(bool(sources), "dns-tunnel needs a zone besides the DNS zone")
    host = sim.hosts[sources[0].name][5 % len(sim.hosts[sources[0].name])]
    resolver = Host("198.18.53.53", INTERNET)  # not the model's resolvers
    t = _at(start, duration, 2, 14)
    flows = _flows(t, 2, [(host, resolver, 53, True)] * 300, proto=17, nbytes=240, sport=30000)
    label = Label("dns-tunnel", f"a host in {sources[0].name} sends 300 DNS queries in 10 minutes "
                  "to a resolver on the Internet", flows[0].start, flows[-1].start,
                  expect="unusual DNS volume")  # fmt: skip
    return label, flows


SCENARIOS: dict[str, Scenario] = {
    "vendor-pivot": vendor_pivot,
    "port-scan": port_scan,
    "offhours-exfil": offhours_exfil,
    "dev-to-prod": dev_to_prod,
    "tenant-crossing": tenant_crossing,
    "slow-sweep": slow_sweep,
    "lateral-movement": lateral_movement,
    "slow-scan": slow_scan,
    "blocked-series": blocked_series,
    "pivot-chain": pivot_chain,
    "dns-tunnel": dns_tunnel,
}
