"""The Kafka producer behind the audit trail: its settings, its creation, its port.

Settings follow the no-loss rules for a ledger producer: ``enable.idempotence=true``
(which implies ``acks=all``, bounded in-flight requests and infinite retries within
``message.timeout.ms``), a short ``linger.ms`` and ``zstd`` compression (``lz4`` when the
librdkafka build lacks zstd). Settings given by the service (security, tuning) are
merged in, except those the audit trail must own.

librdkafka's own log lines go to the ``logging`` logger ``<this module>.librdkafka`` (served
by ``poll()``), not to stderr; secret settings are never logged or put in error messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import confluent_kafka

from baldur_audit.schemas.errors import ConfigError

from .kafka_config import scrub_client_secrets
from .redact import REDACTED

logger = logging.getLogger(__name__)
# librdkafka's own log lines: a child logger, so a service can quiet them on their own.
_librdkafka_logger = logging.getLogger(f"{__name__}.librdkafka")

#: Settings the audit trail sets itself: a service may not override them.
OWNED_SETTINGS = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "error_cb",
        "logger",
        "on_delivery",
        "dr_cb",
        "dr_msg_cb",
        "delivery.report.only.error",
        "transactional.id",
    }
)
# Delivery errors about the message itself: sending it again can never succeed. Every other
# error (timeouts, purges, an unreachable or refusing cluster, a missing topic) may pass.
_PERMANENT_ERRORS = frozenset(
    getattr(confluent_kafka.KafkaError, name)
    for name in (
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG",
        "INVALID_MSG_SIZE",
        "INVALID_RECORD",
        "RECORD_LIST_TOO_LARGE",
        "_BAD_MSG",
        "INVALID_TIMESTAMP",
        "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        "_INVALID_ARG",
    )
    if hasattr(confluent_kafka.KafkaError, name)
)
_CREDENTIALS = "check sasl.mechanism, sasl.username and sasl.password in the Kafka client configuration"
#: Errors that say the cluster refuses the client itself (its credentials, its TLS settings, its
#: ACLs), with what to check. librdkafka retries them for ever like any connection error, and
#: says why only through ``error_cb`` and its log, so the clients look for them there.
REFUSALS: dict[int, str] = {
    confluent_kafka.KafkaError._AUTHENTICATION: _CREDENTIALS,
    confluent_kafka.KafkaError.SASL_AUTHENTICATION_FAILED: _CREDENTIALS,
    confluent_kafka.KafkaError.UNSUPPORTED_SASL_MECHANISM: _CREDENTIALS,
    confluent_kafka.KafkaError._SSL: "check ssl.ca.location (the CA that signed the broker's "
    "certificate) and the client certificate and key in the Kafka client configuration",
    confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED: "the principal lacks an ACL on the topic",
    confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED: "the principal lacks an ACL on the group",
    confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED: "the principal lacks an ACL on the cluster",
}


class KafkaProducerPort(Protocol):
    """The part of ``confluent_kafka.Producer`` the audit trail uses."""

    def produce(self, topic: str, value: bytes | None = None, *args: Any, **kwargs: Any) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...

    def __len__(self) -> int: ...


#: librdkafka reports some failed TLS handshakes as transport errors: these words tell them.
_TLS_FAILURES = ("SSL handshake failed", "certificate verify failed")


def refusal_hint(error: confluent_kafka.KafkaError) -> str | None:
    """What to check when ``error`` says the cluster refuses this client (see :data:`REFUSALS`);
    None for any other error."""
    code = error.code()
    if code == confluent_kafka.KafkaError._TRANSPORT and any(words in error.str() for words in _TLS_FAILURES):
        code = confluent_kafka.KafkaError._SSL
    return REFUSALS.get(code)


def is_permanent(error: confluent_kafka.KafkaError) -> bool:
    """Whether a delivery error is about the message itself (resending cannot help)."""
    return error.code() in _PERMANENT_ERRORS


def scrub_settings(text: str, settings: Mapping[str, Any]) -> str:
    """``text`` with the value of every secret setting replaced by ``[REDACTED]``."""
    return scrub_client_secrets(text, settings, REDACTED)


def producer_settings(
    *,
    bootstrap: str,
    client_id: str,
    message_timeout_ms: int,
    queue_max_messages: int,
    extra: Mapping[str, Any],
    compression: str = "zstd",
) -> dict[str, Any]:
    """The librdkafka settings of the audit producer; raises :class:`ConfigError`."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise ConfigError("bootstrap: expected host:port[,host:port...]")
    owned = sorted(OWNED_SETTINGS.intersection(extra))
    if owned:
        raise ConfigError(f"producer_config: {', '.join(owned)} is set by the audit trail")
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": compression,
        "message.timeout.ms": int(message_timeout_ms),
        "queue.buffering.max.messages": int(queue_max_messages),
        "logger": _librdkafka_logger,
    }
    settings.update(extra)
    return settings


def build_producer(
    factory: Callable[[dict[str, Any]], KafkaProducerPort],
    *,
    bootstrap: str,
    client_id: str,
    message_timeout_ms: int,
    queue_max_messages: int,
    extra: Mapping[str, Any],
    error_cb: Callable[[confluent_kafka.KafkaError], None],
) -> KafkaProducerPort:
    """Create the producer; raises :class:`ConfigError` when librdkafka refuses a setting."""
    given = extra.get("compression.type")
    compressions = ("zstd", "lz4") if given is None else (str(given),)
    for compression in compressions:
        settings = producer_settings(
            bootstrap=bootstrap,
            client_id=client_id,
            message_timeout_ms=message_timeout_ms,
            queue_max_messages=queue_max_messages,
            extra=extra,
            compression=compression,
        )
        settings["error_cb"] = error_cb
        try:
            return factory(settings)
        except confluent_kafka.KafkaException as exc:
            message = scrub_settings(str(exc), extra)
            if compression == "zstd" and given is None and "zstd" in message:
                logger.warning("librdkafka has no zstd support; compressing with lz4")
                continue
            raise ConfigError(f"kafka producer settings refused: {message}") from None
    raise ConfigError("kafka producer settings refused: no usable compression codec")
