"""Kafka administration: create or validate the ledger topic (and the witness and identities
topics), and describe the chainer's consumer group."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from baldur_audit.schemas.errors import BrokerUnavailable, TopicMisconfigured

from . import ClientErrors, build_client, patiently

log = logging.getLogger(__name__)

#: What the ledger topic must look like: one partition, kept forever, broker timestamps.
REQUIRED_CONFIG = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "message.timestamp.type": "LogAppendTime",
}
#: Replicas a production topic should have (fewer only where the cluster has fewer brokers).
DURABLE_REPLICAS = 3
#: ``min.insync.replicas`` of a production topic with DURABLE_REPLICAS replicas: an
#: acknowledged record (acks=all) is on two brokers.
DURABLE_MIN_INSYNC = 2


def _kafka_error(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return getattr(err, "str", lambda: str(err))()
    return str(exc)


@dataclass(frozen=True, slots=True)
class TopicReport:
    """What ``init`` found or did to the topic."""

    topic: str
    created: bool
    partitions: int
    config: dict[str, str]
    warnings: tuple[str, ...] = ()
    replication_factor: int | None = None
    brokers: int | None = None


def admin_client(bootstrap: str, config: Mapping[str, str] | None) -> tuple[AdminClient, ClientErrors]:
    """An admin client with the user's client configuration, and the collector of its refusals."""
    errors = ClientErrors("Kafka admin client", config)
    admin = build_client(
        AdminClient,
        bootstrap=bootstrap,
        config=config,
        what="Kafka admin client",
        errors=errors,
        own={"socket.timeout.ms": 10000},
    )
    return admin, errors


