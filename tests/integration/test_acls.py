"""Least-privilege Kafka principals on the suite's SASL broker, which runs KRaft's
``StandardAuthorizer`` (tests/support/secured.py): ``admin`` grants the ACL set of
``baldur-audit acls --apply`` to the SCRAM users ``producer``, ``chainer`` and ``reader``, and
nothing else lets them in.

What it proves: the whole pipeline works with exactly these ACLs (the producer library and
``emit`` as the producer, ``chain`` and ``checkpoint`` as the chainer, ``replay``, ``verify``
with its witness check and ``status`` as the reader); the producer cannot read the topic, delete
its records or change its ``retention.ms``; the chainer cannot produce to the ledger topic; no
principal can delete records or change the topic's configuration; and each refusal is Kafka's
authorization error, at once, not a timeout.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from baldur_audit.consumers.kafka.acls import KafkaAcls, least_acls
from tests.support.secured import (
    ADMIN_USER,
    PRINCIPALS,
    SecuredLedger,
    SecuredStack,
    secured_ledger,
    secured_stack,
)

pytestmark = pytest.mark.integration

#: A command that hangs instead of failing fails its test (subprocess timeout), nothing tighter.
BOUND = 90
#: An admin request refused by the authorizer answers at once; this only bounds a hang.
ANSWER = 30
PRINCIPAL_OPTIONS = ("--producer", "User:producer", "--chainer", "User:chainer", "--reader", "User:reader")
#: The report of the ``acls --apply`` that granted the set (by the ``ledger`` fixture).
FIRST_APPLY: dict[str, Any] = {}


@pytest.fixture(scope="module")
def stack() -> Iterator[SecuredStack]:
    """The secured broker and cluster, started once for this file, stopped at its end."""
    with secured_stack() as found:
        yield found


@pytest.fixture(scope="module")
def ledger(stack: SecuredStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredLedger]:
    """One ledger, initialised by the administrator, whose principals hold exactly the ACLs
    that ``acls --apply`` granted (its ``--json`` report is kept in :data:`FIRST_APPLY`)."""
    with secured_ledger(stack, tmp_path_factory.mktemp("acls"), stack.principal_config(ADMIN_USER)) as led:
        done = led.cli("init", timeout=BOUND)
        assert done.returncode == 0, done.stderr
        applied = as_principal(led, ADMIN_USER, "acls", *PRINCIPAL_OPTIONS, "--apply", "--json")
        assert applied.returncode == 0, applied.stderr
        FIRST_APPLY.update(json.loads(applied.stdout))
        yield led


def as_principal(led: SecuredLedger, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``baldur-audit ARGS`` with the Kafka client configuration of ``user``."""
    return led.cli(
        *args, extra_env={"BALDUR_KAFKA_CONFIG": str(led.stack.principal_config(user))}, timeout=BOUND
    )


def admin_client(stack: SecuredStack, user: str) -> AdminClient:
    settings: dict[str, Any] = {
        **stack.client_settings(stack.principal_config(user)),
        "logger": logging.getLogger(__name__),
    }
    return AdminClient(settings)


def refusal(future: Any) -> KafkaError:
    """The error a refused admin request failed with (it must fail, and within ANSWER s)."""
    with pytest.raises(KafkaException) as raised:
        future.result(ANSWER)
    return raised.value.args[0]


