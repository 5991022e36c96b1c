"""segwatch's Community ID (its own, for speed) against the spec: every baseline vector
of ../shared/corpus/communityid, and, as a differential property, the reference
implementation from PyPI (``communityid``, the oracle) on any flow."""

from __future__ import annotations

import ipaddress
import json
import socket

import communityid
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.communityid import community_id, community_id_packed

from .parsers.conftest import CORPUS

pytestmark = pytest.mark.unit

BASELINES = {"baseline_deflt.json": (0, True), "baseline_seed1.json": (1, True),
             "baseline_nob64.json": (0, False)}  # fmt: skip


def _rows() -> list[tuple[str, dict[str, object]]]:
    rows = []
    for name in BASELINES:
        rows += [(name, row) for row in json.loads((CORPUS / "communityid" / name).read_text())]
    return rows


@pytest.mark.parametrize(("name", "row"), _rows(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_baseline_vector(name: str, row: dict[str, object]) -> None:
    seed, b64 = BASELINES[name]
    got = community_id(str(row["saddr"]), str(row["daddr"]), int(row["proto"]),  # type: ignore[call-overload]
                       row.get("sport"), row.get("dport"), seed, b64)  # type: ignore[arg-type]  # fmt: skip
    assert got == row["communityid"], row


def _oracle(src: str, dst: str, proto: int, sport: int | None, dport: int | None,
            seed: int) -> str | None:  # fmt: skip
    try:
        flow = communityid.FlowTuple(proto, src, dst, sport, dport)
    except communityid.FlowTupleError:
        return None  # the reference refuses the tuple
    result: str | None = communityid.CommunityID(seed=seed).calc(flow)
    return result


_V4 = st.ip_addresses(v=4).map(str)
_V6 = st.ip_addresses(v=6).map(str)
_SMALL_V4 = st.sampled_from(["10.0.0.1", "10.0.0.2", "192.0.2.1"])  # equal addresses happen
_PORT = st.integers(0, 65535)
_ICMP_TYPE = st.one_of(st.integers(0, 255), st.sampled_from([0, 8, 13, 14, 128, 129, 139, 140]))


@settings(max_examples=1500, deadline=None)
@given(
    pair=st.one_of(st.tuples(_V4, _V4), st.tuples(_V6, _V6), st.tuples(_SMALL_V4, _SMALL_V4)),
    proto=st.sampled_from([1, 6, 17, 58, 132, 47, 50, 0, 255]),
    sport=st.one_of(st.none(), _PORT),
    dport=st.one_of(st.none(), _PORT),
    icmp=st.tuples(_ICMP_TYPE, st.integers(0, 255)),
    seed=st.sampled_from([0, 0, 1, 65535]),
)
def test_the_same_id_as_the_reference_implementation(
    pair: tuple[str, str], proto: int, sport: int | None, dport: int | None,
    icmp: tuple[int, int], seed: int,
) -> None:  # fmt: skip
    src, dst = pair
    if proto in (1, 58):  # flow logs give the type and code
        sport, dport = icmp if sport is not None else (None, None)
    # other protocols have no ports in the spec (the reference hashes any it is given;
    # a flow log's 0/0 for GRE means none)
    ported = proto in (1, 6, 17, 58, 132)
    expected = _oracle(src, dst, proto, sport if ported else None, dport if ported else None,
                       seed)  # fmt: skip
    assert community_id(src, dst, proto, sport, dport, seed) == expected
    family = socket.AF_INET6 if ipaddress.ip_address(src).version == 6 else socket.AF_INET
    packed = community_id_packed(socket.inet_pton(family, src), socket.inet_pton(family, dst),
                                 proto, sport, dport, seed)  # fmt: skip
    assert packed == expected


def test_a_port_protocol_without_a_port_has_no_id() -> None:
    """Calico's aggregated flows have no source port: no ID, as the reference does."""
    assert community_id("10.0.0.1", "10.0.0.2", 6, None, 443) is None
    assert community_id("10.0.0.1", "10.0.0.2", 17, 5353, None) is None
    assert community_id("10.0.0.1", "10.0.0.2", 6, 1, 443) is not None
