"""The normalized topic's key: the connection's initiator, and hot initiators split by
the host their connection goes to."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from detector.model import compile_model, load_model
from streams.normalize import HotKeys, score_key

ROOT = Path(__file__).resolve().parents[3]
TIERS = compile_model(load_model(ROOT / "detector" / "assets" / "models" / "three_tier_vpc.yaml"))


def _flow(src: str, dst: str, sport: int, dport: int) -> dict[str, object]:
    return {
        "@timestamp": "2026-11-25T10:00:00Z",
        "event": {"kind": "event", "category": ["network"], "type": ["connection", "allowed"]},
        "source": {"ip": src, "port": sport},
        "destination": {"ip": dst, "port": dport},
        "network": {"transport": "tcp", "iana_number": "6"},
    }


def test_a_connections_request_and_reply_share_the_initiators_key() -> None:
    request = _flow("10.0.1.10", "10.0.2.20", 40000, 8080)
    reply = _flow("10.0.2.20", "10.0.1.10", 8080, 40000)
    assert score_key(TIERS, request) == score_key(TIERS, reply) == b"10.0.1.10"


def test_a_hot_initiator_spreads_by_destination_and_the_rest_keep_one_key() -> None:
    hot = HotKeys(share=0.05, spread=6, window=20_000)
    keys: Counter[bytes] = Counter()
    for i in range(30_000):
        src = "10.0.0.2" if i % 10 < 3 else f"10.0.1.{i % 200}"  # one host opens 30%
        dst = f"203.0.113.{i % 97}"
        request = _flow(src, dst, 40000 + i % 1000, 53)
        reply = _flow(dst, src, 53, 40000 + i % 1000)
        key = score_key(TIERS, request, hot)
        assert score_key(TIERS, reply, hot) == key  # replies follow their request
        keys[key] += 1
    assert hot.hot() == [b"10.0.0.2"]
    subkeys = {k for k in keys if k.startswith(b"10.0.0.2~")}
    assert len(subkeys) == 6  # its connections spread over every sub-key
    assert keys[b"10.0.0.2"] <= 1_000  # only before anything could be hot
    assert all(b"~" not in k for k in keys if not k.startswith(b"10.0.0.2"))


def test_a_host_that_cools_down_is_one_key_again() -> None:
    hot = HotKeys(share=0.2, spread=4, window=1_000, least=100)
    for i in range(2_000):
        hot.key(b"10.0.0.2" if i % 2 else b"10.0.1.%d" % (i % 50), b"10.9.9.%d" % (i % 7))
    assert hot.hot() == [b"10.0.0.2"]
    for i in range(5_000):
        hot.key(b"10.0.1.%d" % (i % 50), b"10.9.9.9")
    assert hot.hot() == []
    assert hot.key(b"10.0.0.2", b"10.9.9.9") == b"10.0.0.2"