def one_line_exit_2(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command ends with (exit 2; before it at most warnings that are
    no concern of this file: the secured PostgreSQL's ledger role owns its tables)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    *before, line = done.stderr.strip().splitlines()
    assert line.startswith("baldur-audit: ") and "Traceback" not in done.stderr, done.stderr
    assert all(" WARNING " in other for other in before), done.stderr
    return line


def expected(led: SecuredLedger) -> list[Any]:
    return least_acls(
        topic=led.topic,
        witness_topic=f"{led.topic}.checkpoints",
        group=led.env["BALDUR_CHAINER_GROUP"],
        producers=["User:producer"],
        chainers=["User:chainer"],
        readers=["User:reader"],
    )


def test_acls_apply_grants_the_least_set_once(ledger: SecuredLedger) -> None:
    first = FIRST_APPLY
    assert first["created"] == len(first["acls"]) == len(expected(ledger)) and first["present"] == 0, first
    again = json.loads(
        as_principal(ledger, ADMIN_USER, "acls", *PRINCIPAL_OPTIONS, "--apply", "--json").stdout
    )
    assert again["created"] == 0 and again["present"] == len(first["acls"]), again
    # What the cluster holds for each principal: exactly the set, and none of the forbidden
    acls = KafkaAcls(
        ledger.stack.bootstrap, config=ledger.stack.client_settings(ledger.stack.principal_config(ADMIN_USER))
    )
    for user in PRINCIPALS:
        held = sorted(
            (b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
            for b in acls.bindings(f"User:{user}")
        )
        wanted = sorted(
            (g.resource.upper(), g.name, g.pattern.upper(), g.operation)
            for g in expected(ledger)
            if g.principal == f"User:{user}"
        )
        assert held == wanted, (user, held)
        assert not {"ALTER", "ALTER_CONFIGS", "DELETE", "ALL"} & {operation for *_, operation in held}


def test_a_principal_cannot_grant_itself_acls(ledger: SecuredLedger) -> None:
    done = as_principal(ledger, "producer", "acls", "--reader", "User:producer", "--apply")
    line = one_line_exit_2(done)
    assert "CLUSTER_AUTHORIZATION_FAILED" in line and "lacks an ACL on the cluster" in line, line


def test_the_pipeline_runs_with_exactly_these_acls(
    ledger: SecuredLedger, caplog: pytest.LogCaptureFixture
) -> None:
    from baldur_audit.producers import AuditTrail

    emitted = as_principal(
        ledger, "producer", "emit", "--actor", "alice", "--action", "update", "--target", "svc.a"
    )
    assert emitted.returncode == 0, emitted.stderr
    trail = AuditTrail.from_env(
        {
            "BALDUR_AUDIT_ENABLED": "true",
            "BALDUR_AUDIT_DURABILITY": "memory",
            "BALDUR_KAFKA_BOOTSTRAP": ledger.stack.bootstrap,
            "BALDUR_AUDIT_TOPIC": ledger.topic,
            "BALDUR_KAFKA_CONFIG": str(ledger.stack.principal_config("producer")),
            "BALDUR_SERVICE_NAME": "payments",
            "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",  # to Kafka, not a local file chain
        }
    )
    try:
        for i in range(2):
            trail.record_change(
                actor="svc", target=f"limit.{i}", before={"v": i}, after={"v": i + 1}, reason="acl test"
            )
        assert trail.flush(60) == 0 and trail.stats.delivered == 2, trail.stats
    finally:
        trail.close()

    chained = as_principal(ledger, "chainer", "chain", "--until-idle", "2", "--json")
    assert chained.returncode == 0, chained.stderr
    assert json.loads(chained.stdout)["sealed"] == 3, chained.stdout
    checkpoint = as_principal(ledger, "chainer", "checkpoint", "--json")
    assert checkpoint.returncode == 0, checkpoint.stderr

    replayed = as_principal(ledger, "reader", "replay", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["consistent"] is True, replayed.stdout
    verified = as_principal(ledger, "reader", "verify", "--json")
    assert verified.returncode == 0, json.loads(verified.stdout)["witness"]
    report = json.loads(verified.stdout)
    assert report["intact"] is True and report["witness"]["status"] == "matched", report
    status = as_principal(ledger, "reader", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["group"]["committed_offset"] == 3, status.stdout
    round_ = as_principal(ledger, "reader", "monitor", "--once", "--json")
    assert "AUTHORIZATION" not in round_.stdout + round_.stderr.upper(), round_.stderr
    assert json.loads(round_.stdout)["exit_code"] == 0, round_.stdout


def test_the_producer_cannot_read_the_topic(ledger: SecuredLedger) -> None:
    consumer = Consumer(
        {
            **ledger.stack.client_settings(ledger.stack.principal_config("producer")),
            "group.id": "baldur-audit-replay-by-the-producer",
            "enable.auto.commit": False,
            "logger": logging.getLogger(__name__),
        }
    )
    try:
        consumer.assign([TopicPartition(ledger.topic, 0, 0)])
        codes: list[int] = []
        for _ in range(int(ANSWER / 0.5)):  # a bound on a hang: Kafka answers within a second
            for message in consumer.consume(10, 0.5):
                error = message.error()
                assert error is not None, "the producer read a record"
                codes.append(error.code())
            if KafkaError.TOPIC_AUTHORIZATION_FAILED in codes:
                break
        assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes
    finally:
        consumer.close()
    # and replay, as the producer, stops at the refusal in one line (no wait for records)
    line = one_line_exit_2(as_principal(ledger, "producer", "replay"))
    assert "authorization failed" in line and "lacks an ACL" in line, line


def test_a_reader_cannot_join_the_chainer_group(ledger: SecuredLedger) -> None:
    line = one_line_exit_2(as_principal(ledger, "reader", "chain", "--until-idle", "1"))
    assert "Group authorization failed" in line and "lacks an ACL on the group" in line, line


def test_the_chainer_cannot_produce_to_the_ledger_topic(ledger: SecuredLedger) -> None:
    done = as_principal(
        ledger, "chainer", "emit", "--actor", "mallory", "--action", "update", "--target", "svc.a"
    )
    line = one_line_exit_2(done)
    assert "TOPIC_AUTHORIZATION_FAILED" in line, line
    # the client itself: the delivery report is the authorization error
    producer = Producer(
        {
            **ledger.stack.client_settings(ledger.stack.principal_config("chainer")),
            "enable.idempotence": True,
            "logger": logging.getLogger(__name__),
        }
    )
    outcome: list[Any] = []
    producer.produce(ledger.topic, value=b"forged", on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(ANSWER)
    assert outcome and outcome[0] is not None, outcome
    assert outcome[0].code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    ), outcome


@pytest.mark.parametrize("user", PRINCIPALS)
def test_no_principal_can_delete_records(ledger: SecuredLedger, user: str) -> None:
    admin = admin_client(ledger.stack, user)
    future = admin.delete_records([TopicPartition(ledger.topic, 0, 1)], request_timeout=ANSWER)
    error = refusal(next(iter(future.values())))
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


@pytest.mark.parametrize("user", PRINCIPALS)
def test_no_principal_can_delete_the_topic(ledger: SecuredLedger, user: str) -> None:
    admin = admin_client(ledger.stack, user)
    error = refusal(admin.delete_topics([ledger.topic], request_timeout=ANSWER)[ledger.topic])
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


@pytest.mark.parametrize("user", PRINCIPALS)
def test_no_principal_can_change_retention(ledger: SecuredLedger, user: str) -> None:
    admin = admin_client(ledger.stack, user)
    entry = ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, ledger.topic, incremental_configs=[entry])
    error = refusal(admin.incremental_alter_configs([resource], request_timeout=ANSWER)[resource])
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    # and the topic still keeps its records for ever (the client kept alive until it answers)
    owner = admin_client(ledger.stack, ADMIN_USER)
    described = owner.describe_configs([ConfigResource(ResourceType.TOPIC, ledger.topic)])
    assert next(iter(described.values())).result(ANSWER)["retention.ms"].value == "-1"