class KafkaTopicAdmin:
    """Admin operations on the ledger topic."""

    def __init__(
        self, bootstrap: str, *, timeout: float = 15.0, config: Mapping[str, str] | None = None
    ) -> None:
        self._admin, self._errors = admin_client(bootstrap, config)
        self._bootstrap = bootstrap
        self._timeout = timeout

    def _check_refused(self) -> None:
        """After a failed request: raise the cluster's refusal of this client, if that was why."""
        self._admin.poll(0)
        self._errors.check()

    def _result(self, future: Any, what: str) -> Any:
        """``future.result()``, waited for in slices of a second so that a refusal fails at once
        (:meth:`_check_refused`); raises :class:`BrokerUnavailable` after the timeout."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return future.result(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            except TimeoutError:
                self._check_refused()
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"{what}: no answer from Kafka at {self._bootstrap} within {self._timeout:.0f} s"
                    ) from None

    def _partitions(self, topic: str) -> int | None:
        return self._layout(topic)[0]

    def _layout(self, topic: str) -> tuple[int | None, int, int]:
        """From one metadata request: the partitions of ``topic`` (None when it does not exist),
        the replicas of its partition 0 (0 then) and the brokers in the cluster."""
        try:
            metadata = patiently(
                lambda seconds: self._admin.list_topics(topic=topic, timeout=seconds),
                timeout=self._timeout,
                errors=self._errors,
                serve=lambda: self._admin.poll(0),
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {self._bootstrap}: {_kafka_error(exc)}") from None
        brokers = len(metadata.brokers)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None, 0, brokers
        first = found.partitions.get(0)
        return len(found.partitions), len(first.replicas) if first is not None else 0, brokers

    def ensure_topic(
        self, topic: str, *, replication_factor: int | None = None, production: bool = False
    ) -> TopicReport:
        """Create the topic as the ledger needs it, or validate an existing one.

        ``replication_factor``: of a topic created here; None: 1, and in ``production``
        min(3, brokers in the cluster). In ``production`` a created topic also gets
        ``unclean.leader.election.enable=false`` and, with 3 replicas or more,
        ``min.insync.replicas=2``; and the report warns, one line each, when the topic has fewer
        replicas than that, a lower ``min.insync.replicas``, or unclean leader election on.
        Outside production a topic is created and checked as before (no such warnings).

        Raises :class:`TopicMisconfigured` for more than one partition or a
        compacted topic, :class:`BrokerUnavailable` when Kafka cannot be reached.
        """
        created = False
        partitions, replicas, brokers = self._layout(topic)
        if partitions is None:
            if replication_factor is None:
                replication_factor = max(1, min(DURABLE_REPLICAS, brokers)) if production else 1
            wanted = dict(REQUIRED_CONFIG)
            if production:
                wanted["unclean.leader.election.enable"] = "false"
                if replication_factor >= DURABLE_REPLICAS:
                    wanted["min.insync.replicas"] = str(DURABLE_MIN_INSYNC)
            new = NewTopic(topic, num_partitions=1, replication_factor=replication_factor, config=wanted)
            future = self._admin.create_topics([new], operation_timeout=self._timeout)[topic]
            try:
                self._result(future, f"cannot create topic {topic}")
                created = True
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in _kafka_error(exc).upper().replace(
                    " ", "_"
                ) and "already exists" not in _kafka_error(exc):
                    self._check_refused()
                    raise BrokerUnavailable(f"cannot create topic {topic}: {_kafka_error(exc)}") from None
            # Right after a creation the broker's metadata may lag: what was asked for counts.
            partitions, replicas, brokers = self._layout(topic)
            if created or partitions is None:
                partitions, replicas = partitions or 1, replicas or replication_factor
        config = self.topic_config(topic, new=created)
        if partitions != 1:
            raise TopicMisconfigured(
                f"topic {topic} has {partitions} partitions; the ledger needs exactly 1 "
                "(one partition totally orders the chain)"
            )
        if "compact" in config.get("cleanup.policy", ""):
            raise TopicMisconfigured(
                f"topic {topic} has cleanup.policy={config['cleanup.policy']}; compaction would "
                "delete records the chain covers: use cleanup.policy=delete"
            )
        warnings = tuple(
            f"topic {topic} has {name}={config.get(name)}, the ledger expects {wanted}"
            + (
                ": records may be deleted, and replay needs them from offset 0"
                if name.startswith("retention")
                else ": producers, not the broker, set the timestamp the chain covers"
            )
            for name, wanted in REQUIRED_CONFIG.items()
            if name != "cleanup.policy" and config.get(name, wanted) != wanted
        )
        if production:
            warnings += durability_warnings(topic, replicas=replicas, brokers=brokers, config=config)
        for warning in warnings:
            log.warning("%s", warning)
        return TopicReport(
            topic=topic,
            created=created,
            partitions=partitions,
            config=config,
            warnings=warnings,
            replication_factor=replicas,
            brokers=brokers,
        )

    def topic_config(self, topic: str, *, new: bool = False) -> dict[str, str]:
        """The topic's effective configuration values that matter to the ledger.

        ``new``: the topic was just created. In KRaft the controller commits a creation before
        the broker's metadata has it, so a describe right after ``create_topics`` can answer
        "unknown topic": retry that, bounded by the client timeout."""
        resource = ConfigResource(ResourceType.TOPIC, topic)
        deadline = time.monotonic() + (self._timeout if new else 0.0)
        while True:
            try:
                result = self._result(
                    self._admin.describe_configs([resource])[resource], f"cannot describe topic {topic}"
                )
                break
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() >= deadline:
                    self._check_refused()
                    raise BrokerUnavailable(f"cannot describe topic {topic}: {_kafka_error(exc)}") from None
                time.sleep(0.1)
        wanted = set(REQUIRED_CONFIG) | {"min.insync.replicas", "unclean.leader.election.enable"}
        return {name: str(entry.value) for name, entry in result.items() if name in wanted}

    def group_state(self, group: str, topic: str) -> dict[str, Any]:
        """The consumer group: state, members (client id, host) and committed offset."""
        try:
            described = self._result(
                self._admin.describe_consumer_groups([group])[group], f"cannot describe group {group}"
            )
            offsets = self._result(
                self._admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
                )[group],
                f"cannot describe group {group}",
            )
        except KafkaException as exc:
            self._check_refused()
            raise BrokerUnavailable(f"cannot describe group {group}: {_kafka_error(exc)}") from None
        committed = None
        for tp in offsets.topic_partitions:
            if tp.topic == topic and tp.partition == 0 and tp.offset >= 0:
                committed = tp.offset
        members = []
        for member in described.members:
            assigned = [
                f"{tp.topic}[{tp.partition}]"
                for tp in (member.assignment.topic_partitions if member.assignment else [])
            ]
            members.append(
                {
                    "member_id": member.member_id,
                    "client_id": member.client_id,
                    "host": member.host,
                    "assignment": assigned,
                }
            )
        return {
            "group": group,
            "state": str(described.state.name).lower() if described.state is not None else "unknown",
            "members": members,
            "committed_offset": committed,
        }

    def delete_topic(self, topic: str) -> None:
        """Delete a topic (tests and the demo's scratch topics only)."""
        future = self._admin.delete_topics([topic], operation_timeout=self._timeout)[topic]
        try:
            self._result(future, f"cannot delete topic {topic}")
        except KafkaException as exc:
            self._check_refused()
            raise BrokerUnavailable(f"cannot delete topic {topic}: {_kafka_error(exc)}") from None


def durability_warnings(
    topic: str, *, replicas: int, brokers: int, config: Mapping[str, str]
) -> tuple[str, ...]:
    """What makes a production ledger topic less durable than it should be, one line each:
    fewer than min(3, brokers) replicas, or fewer than 3 where the cluster has no more brokers
    (said as such: the topic cannot do better there); ``min.insync.replicas`` below 2 with 3
    replicas or more; unclean leader election on."""
    lines = []
    best = max(1, min(DURABLE_REPLICAS, brokers))
    if replicas < best:
        lines.append(
            f"topic {topic} has replication factor {replicas}, below {best} (min(3, {brokers} brokers)): "
            "the ledger's only source loses records with a broker; add replicas "
            "(kafka-reassign-partitions)"
        )
    elif replicas < DURABLE_REPLICAS:
        lines.append(
            f"topic {topic} has replication factor {replicas}, the most this cluster of {brokers} "
            f"broker{'s' if brokers != 1 else ''} allows but below {DURABLE_REPLICAS}: "
            f"losing a broker's disk loses the ledger's only source; production wants "
            f"{DURABLE_REPLICAS} brokers"
        )
    min_insync = int(config.get("min.insync.replicas", "1") or 1)
    if replicas >= DURABLE_REPLICAS and min_insync < DURABLE_MIN_INSYNC:
        lines.append(
            f"topic {topic} has min.insync.replicas={min_insync} with {replicas} replicas, the ledger "
            f"expects {DURABLE_MIN_INSYNC}: an acknowledged record may be on one broker only"
        )
    if config.get("unclean.leader.election.enable", "false").lower() == "true":
        lines.append(
            f"topic {topic} has unclean.leader.election.enable=true, the ledger expects false: "
            "an out-of-sync replica may become leader and drop acknowledged records"
        )
    return tuple(lines)


def ensure_identities_topic(
    bootstrap: str,
    name: str,
    *,
    replication_factor: int = 1,
    timeout: float = 15.0,
    config: Mapping[str, str] | None = None,
) -> bool:
    """Create the identities topic ``name`` (compacted, one partition) unless it exists;
    returns whether it was created. Raises :class:`BrokerUnavailable`."""
    errors = ClientErrors("Kafka admin client", config)
    admin = build_client(
        AdminClient, bootstrap=bootstrap, config=config, what="Kafka admin client", errors=errors, own={}
    )
    try:
        listed = patiently(
            lambda seconds: admin.list_topics(timeout=seconds),
            timeout=timeout,
            errors=errors,
            serve=lambda: admin.poll(0),
        )
        if name in listed.topics:
            return False
        new = NewTopic(
            name,
            num_partitions=1,
            replication_factor=replication_factor,
            config={"cleanup.policy": "compact"},
        )
        admin.create_topics([new])[name].result(timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if getattr(error, "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        admin.poll(0)
        errors.check()
        raise BrokerUnavailable(f"cannot create {name}: {error}") from None
    return True
