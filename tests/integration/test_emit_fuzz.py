"""Fuzzing ``baldur-audit emit --file`` end to end (bad input): generated good, blank
and bad JSON lines through the real CLI into a fresh topic, then ``chain --until-idle``.

Every line is accounted for: ``emit`` names the first bad line and sends nothing; the test
blanks that line and runs ``emit`` again (line numbers stay the same), until every bad line
has been named, in order, and the rest is sent in one go. Then each good line is sealed as
one event whose payload decodes to what the line said after redaction and masking, whose
columns show the same, and no planted secret is in the topic or the tables.
"""

from __future__ import annotations

import decimal
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.fuzz import (
    FAULTS,
    FAULTS_SCALE,
    JsonlFile,
    expected_fields,
    jsonl_file,
    sealed_fields,
)
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

#: Every planted secret starts so (tests/support/fuzz.py SECRET).
SECRET_PREFIX = b"S3cr"
COLUMNS = (
    "event_id",
    "kind",
    "actor",
    "actor_type",
    "action",
    "target",
    "before",
    "after",
    "reason",
    "source",
    "trace_id",
    "client_ip",
    "attributes",
    "payload",
)


def topic_end(ledger: Ledger) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": ledger.bootstrap, "group.id": "fuzz-emit-probe", "enable.auto.commit": False}
    )
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(ledger.topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def topic_bytes(ledger: Ledger) -> bytes:
    """Every value and header byte in the ledger's topic."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": ledger.bootstrap, "group.id": "fuzz-emit-reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(ledger.topic, 0, 0)])
    found = []
    for _ in range(30):
        messages = consumer.consume(500, timeout=1.0)
        if not messages:
            break
        for message in messages:
            found.append(
                (message.value() or b"") + b"".join(value or b"" for _, value in message.headers() or [])
            )
    consumer.close()
    return b"".join(found)


def as_decimals(value: Any) -> Any:
    """``value`` with every number as a Decimal: jsonb shows 1e+308 as 1000…0 (an integer)."""
    if isinstance(value, dict):
        return {key: as_decimals(child) for key, child in value.items()}
    if isinstance(value, list):
        return [as_decimals(child) for child in value]
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return decimal.Decimal(value)
    return value


def emit_until_sent(ledger: Ledger, file: JsonlFile, path: Path) -> list[str]:
    """Run ``emit --file`` until it exits 0, blanking each bad line it names; returns the ids."""
    lines = list(file.lines)
    named: list[int] = []
    end = topic_end(ledger)
    for _ in range(len(file.bad) + 1):
        path.write_bytes(JsonlFile(lines, file.items, {}, file.final_newline).content)
        done = ledger.cli("emit", "--file", str(path))
        if done.returncode == 0:
            break
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        message = done.stderr.strip().splitlines()
        assert len(message) == 1, done.stderr
        found = re.match(r"baldur-audit: line (\d+): ", message[0])
        assert found, message[0]
        named.append(int(found.group(1)))
        lines[named[-1] - 1] = b""
        assert done.stdout == "" and topic_end(ledger) == end  # nothing was sent
    assert named == sorted(file.bad), (named, file.bad)  # every bad line, first first
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@settings(
    max_examples=3 * (FAULTS_SCALE if FAULTS else 1),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(file=jsonl_file(min_lines=6, max_lines=16, kinds=("good", "good", "good", "blank", "bad", "bad")))
def test_every_line_is_named_as_bad_or_sealed_as_sent(ledger: Ledger, file: JsonlFile) -> None:
    # One ledger for all examples: each example's rows are those after the current head.
    with ledger.app() as conn:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM audit_entries").fetchone()[0]
    with tempfile.TemporaryDirectory() as folder:
        ids = emit_until_sent(ledger, file, Path(folder) / "events.jsonl")
    assert len(ids) == len(file.good)

    chained = ledger.cli_json("chain", "--until-idle", "1")
    assert chained["events"] == len(file.good) and chained["rejected"] == 0, chained
    with ledger.app() as conn:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM audit_entries WHERE seq > %s ORDER BY seq", (head,)
        ).fetchall()
    assert len(rows) == len(file.good)
    for item, event_id, values in zip(file.good, ids, rows, strict=True):
        row: dict[str, Any] = dict(zip(COLUMNS, values, strict=True))
        expected = expected_fields(item)
        assert str(row["event_id"]) == event_id and row["kind"] == "event"
        assert sealed_fields(bytes(row["payload"])) == expected  # the exact sealed bytes
        for name in ("before", "after"):  # jsonb: compared as values
            assert as_decimals(row[name]) == as_decimals(
                None if expected[name] is None else json.loads(expected[name])
            )
        assert row["attributes"] == expected["attributes"]
        assert {
            name: row[name]
            for name in (
                "actor",
                "actor_type",
                "action",
                "target",
                "reason",
                "source",
                "trace_id",
                "client_ip",
            )
        } == {
            name: expected[name]
            for name in (
                "actor",
                "actor_type",
                "action",
                "target",
                "reason",
                "source",
                "trace_id",
                "client_ip",
            )
        }

    assert SECRET_PREFIX not in topic_bytes(ledger)
    with ledger.admin() as conn:
        dump = conn.execute("SELECT coalesce(string_agg(t::text, '|'), '') FROM audit_entries t").fetchone()[
            0
        ]
    assert SECRET_PREFIX.decode() not in dump
    assert ledger.cli_json("verify")["intact"] is True
