"""A durable ledger topic: with ``BALDUR_ENV=production`` ``init`` creates the topic with
replication factor min(3, brokers) and ``unclean.leader.election.enable=false``, and says in one
line each when a topic is less durable than that; a development stack stays quiet. On the
shared one-broker stack (fresh topics); the cases that need more brokers are
tests/unit/consumers/kafka/test_durability.py's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from baldur_audit.consumers.kafka.admin import REQUIRED_CONFIG
from tests.support.stack import Ledger, fresh_ledger

pytestmark = pytest.mark.integration

PRODUCTION = {"BALDUR_ENV": "production"}


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh topic name and database, ``init`` not run."""
    with fresh_ledger(tmp_path, init=False) as led:
        yield led


def admin(led: Ledger) -> AdminClient:
    return AdminClient({"bootstrap.servers": led.bootstrap})


def topic_state(led: Ledger) -> tuple[int, dict[str, Any]]:
    """(replicas of partition 0, configuration entries) of the ledger topic."""
    client = admin(led)
    metadata = client.list_topics(topic=led.topic, timeout=30)
    replicas = len(metadata.topics[led.topic].partitions[0].replicas)
    resource = ConfigResource(ResourceType.TOPIC, led.topic)
    return replicas, client.describe_configs([resource])[resource].result(30)


def init(led: Ledger, *args: str, production: bool) -> Any:
    """``init ARGS --json`` (with ``BALDUR_ENV=production`` when ``production``), parsed."""
    done = led.cli("init", *args, "--json", extra_env=PRODUCTION if production else None)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def test_production_init_on_one_broker_creates_one_replica_without_unclean_election_and_says_so(
    bare: Ledger,
) -> None:
    found = init(bare, production=True)
    assert found["topic_created"] is True
    replicas, config = topic_state(bare)
    assert replicas == 1  # min(3, 1 broker)
    entry = config["unclean.leader.election.enable"]
    assert entry.value == "false" and not entry.is_default, "set on the topic, not inherited"
    assert (
        "min.insync.replicas" not in found["topic_config"]
        or found["topic_config"]["min.insync.replicas"] == "1"
    )
    assert len(found["warnings"]) == 1, found["warnings"]
    warning = found["warnings"][0]
    assert "replication factor 1" in warning and "1 broker allows" in warning and "below 3" in warning, (
        warning
    )
    # the text output says it too, once, for the topic it now validates
    done = bare.cli("init", extra_env=PRODUCTION)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("warning: ")] == [
        f"warning: {warning}"
    ]


def test_production_init_keeps_an_explicit_replication_factor_and_warns_below_three(bare: Ledger) -> None:
    found = init(bare, "--replication-factor", "1", production=True)
    assert found["topic_created"] is True and topic_state(bare)[0] == 1
    assert [w for w in found["warnings"] if "replication factor 1" in w], found["warnings"]


def test_development_init_on_one_broker_stays_quiet(bare: Ledger) -> None:
    found = init(bare, production=False)
    assert found["topic_created"] is True and found["warnings"] == [], found["warnings"]
    again = bare.cli("init")
    assert again.returncode == 0 and "warning" not in again.stdout + again.stderr.lower(), again


def test_an_existing_topic_with_unclean_election_warns_in_production_only(bare: Ledger) -> None:
    config = {**REQUIRED_CONFIG, "unclean.leader.election.enable": "true"}
    new = NewTopic(bare.topic, num_partitions=1, replication_factor=1, config=config)
    client = admin(bare)  # kept alive until it answers
    client.create_topics([new])[bare.topic].result(30)

    quiet = init(bare, production=False)
    assert quiet["topic_created"] is False and quiet["warnings"] == [], quiet["warnings"]
    loud = init(bare, production=True)
    unclean = [w for w in loud["warnings"] if "unclean.leader.election.enable=true" in w]
    assert len(unclean) == 1, loud["warnings"]
    assert len(loud["warnings"]) == 2, loud["warnings"]  # and the one broker's single replica


def test_production_witness_topic_is_created_as_durably_as_the_ledger_topic(bare: Ledger) -> None:
    init(bare, production=True)
    bare.produce_events(3)
    sealed = bare.cli("chain", "--until-idle", "2", extra_env=PRODUCTION)
    assert sealed.returncode == 0, sealed.stderr
    signing = {**PRODUCTION, "BALDUR_SECRETS_CHECKPOINT_KEY": "hex:" + "42" * 32}
    made = bare.cli("checkpoint", "--json", extra_env=signing)
    assert made.returncode == 0, made.stderr
    witness = f"{bare.topic}.checkpoints"
    client = admin(bare)
    metadata = client.list_topics(topic=witness, timeout=30)
    assert len(metadata.topics[witness].partitions[0].replicas) == 1  # min(3, 1 broker)
    resource = ConfigResource(ResourceType.TOPIC, witness)
    entry = client.describe_configs([resource])[resource].result(30)["unclean.leader.election.enable"]
    assert entry.value == "false" and not entry.is_default, "set on the witness topic, not inherited"
