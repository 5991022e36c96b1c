"""`segwatch ship` against the real broker: exact counts, compression, failure exit."""

from __future__ import annotations

import gzip
from pathlib import Path

from confluent_kafka import Consumer
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import KafkaSettings
from streams.topics import TopicSpec, ensure_topics

runner = CliRunner(mix_stderr=False)


def _consume_all(kafka: KafkaSettings, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer({**kafka.client_config(), "group.id": f"t-{topic}",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    out: list[bytes] = []
    idle = 0
    try:
        while len(out) < expected or idle < 3:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                if idle > 30:
                    break
                continue
            assert msg.error() is None, msg.error()
            out.append(msg.value())
            idle = 0
    finally:
        consumer.close()
    return out


def test_ship_delivers_every_record_exactly(
    kafka: KafkaSettings, unique: str, tmp_path: Path
) -> None:
    topic = f"test.ship.{unique}"
    ensure_topics(kafka, [TopicSpec(topic, 3, 1)])
    lines = [f"2 123456789012 eni-1 10.0.{i % 250}.1 10.0.0.2 {1024 + i} 443 6 1 60 "
             f"1764000000 1764000060 ACCEPT OK" for i in range(2500)]  # fmt: skip
    plain = tmp_path / "a.log"
    plain.write_text("\n".join(lines[:2000]) + "\n\n")  # a blank line is not a record
    packed = tmp_path / "b.log.gz"
    packed.write_bytes(gzip.compress(("\n".join(lines[2000:]) + "\n").encode()))
    result = runner.invoke(
        app, ["ship", "-f", "vpcflow", "--topic", topic, str(plain), str(packed)]
    )
    assert result.exit_code == 0, result.stderr
    assert f"2,500 of 2,500 records delivered to {topic}" in result.stderr
    got = _consume_all(kafka, topic, 2500)
    assert sorted(got) == sorted(line.encode() for line in lines)


def test_ship_fails_loudly_when_records_are_not_acknowledged(kafka: KafkaSettings, unique: str,
                                                             tmp_path: Path) -> None:  # fmt: skip
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    result = runner.invoke(app, ["ship", "-f", "vpcflow", "--topic", f"no.such.{unique}",
                                 "--timeout", "5", str(log)])  # fmt: skip
    assert result.exit_code == 1
    assert "0 of 2 records delivered" in result.stderr and "failed:" in result.stderr


def test_ship_refuses_an_unknown_family(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("x\n")
    result = runner.invoke(app, ["ship", "-f", "netflow", str(log)])
    assert result.exit_code == 2 and "is not one of" in result.stderr
