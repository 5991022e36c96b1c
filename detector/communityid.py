"""Community ID v1 flow hashing (https://github.com/corelight/community-id-spec).

The same flow gets the same ID whichever side reported it and whichever tool
computed it (Zeek, Suricata, Elastic's ``community_id`` processor, Hubble).
"""

from __future__ import annotations

import binascii
import hashlib
import socket
import struct

__all__ = ["community_id", "community_id_packed"]

_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10}
_ICMP6_PAIRS = {
    128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
    130: 131, 131: 130, 139: 140, 140: 139, 144: 145, 145: 144,
}  # fmt: skip
_PORT_PROTOCOLS = frozenset((6, 17, 132))
_NEEDS_PORTS = _PORT_PROTOCOLS | {1, 58}  # ICMP's type and code stand for the ports
_PACK_PORTS = struct.Struct("!HH").pack
_SEEDS = {0: b"\x00\x00"}
_PROTO_PAD = {p: bytes((p, 0)) for p in _PORT_PROTOCOLS}
_sha1 = hashlib.sha1
_b64 = binascii.b2a_base64


def community_id_packed(
    src: bytes,
    dst: bytes,
    proto: int,
    src_port: int | None,
    dst_port: int | None,
    seed: int = 0,
    base64: bool = True,
) -> str | None:
    """:func:`community_id` for addresses already packed by ``socket.inet_pton``."""
    if (proto in _PORT_PROTOCOLS and src_port is not None and dst_port is not None and not seed
            and base64):  # fmt: skip
        # the common case, straight-line: ordered endpoints, default seed
        if src > dst or (src == dst and src_port > dst_port):
            src, dst, src_port, dst_port = dst, src, dst_port, src_port
        digest = _sha1(
            b"\0\0" + src + dst + _PROTO_PAD[proto] + _PACK_PORTS(src_port, dst_port),
            usedforsecurity=False,
        ).digest()
        return "1:" + _b64(digest, newline=False).decode()
    if proto in _NEEDS_PORTS and (src_port is None or dst_port is None):
        return None  # the spec's reference refuses the tuple: an ID made up here is ours alone
    one_way = False
    if proto in (1, 58) and src_port is not None:
        pairs = _ICMP4_PAIRS if proto == 1 else _ICMP6_PAIRS
        icmp_type, code = src_port, dst_port
        counterpart = pairs.get(icmp_type)
        if counterpart is None:
            one_way = True
            src_port, dst_port = icmp_type, code
        else:
            src_port, dst_port = icmp_type, counterpart
    elif proto not in _PORT_PROTOCOLS:
        src_port = dst_port = None
    if not one_way and (src, src_port or 0) > (dst, dst_port or 0):
        src, dst, src_port, dst_port = dst, src, dst_port, src_port
    data = _SEEDS.get(seed) or struct.pack("!H", seed)
    data += src + dst + bytes((proto, 0))
    if src_port is not None and dst_port is not None:
        data += _PACK_PORTS(src_port, dst_port)
    digest = _sha1(data, usedforsecurity=False).digest()
    return "1:" + (_b64(digest, newline=False).decode() if base64 else digest.hex())


def community_id(
    src_ip: str,
    dst_ip: str,
    proto: int,
    src_port: int | None,
    dst_port: int | None,
    seed: int = 0,
    base64: bool = True,
) -> str | None:
    """Return ``"1:<base64 sha1>"`` for the flow, or None if an address is not an IP or
    a port protocol (TCP, UDP, SCTP; ICMP's type and code) lacks a port, as the spec's
    reference does.

    For ICMP and ICMPv6, ``src_port`` is the type and ``dst_port`` the code,
    as flow logs report them. ``seed`` and ``base64`` are the spec's options (flow logs
    use the defaults: seed 0, base64).
    """
    try:
        family = socket.AF_INET6 if ":" in src_ip else socket.AF_INET
        src = socket.inet_pton(family, src_ip)
        dst = socket.inet_pton(family, dst_ip)
    except (OSError, ValueError):
        return None
    return community_id_packed(src, dst, proto, src_port, dst_port, seed, base64)
