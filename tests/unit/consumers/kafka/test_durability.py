"""The production topic's durability warnings for clusters of any size (the one-broker cases run
on a real broker in tests/integration/test_topic_durability.py)."""

from __future__ import annotations

import pytest

from baldur_audit.consumers.kafka.admin import durability_warnings

DURABLE = {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}


@pytest.mark.parametrize(("replicas", "brokers"), [(3, 3), (3, 5), (4, 6)])
def test_three_replicas_with_two_in_sync_and_no_unclean_election_is_quiet(
    replicas: int, brokers: int
) -> None:
    assert durability_warnings("t", replicas=replicas, brokers=brokers, config=DURABLE) == ()


@pytest.mark.parametrize(("replicas", "brokers", "best"), [(1, 3, 3), (2, 5, 3), (1, 2, 2)])
def test_fewer_replicas_than_the_cluster_allows_is_one_line(replicas: int, brokers: int, best: int) -> None:
    (line,) = durability_warnings("t", replicas=replicas, brokers=brokers, config=DURABLE)
    assert f"replication factor {replicas}, below {best} (min(3, {brokers} brokers))" in line


@pytest.mark.parametrize("brokers", [1, 2])
def test_a_small_cluster_says_it_cannot_do_better(brokers: int) -> None:
    (line,) = durability_warnings("t", replicas=brokers, brokers=brokers, config=DURABLE)
    assert "the most this cluster" in line and "below 3" in line, line


def test_one_in_sync_replica_of_three_is_one_line() -> None:
    (line,) = durability_warnings("t", replicas=3, brokers=3, config={**DURABLE, "min.insync.replicas": "1"})
    assert "min.insync.replicas=1 with 3 replicas" in line


def test_min_insync_is_not_asked_of_a_topic_with_fewer_than_three_replicas() -> None:
    lines = durability_warnings("t", replicas=2, brokers=2, config={**DURABLE, "min.insync.replicas": "1"})
    assert not [line for line in lines if "min.insync" in line]


def test_unclean_leader_election_is_one_line() -> None:
    lines = durability_warnings(
        "t", replicas=3, brokers=3, config={**DURABLE, "unclean.leader.election.enable": "true"}
    )
    assert len(lines) == 1 and "unclean.leader.election.enable=true" in lines[0]


def test_every_shortfall_at_once_is_one_line_each() -> None:
    config = {"min.insync.replicas": "1", "unclean.leader.election.enable": "true"}
    assert len(durability_warnings("t", replicas=1, brokers=5, config=config)) == 2  # RF < 3: no min.insync
    assert len(durability_warnings("t", replicas=3, brokers=5, config=config)) == 2
