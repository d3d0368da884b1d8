"""The Kafka adapter of the ledger side: the only package here that imports confluent_kafka
(the producer library, ``producers/``, has its own). ``source`` reads topics (the chainer's
group member, replay's reader, the identities topic), ``admin`` creates and validates topics
and describes the chainer group, ``witness`` is the checkpoints' witness topic. Every client is
built by :func:`build_client` from the shared client configuration (``--kafka-config``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaException

from baldur_audit.producers.kafka_config import client_config_secrets
from baldur_audit.schemas.errors import ConfigError

__all__ = ["build_client"]

_Client = TypeVar("_Client")


def build_client(
    factory: Callable[[dict[str, Any]], _Client],
    *,
    bootstrap: str,
    config: Mapping[str, str] | None,
    own: Mapping[str, Any],
    what: str,
) -> _Client:
    """A confluent_kafka client from the shared client configuration (``config``: security and
    tuning, see ``producers/kafka_config.py``) and the settings this client must own, which win.
    Raises :class:`ConfigError` (secret values scrubbed) when librdkafka refuses a setting."""
    settings: dict[str, Any] = {**(config or {}), **own, "bootstrap.servers": bootstrap}
    try:
        return factory(settings)
    except (KafkaException, ValueError, TypeError) as exc:
        message = str(exc.args[0] if exc.args else exc)
        for secret in client_config_secrets(config or {}):
            message = message.replace(secret, "***")
        raise ConfigError(f"{what}: Kafka client settings refused: {message}") from None
