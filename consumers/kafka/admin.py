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


class KafkaTopicAdmin:
    """Admin operations on the ledger topic."""

    def __init__(
        self, bootstrap: str, *, timeout: float = 15.0, config: Mapping[str, str] | None = None
    ) -> None:
        self._errors = ClientErrors("Kafka admin client", config)
        self._admin = build_client(
            AdminClient,
            bootstrap=bootstrap,
            config=config,
            what="Kafka admin client",
            errors=self._errors,
            own={"socket.timeout.ms": 10000},
        )
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
        try:
            metadata = patiently(
                lambda seconds: self._admin.list_topics(topic=topic, timeout=seconds),
                timeout=self._timeout,
                errors=self._errors,
                serve=lambda: self._admin.poll(0),
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {self._bootstrap}: {_kafka_error(exc)}") from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return len(found.partitions)

    def ensure_topic(self, topic: str, *, replication_factor: int = 1) -> TopicReport:
        """Create the topic as the ledger needs it, or validate an existing one.

        Raises :class:`TopicMisconfigured` for more than one partition or a
        compacted topic, :class:`BrokerUnavailable` when Kafka cannot be reached.
        """
        created = False
        partitions = self._partitions(topic)
        if partitions is None:
            new = NewTopic(
                topic, num_partitions=1, replication_factor=replication_factor, config=dict(REQUIRED_CONFIG)
            )
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
            partitions = self._partitions(topic) or 1
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
        for warning in warnings:
            log.warning("%s", warning)
        return TopicReport(
            topic=topic, created=created, partitions=partitions, config=config, warnings=warnings
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
        wanted = set(REQUIRED_CONFIG) | {"min.insync.replicas"}
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
