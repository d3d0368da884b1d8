"""Operator-facing behaviour: topic validation, keys, signals, group status."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid

import pytest

from tests.support.stack import BOOTSTRAP, TEST_KEY, Ledger

pytestmark = pytest.mark.integration


def _create_topic(name: str, *, partitions: int, config: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)])[
        name
    ].result(30)


@pytest.mark.parametrize(
    ("partitions", "config", "message"),
    [
        (2, {}, "has 2 partitions; the ledger needs exactly 1"),
        (1, {"cleanup.policy": "compact"}, "cleanup.policy=compact"),
    ],
)
def test_init_refuses_a_topic_the_ledger_cannot_use(
    ledger: Ledger, partitions: int, config: dict[str, str], message: str
) -> None:
    from confluent_kafka.admin import AdminClient

    topic = f"baldur.test.bad.{uuid.uuid4().hex[:8]}"
    _create_topic(topic, partitions=partitions, config=config)
    try:
        done = ledger.cli("--topic", topic, "--ledger-id", "other", "init")
        assert done.returncode == 2
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        AdminClient({"bootstrap.servers": BOOTSTRAP}).delete_topics([topic])


def test_init_is_idempotent_and_creates_the_topic_as_specified(ledger: Ledger) -> None:
    result = ledger.cli_json("init")
    assert result["migrations_applied"] == [] and result["topic_created"] is False
    assert result["topic_config"]["retention.ms"] == "-1"
    assert result["topic_config"]["cleanup.policy"] == "delete"
    assert result["topic_config"]["message.timestamp.type"] == "LogAppendTime"


def test_topics_created_back_to_back_are_validated_right_away() -> None:
    """Regression (seen in CI, two test workers creating topics at once): ``init`` describes
    the topic right after creating it, and in KRaft the broker may not know the new topic yet
    ("unknown topic or partition"). ensure_topic now waits for it, bounded. (The race does not
    show on every run; this exercises the path 16 times, 4 at a time.)"""
    from concurrent.futures import ThreadPoolExecutor

    from baldur_audit.consumers.kafka.admin import KafkaTopicAdmin

    admin = KafkaTopicAdmin(BOOTSTRAP)
    topics = [f"baldur.test.create-{uuid.uuid4().hex[:10]}" for _ in range(16)]
    try:
        with ThreadPoolExecutor(4) as pool:
            reports = list(pool.map(admin.ensure_topic, topics))
        assert [(r.created, r.partitions, r.config["cleanup.policy"]) for r in reports] == [
            (True, 1, "delete")
        ] * len(topics)
    finally:
        from contextlib import suppress

        from baldur_audit.schemas.errors import BrokerUnavailable

        for topic in topics:
            with suppress(BrokerUnavailable):  # best effort; never hide the test's own failure
                admin.delete_topic(topic)


def test_entries_sealed_with_an_unknown_key_are_unverifiable(ledger: Ledger) -> None:
    ledger.produce_events(3)
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 3
    other = {"BALDUR_SECRETS_AUDIT_SIGNING_KEY": "hex:" + "77" * 32}
    done = ledger.cli("verify", "--json", extra_env=other)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["intact"] is False and report["first_break"]["kind"] == "unverifiable"
    # A chainer with the wrong key refuses to extend the chain.
    ledger.produce_events(1, start=50)
    done = ledger.cli("chain", "--until-idle", "1", extra_env=other)
    assert done.returncode == 2 and "is not this ledger's key" in done.stderr


def test_development_key_is_generated_once_privately_and_never_printed(ledger: Ledger) -> None:
    env = dict(ledger.env)
    env.pop("BALDUR_SECRETS_AUDIT_SIGNING_KEY")
    topic = f"baldur.test.devkey.{uuid.uuid4().hex[:8]}"
    ledger.env = {**env, "BALDUR_AUDIT_TOPIC": topic, "BALDUR_LEDGER_ID": topic}
    import psycopg

    from tests.support.stack import with_dbname

    dbname = ledger.dbname + "_dk"
    with ledger.owner() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    ledger.env["BALDUR_SQL_DSN"] = with_dbname(ledger.dsn, dbname)
    ledger.env["BALDUR_SQL_OWNER_DSN"] = with_dbname(ledger.owner_dsn, dbname)
    try:
        first = ledger.cli("init")
        assert first.returncode == 0, first.stderr
        assert "development signing key" in first.stderr
        key_file = ledger.state_dir / "dev-signing-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        secret = key_file.read_text().strip()
        second = ledger.cli("init", "--json")
        assert second.returncode == 0
        assert key_file.read_text().strip() == secret  # generated once
        for output in (first.stdout, first.stderr, second.stdout, second.stderr):
            assert secret not in output and secret[4:] not in output
    finally:
        from confluent_kafka.admin import AdminClient

        from tests.support.stack import ADMIN_DSN

        AdminClient({"bootstrap.servers": BOOTSTRAP}).delete_topics([topic])
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def test_sigterm_stops_the_chainer_cleanly_and_status_shows_the_group(ledger: Ledger) -> None:
    ledger.produce_events(20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "baldur_audit.consumers", "chain", "--session-timeout", "3", "--json"],
        env=ledger.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = {}
        while time.monotonic() < deadline:
            status = ledger.cli_json("status")
            if status["head"]["seq"] == 20 and status["group"]["members"]:
                break
            time.sleep(0.5)
        assert status["head"]["seq"] == 20 and status["lag"] == 0
        members = status["group"]["members"]
        assert len(members) == 1 and members[0]["assignment"] == [f"{ledger.topic}[0]"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["sealed"] == 20
    assert TEST_KEY[4:] not in out + err
