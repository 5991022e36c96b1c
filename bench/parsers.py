"""Parser throughput on one core, each beside a naive baseline, and memory in the input size.

The naive baseline is what a first version would write: split the record,
validate one pydantic model per record, ``ipaddress`` for addresses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from bench import Row
from detector.files import iter_records
from detector.parsers import ParseOptions, make_parser


def _vpc(i: int) -> bytes:
    return (f"2 123456789010 eni-1235b8ca123456789 10.0.{i % 250}.{i % 200 + 1} 172.31.16.21 "
            f"{20000 + i % 30000} 443 6 20 4249 {1700000000 + i // 100} {1700000060 + i // 100} "
            f"{'ACCEPT' if i % 7 else 'REJECT'} OK").encode()  # fmt: skip


def _iptables(i: int) -> bytes:
    return (
        f"Nov 25 09:{i // 60 % 60:02d}:{i % 60:02d} web-{i % 8} kernel: DROP-IN: IN=eth0 OUT= "
        "MAC=02:42:ac:11:00:02:02:42:ac:11:00:01:08:00 "
        f"SRC=198.51.{i % 250}.23 DST=10.0.1.10 LEN=60 TOS=0x00 PREC=0x00 TTL=49 ID={i % 65536} "
        f"DF PROTO=TCP SPT={1024 + i % 60000} DPT=3389 WINDOW=29200 RES=0x00 SYN URGP=0"
    ).encode()


_CALICO = {
    "start_time": 1764064800, "end_time": 1764065100, "source_ip": "10.65.1.4",
    "source_name": "-", "source_name_aggr": "frontend-7d9f8b-*", "source_namespace": "shop",
    "source_type": "wep", "source_labels": {"labels": ["app=frontend", "tier=web"]},
    "source_port": None, "dest_ip": "10.65.2.9", "dest_name": "-",
    "dest_name_aggr": "payments-5f6c-*", "dest_namespace": "pci", "dest_type": "wep",
    "dest_labels": {"labels": ["app=payments", "compliance=pci"]}, "dest_port": 8443,
    "proto": "tcp", "action": "allow", "reporter": "src",
    "policies": {"all_policies": ["0|default|pci/default.allow-frontend|allow|0"]},
    "bytes_in": 5200, "bytes_out": 1800, "packets_in": 12, "packets_out": 10, "num_flows": 3,
}  # fmt: skip


def _calico(i: int) -> bytes:
    return json.dumps(
        {**_CALICO, "source_ip": f"10.65.{i % 250}.4", "end_time": 1764065100 + i}
    ).encode()


class _NaiveFlow(BaseModel):
    """The baseline: one model per record, addresses through ``ipaddress``."""

    timestamp: str
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    src_port: int | None = Field(default=None, ge=0, le=65535)
    dst_port: int | None = Field(default=None, ge=0, le=65535)
    protocol: str
    bytes: int | None = Field(default=None, ge=0)
    packets: int | None = Field(default=None, ge=0)
    action: str


def _naive_vpc(raw: bytes) -> dict[str, Any]:
    f = raw.decode().split(" ")
    from datetime import UTC, datetime

    return _NaiveFlow(
        timestamp=datetime.fromtimestamp(int(f[11]), UTC).isoformat(),
        src=ipaddress.ip_address(f[3]), dst=ipaddress.ip_address(f[4]),
        src_port=int(f[5]), dst_port=int(f[6]), protocol=f[7], bytes=int(f[9]),
        packets=int(f[8]), action=f[12],
    ).model_dump(mode="json")  # fmt: skip


def _naive_kv(raw: bytes) -> dict[str, Any]:
    text = raw.decode()
    kv = dict(t.split("=", 1) for t in text[text.index("IN=") :].split() if "=" in t)
    return _NaiveFlow(
        timestamp=text[:15], src=ipaddress.ip_address(kv["SRC"]),
        dst=ipaddress.ip_address(kv["DST"]), src_port=int(kv["SPT"]), dst_port=int(kv["DPT"]),
        protocol=kv["PROTO"], action=text.split("kernel: ")[1].split(":")[0],
    ).model_dump(mode="json")  # fmt: skip


def _naive_json(raw: bytes) -> dict[str, Any]:
    d = json.loads(raw)
    return _NaiveFlow(
        timestamp=str(d["end_time"]), src=ipaddress.ip_address(d["source_ip"]),
        dst=ipaddress.ip_address(d["dest_ip"]), src_port=d["source_port"],
        dst_port=d["dest_port"], protocol=d["proto"], bytes=d["bytes_in"] + d["bytes_out"],
        packets=d["packets_in"] + d["packets_out"], action=d["action"],
    ).model_dump(mode="json")  # fmt: skip


def _rate(fn: Callable[[bytes], object], records: list[bytes]) -> float:
    best = 0.0
    for _ in range(3):  # best of three: the machine's other core may be busy
        started = time.perf_counter()
        for raw in records:
            fn(raw)
        best = max(best, len(records) / (time.perf_counter() - started))
    return best


def _memory(n_small: int, n_large: int) -> tuple[float, float]:
    """tracemalloc peak (KiB) parsing a file of n_small and of n_large VPC records."""
    peaks = []
    for n in (n_small, n_large):
        with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as f:
            for i in range(n):
                f.write(_vpc(i) + b"\n")
        parser = make_parser("auto", ParseOptions(reference_time=2e9))
        tracemalloc.start()
        for _, raw in iter_records(f.name):
            parser.parse(raw)
        peaks.append(tracemalloc.get_traced_memory()[1] / 1024)
        tracemalloc.stop()
        os.unlink(f.name)
    return peaks[0], peaks[1]


def run(scale: float) -> list[Row]:
    n = max(int(100_000 * scale), 1000)
    opts = ParseOptions(reference_time=2e9)
    rows = []
    cases = (
        ("vpcflow", "VPC v2 default lines", _vpc, _naive_vpc, 250_000),
        ("iptables", "iptables kernel lines (RFC 3164)", _iptables, _naive_kv, 150_000),
        ("calico", "Calico flow-log JSON", _calico, _naive_json, 120_000),
    )
    for family, label, make, naive, target in cases:
        records = [make(i) for i in range(n)]
        parser = make_parser(family, opts)
        ours = _rate(parser.parse, records)
        base = _rate(naive, records)
        cond = f"{n:,} records, 1 core, to ECS dict; target >= {target:,}/s"
        rows.append(Row(f"parse {label}", ours, "records/s", cond))
        rows.append(
            Row(
                f"  baseline: naive pydantic+ipaddress ({family})",
                base,
                "records/s",
                f"same records; segwatch is {ours / base:.1f}x",
            )
        )
    small, large = _memory(n // 10, n)
    rows.append(
        Row(
            "parse memory peak, file of N/10 records",
            small,
            "KiB",
            f"N/10 = {n // 10:,} VPC lines, streamed from a file (tracemalloc)",
        )
    )
    rows.append(
        Row(
            "parse memory peak, file of N records",
            large,
            "KiB",
            f"N = {n:,}; growth is the bounded caches (<= 100k timestamps), not the input",
        )
    )
    return rows
