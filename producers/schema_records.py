"""Schema records on the producer side: a writer schema is published to the topic, once per
topic and process, before the first event written with it (schemas/CHAIN.md §19), so that a
chainer that has never seen the schema learns it from the log itself.

The record is ``C3 53`` + the schema's 8-byte fingerprint + its JSON text
(``schemas.codec.encode_schema_record``). Publishing the same schema twice, or two producers
racing to publish it, is harmless: the chainer seals each copy as an entry of kind *schema*.

The built-in ``ChangeEvent`` schema (``aea2d0c04d278552``) is known to every sealer of chain
format 2, so it is not announced unless asked (``always=True``); any other writer schema is.
A schema record travels the same path as the events after it (the trail's direct send or its
spool, in order), so it precedes them in the partition.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import confluent_kafka

from baldur_audit.schemas.codec import (
    BUILT_IN_FINGERPRINTS,
    HEADER_LEN,
    MAGIC,
    WriterSchema,
    encode_schema_record,
)
from baldur_audit.schemas.errors import BrokerUnavailable, ConfigError

from .kafka_producer import producer_settings

#: The id a schema record is reported under (delivery callbacks, the spool): derived from its
#: fingerprint, so that it can never be a real event's UUIDv7.
_RECORD_IDS = uuid.UUID("6f1b3c3e-58a4-5a55-9c52-6a0c7a6a8e11")


def schema_record_id(fingerprint: bytes) -> uuid.UUID:
    """The id under which the schema record of ``fingerprint`` is sent (a UUIDv5)."""
    return uuid.uuid5(_RECORD_IDS, fingerprint.hex())


class SchemaAnnouncer:
    """Remembers which writer schemas a process has published on which topic.

    :meth:`before` is called with each encoded event; it returns the schema record to send
    first when the event's writer schema is not yet announced on that topic (and marks it
    announced), else None. :meth:`forget` undoes the mark when the record was not delivered.
    Thread-safe.
    """

    def __init__(self, *, schemas: Mapping[bytes, WriterSchema] | None = None, always: bool = False) -> None:
        self._schemas: dict[bytes, WriterSchema] = dict(schemas or {})
        self._always = always
        self._announced: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def add(self, schema: WriterSchema) -> None:
        """Make ``schema`` announceable (the producer encodes events with it)."""
        with self._lock:
            self._schemas[schema.fingerprint] = schema

    def before(self, topic: str, value: bytes) -> tuple[uuid.UUID, bytes] | None:
        """The (id, schema record) to send before ``value`` on ``topic``, or None."""
        if len(value) < HEADER_LEN or value[:2] != MAGIC:
            return None
        fingerprint = bytes(value[2:HEADER_LEN])
        if fingerprint in BUILT_IN_FINGERPRINTS and not self._always:
            return None
        with self._lock:
            if (topic, fingerprint) in self._announced:
                return None
            schema = self._schemas.get(fingerprint)
            if schema is None:  # the event's own encoder must have registered it
                return None
            self._announced.add((topic, fingerprint))
        return schema_record_id(fingerprint), encode_schema_record(schema)

    def forget(self, topic: str, fingerprint: bytes) -> None:
        """The record of ``fingerprint`` did not reach ``topic``: announce it again next time."""
        with self._lock:
            self._announced.discard((topic, fingerprint))


def publish_schema(
    schema: WriterSchema,
    *,
    bootstrap: str,
    topic: str,
    producer_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Producer,
) -> None:
    """Publish the schema record of ``schema`` to ``topic`` and wait for it to be written.

    Raises :class:`ConfigError` for bad settings, :class:`BrokerUnavailable` when the broker
    does not take the record within ``timeout`` seconds.
    """
    settings = producer_settings(
        bootstrap=bootstrap,
        client_id="baldur-audit-schemas",
        message_timeout_ms=int(timeout * 1000),
        queue_max_messages=10,
        extra=dict(producer_config or {}),
        compression="none",
    )
    try:
        producer = factory(settings)
    except confluent_kafka.KafkaException as exc:
        raise ConfigError(f"kafka producer settings refused: {type(exc).__name__}") from None
    errors: list[str] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(error.name() if hasattr(error, "name") else str(error))

    try:
        producer.produce(topic, value=encode_schema_record(schema), on_delivery=report)
    except (confluent_kafka.KafkaException, BufferError) as exc:
        raise BrokerUnavailable(f"kafka producer refused the schema record: {type(exc).__name__}") from None
    left = producer.flush(timeout)
    if left or errors:
        reason = errors[0] if errors else "not delivered in time"
        raise BrokerUnavailable(f"schema record {schema.fingerprint.hex()} not written to {topic}: {reason}")
