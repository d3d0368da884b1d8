"""The least Kafka ACL set of ``baldur-audit acls``: what each principal gets, what nobody gets,
how principals are checked, and the command's output (no broker: the set is computed, not applied;
tests/integration/test_acls.py applies it on an authorizing broker)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from baldur_audit.consumers.kafka.acls import (
    FORBIDDEN,
    REPLAY_GROUP_PREFIX,
    WITNESS_READER_GROUP,
    kafka_acls_commands,
    least_acls,
    principal,
)
from baldur_audit.schemas.errors import ConfigError

TOPIC, WITNESS, GROUP = "audit", "audit.checkpoints", "audit-chainer"


def grants_of(who: str, **principals: list[str]) -> set[tuple[str, str, str]]:
    grants = least_acls(topic=TOPIC, witness_topic=WITNESS, group=GROUP, **principals)
    return {
        (g.resource, g.name, g.operation) for g in grants if g.principal == who and g.pattern == "literal"
    }


def prefixed(who: str, **principals: list[str]) -> set[tuple[str, str, str]]:
    grants = least_acls(topic=TOPIC, witness_topic=WITNESS, group=GROUP, **principals)
    return {
        (g.resource, g.name, g.operation) for g in grants if g.principal == who and g.pattern == "prefixed"
    }


def test_a_producer_may_write_the_ledger_topic_and_nothing_else() -> None:
    assert grants_of("User:app", producers=["User:app"]) == {("topic", TOPIC, "WRITE")}
    assert prefixed("User:app", producers=["User:app"]) == set()


def test_the_chainer_reads_topic_and_group_and_writes_the_witness_topic_only() -> None:
    assert grants_of("User:chainer", chainers=["User:chainer"]) == {
        ("topic", TOPIC, "READ"),
        ("group", GROUP, "READ"),
        ("topic", WITNESS, "WRITE"),
        ("topic", WITNESS, "DESCRIBE_CONFIGS"),
        ("topic", WITNESS, "CREATE"),
    }


def test_a_reader_reads_both_topics_and_describes_the_groups() -> None:
    assert grants_of("User:verify", readers=["User:verify"]) == {
        ("topic", TOPIC, "READ"),
        ("topic", WITNESS, "READ"),
        ("group", GROUP, "DESCRIBE"),
        ("group", WITNESS_READER_GROUP, "DESCRIBE"),
    }
    assert prefixed("User:verify", readers=["User:verify"]) == {("group", REPLAY_GROUP_PREFIX, "DESCRIBE")}


def test_the_reader_groups_are_those_the_readers_consumers_use() -> None:
    from baldur_audit.consumers.kafka import source, witness

    assert f'"group.id": "{WITNESS_READER_GROUP}"' in inspect.getsource(witness.KafkaWitness)
    assert f'"group.id": f"{REPLAY_GROUP_PREFIX}{{' in inspect.getsource(source.KafkaTopicReader)


def test_nobody_may_alter_delete_or_touch_the_cluster() -> None:
    grants = least_acls(
        topic=TOPIC,
        witness_topic=WITNESS,
        group=GROUP,
        producers=["User:a", "User:b"],
        chainers=["User:c"],
        readers=["User:d"],
    )
    assert {"ALTER", "ALTER_CONFIGS", "DELETE", "ALL"} <= FORBIDDEN
    assert not [g for g in grants if g.operation in FORBIDDEN or g.resource not in ("topic", "group")]
    # nobody writes the ledger topic but producers; nobody reads the witness topic but readers
    assert {g.principal for g in grants if (g.name, g.operation) == (TOPIC, "WRITE")} == {"User:a", "User:b"}
    for grant in grants:
        binding = grant.binding()
        assert binding.resource_pattern_type == ResourcePatternType[grant.pattern.upper()]
        assert grant.pattern == "literal" or (grant.resource, grant.operation) == ("group", "DESCRIBE")
        assert binding.permission_type == AclPermissionType.ALLOW and binding.host == "*"
        assert binding.restype in (ResourceType.TOPIC, ResourceType.GROUP)
        assert binding.operation == AclOperation[grant.operation]


def test_one_principal_in_two_roles_gets_each_acl_once() -> None:
    grants = least_acls(
        topic=TOPIC, witness_topic=WITNESS, group=GROUP, chainers=["User:x"], readers=["User:x", "User:x"]
    )
    keys = [g.key() for g in grants]
    assert len(keys) == len(set(keys)) == 5 + 4  # the reader's READ on the ledger topic is the chainer's


@pytest.mark.parametrize(
    "text",
    ["chainer", "user:chainer", "User:", "User:*", "User: x", "Group:ops", "User:a\nb", "User:" + "x" * 256],
)
def test_a_malformed_or_wildcard_principal_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a Kafka principal"):
        principal(text)


@pytest.mark.parametrize(
    "text", ["User:chainer", "User:CN=chainer,OU=audit,O=Example", "User:svc-payments@EXAMPLE.COM"]
)
def test_user_names_and_certificate_names_are_principals(text: str) -> None:
    assert principal(text) == text


def test_kafka_acls_commands_group_operations_per_resource() -> None:
    grants = least_acls(topic=TOPIC, witness_topic=WITNESS, group=GROUP, chainers=["User:c"])
    lines = kafka_acls_commands(grants, bootstrap="k:9092")
    add = "kafka-acls.sh --bootstrap-server k:9092 --add --allow-principal User:c"
    assert lines == [
        f"{add} --operation Read --topic audit",
        f"{add} --operation Read --group audit-chainer",
        f"{add} --operation Write --operation DescribeConfigs --operation Create --topic audit.checkpoints",
    ]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "baldur_audit.consumers", "--topic", TOPIC, "--group", GROUP, "acls", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_prints_the_set_as_json_without_a_broker() -> None:
    done = cli("--producer", "User:app", "--chainer", "User:chainer", "--reader", "User:verify", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["topic"], found["witness_topic"], found["group"]) == (TOPIC, WITNESS, GROUP)
    assert found["applied"] is False and len(found["acls"]) == 1 + 5 + 5
    assert {acl["operation"] for acl in found["acls"] if acl["principal"] == "User:app"} == {"WRITE"}
    assert any("init" in note for note in found["notes"])
    assert len(found["kafka_acls_commands"]) == 1 + 3 + 5
    assert found["kafka_acls_commands"][-1].endswith(
        f"--group {REPLAY_GROUP_PREFIX} --resource-pattern-type prefixed"
    )


@pytest.mark.parametrize(
    "args",
    [(), ("--producer", "app"), ("--reader", "User:*"), ("--chainer", "User:")],
    ids=["no principal", "no User prefix", "wildcard", "empty name"],
)
def test_bad_principals_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
