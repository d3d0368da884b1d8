"""The witness topic: checkpoints are published to ``<topic>.checkpoints`` (one partition,
no compaction, kept forever; the database's owner does not control it) and read back by
offset. A :class:`~baldur_audit.consumers.witnesses.WitnessSink` and ``WitnessLog``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from baldur_audit.schemas.checkpoint import Checkpoint
from baldur_audit.schemas.errors import BrokerUnavailable

from . import ClientErrors, build_client, patiently, serve_callbacks
from .admin import KafkaTopicAdmin
from .source import close_quietly


class KafkaWitness:
    """The witness topic: checkpoints are produced to it (idempotent, acks=all; created on
    first use with one partition, no compaction, kept forever) and read back by offset."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        replication_factor: int | None = None,
        production: bool = False,
        timeout: float = 10.0,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.topic = topic
        self.name = f"topic {topic}"
        self._bootstrap = bootstrap
        self._config = config
        self._replication_factor = replication_factor
        self._production = production
        self._timeout = timeout
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._ensured = False
        self._errors = ClientErrors(f"witness topic {topic}", config)

    def publish(self, checkpoint: Checkpoint, note: str) -> str:
        """Produce the note (key: the tree size); raises BrokerUnavailable unless acknowledged."""
        if not self._ensured:
            KafkaTopicAdmin(self._bootstrap, timeout=self._timeout, config=self._config).ensure_topic(
                self.topic, replication_factor=self._replication_factor, production=self._production
            )
            self._ensured = True
        if self._producer is None:
            self._producer = build_client(
                Producer,
                bootstrap=self._bootstrap,
                config=self._config,
                what=f"witness topic {self.topic}",
                errors=self._errors,
                own={
                    "enable.idempotence": True,
                    "message.timeout.ms": int(self._timeout * 3000),
                },
            )
        outcome: list[Any] = []
        self._producer.produce(
            self.topic,
            key=str(checkpoint.size).encode("ascii"),
            value=note.encode("utf-8"),
            on_delivery=lambda err, msg: outcome.append((err, msg)),
        )
        remaining = self._producer.flush(self._timeout)
        self._errors.check()  # flush() ran the error callback
        if remaining or not outcome:
            raise BrokerUnavailable(
                f"witness topic {self.topic}: the checkpoint of size "
                f"{checkpoint.size} was not acknowledged within "
                f"{self._timeout:.0f} s"
            )
        error, message = outcome[0]
        if error is not None:
            raise BrokerUnavailable(f"witness topic {self.topic}: {error.str()}")
        return f"topic {self.topic} offset {message.offset()}"

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = build_client(
                Consumer,
                bootstrap=self._bootstrap,
                config=self._config,
                what=f"witness topic {self.topic}",
                errors=self._errors,
                own={
                    "group.id": "baldur-audit-witness-reader",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "error",
                    "isolation.level": "read_committed",
                    "allow.auto.create.topics": False,
                },
            )
        return self._consumer

    def positions(self) -> range:
        """The topic's offsets (empty when the topic does not exist)."""
        consumer = self._reader()
        try:
            metadata = patiently(
                lambda seconds: consumer.list_topics(topic=self.topic, timeout=seconds),
                timeout=self._timeout,
                errors=self._errors,
                serve=lambda: serve_callbacks(consumer),
            )
            found = metadata.topics.get(self.topic)
            if found is None or (
                found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                return range(0)
            if found.error is not None:
                raise BrokerUnavailable(f"witness topic {self.topic}: {found.error.str()}")
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=self._timeout, cached=False
            )
        except KafkaException as exc:
            self._errors.check()
            raise BrokerUnavailable(f"cannot read witness topic {self.topic}: {exc.args[0].str()}") from None
        return range(int(low), int(high))

    def read(self, position: int) -> bytes | None:
        """The record value at offset ``position``."""
        consumer = self._reader()
        try:
            consumer.assign([TopicPartition(self.topic, 0, position)])
            for _ in range(max(1, int(self._timeout / 0.5))):
                messages = consumer.consume(num_messages=1, timeout=0.5)
                self._errors.check()
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return None
                        raise BrokerUnavailable(f"witness topic {self.topic}: {error.str()}")
                    value = message.value()
                    return value if message.offset() == position else None
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read witness topic {self.topic}: {exc.args[0].str()}") from None
        raise BrokerUnavailable(
            f"witness topic {self.topic}: no record at offset {position} within {self._timeout:.0f} s"
        )

    def close(self) -> None:
        """Flush nothing further; close the clients (bounded)."""
        if self._consumer is not None:
            close_quietly(self._consumer)
            self._consumer = None
        self._producer = None
