"""`baldur-audit emit` and the producer library end to end: secrets redacted and IPs
masked before anything leaves the process, so neither the topic nor the ledger
ever holds them."""

from __future__ import annotations

import json

import pytest

from tests.support.stack import BOOTSTRAP, Ledger

pytestmark = pytest.mark.integration

SENTINEL = "Sentinel-Pa55word-7d1f0c"


def topic_bytes(ledger: Ledger) -> bytes:
    """Every value and header byte in the ledger's topic."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": "emit-test-reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(ledger.topic, 0, 0)])
    found = b""
    for _ in range(20):
        messages = consumer.consume(500, timeout=1.0)
        if not messages:
            break
        for message in messages:
            found += (message.value() or b"") + b"".join(
                (value or b"") for _, value in (message.headers() or [])
            )
    consumer.close()
    return found


def test_emit_from_options_seals_a_redacted_masked_event(ledger: Ledger) -> None:
    done = ledger.cli(
        "emit",
        "--actor",
        "alice",
        "--action",
        "update",
        "--target",
        "db.dsn",
        "--before",
        json.dumps({"password": SENTINEL}),
        "--after",
        f"postgresql://app:{SENTINEL}@db2/app",
        "--reason",
        f"rotate; token={SENTINEL}",
        "--client-ip",
        "192.168.77.12",
        "--trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "--attribute",
        "ticket=OPS-1",
    )
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    assert len(event_id) == 36
    assert ledger.cli_json("chain", "--until-idle", "1")["events"] == 1
    rows = [json.loads(line) for line in ledger.cli("log", "--json").stdout.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["event_id"] == event_id and row["actor"] == "alice" and row["source"] == "cli"
    assert row["client_ip"] == "192.168.***.***"
    assert row["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert row["attributes"] == {"ticket": "OPS-1"}
    assert row["before"] == {"password": "[REDACTED]"}
    # The secret is nowhere: not in the topic (values, headers), not in any table.
    assert SENTINEL.encode() not in topic_bytes(ledger)
    assert b"192.168.77.12" not in topic_bytes(ledger)
    with ledger.admin() as conn:
        dump = conn.execute("SELECT string_agg(t::text, '|') FROM audit_entries t").fetchone()[0]
        payloads = conn.execute(
            "SELECT string_agg(encode(payload, 'escape'), '|') FROM audit_entries"
        ).fetchone()[0]
    assert SENTINEL not in dump and SENTINEL not in payloads
    assert "192.168.77.12" not in dump
    assert ledger.cli_json("verify")["intact"] is True


def test_emit_file_sends_all_lines_or_none(ledger: Ledger, tmp_path) -> None:
    good = [
        {
            "actor": "ci-bot",
            "actor_type": "service",
            "action": "apply",
            "target": f"k8s/deploy/web-{i}",
            "after": {"image": f"web:{i}"},
            "source": "scheduler",
        }
        for i in range(5)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in good) + "\n")
    done = ledger.cli("emit", "--file", str(path))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 5

    # Line 3 is bad: nothing of this file is sent.
    bad = [good[0], good[1], {**good[2], "action": "Not An Action!"}, good[3]]
    path.write_text("\n".join(json.dumps(item) for item in bad) + "\n")
    done = ledger.cli("emit", "--file", str(path))
    assert done.returncode == 2
    assert "line 3" in done.stderr and "action" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    for broken, expected in (
        ("{not json", "line 1"),
        ('{"actor": "a"}', "line 1"),
        ('{"actor":"a","action":"update","target":"t","colour":1}', "unknown key"),
    ):
        path.write_text(broken + "\n")
        done = ledger.cli("emit", "--file", str(path))
        assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 5


def test_emit_usage_errors_exit_2_in_one_line(ledger: Ledger) -> None:
    for args in (
        ("emit",),
        ("emit", "--actor", "a", "--action", "update"),
        ("emit", "--actor", "a", "--action", "update", "--target", "t", "--trace-id", "xyz"),
        ("emit", "--actor", "a", "--action", "update", "--target", "t", "--source", "carrier-pigeon"),
    ):
        done = ledger.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_emit_with_kafka_down_fails_loudly(ledger: Ledger) -> None:
    done = ledger.cli(
        "--bootstrap",
        "127.0.0.1:1",
        "emit",
        "--actor",
        "a",
        "--action",
        "update",
        "--target",
        "t",
        "--timeout",
        "2",
    )
    assert done.returncode == 2
    assert "not acknowledged" in done.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"actor":"a","action":"update","target":"t"}\n\xff\xfe\n', "line 2: not valid UTF-8"),
        (b"[" * 100_000 + b"\n", "line 1"),
        (b'{"actor":"a","action":"update","target":"t","after":NaN}\n', "line 1"),
        (b'{"actor":"a","action":"update","target":"t","after":"x","attributes":{"k":1}}\n', "line 1"),
    ],
)
def test_emit_file_hostile_lines(ledger: Ledger, tmp_path, content: bytes, expected: str) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(content)
    done = ledger.cli("emit", "--file", str(path))
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
