"""Keyed pseudonyms of actor ids, for the right to erasure.

A service that opts in records ``psn1-<hex>`` as the actor instead of the person's id:
``hex`` is HMAC-SHA256 under ``BALDUR_PSEUDONYM_KEY`` of the UTF-8 actor id. The ledger and
its chain only ever see the pseudonym. The mapping back to the identity travels apart, on the
compacted topic ``<topic>.identities`` (key: the pseudonym, value: the identity), which the
ledger side loads into its ``identities`` table with ``baldur-audit identities sync``.
Erasing a person (``baldur-audit erase``) deletes the table row and writes a tombstone for
the key, so compaction removes the identity from Kafka too; the topic, the chain and every
proof stay as they were, because none of them ever held the identity.

Why a topic and not a direct database write: a producer embeds no database driver and holds
no database credentials (STYLE.md: services that only emit install neither psycopg nor
click), and the mapping reaches the ledger the same way the events do.

The key must stay secret and stable: with it, anyone can test a guessed identity against a
pseudonym (ids are low-entropy); without it, a pseudonym reveals nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import confluent_kafka

from baldur_audit.schemas.errors import ConfigError, InvalidEvent

from .kafka_config import scrub_client_secrets

log = logging.getLogger(__name__)

KEY_ENV = "BALDUR_PSEUDONYM_KEY"
PREFIX = "psn1-"
PSEUDONYM_RE = re.compile(r"psn1-[0-9a-f]{64}")
MIN_KEY_BYTES = 16
IDENTITIES_SUFFIX = ".identities"

Publish = Callable[[str, str], None]


def identities_topic(topic: str) -> str:
    """The compacted topic that carries ``topic``'s pseudonym mappings."""
    return topic + IDENTITIES_SUFFIX


def is_pseudonym(text: str) -> bool:
    """True when ``text`` has the form of a pseudonym (``psn1-`` and 64 hex digits)."""
    return bool(PSEUDONYM_RE.fullmatch(text))


def parse_key(text: str) -> bytes:
    """A pseudonym key from text: hex (32+ even digits) or raw text of at least 16 bytes;
    raises :class:`ConfigError` (never quoting the key)."""
    stripped = text.strip()
    key = stripped.encode("utf-8")
    if len(stripped) >= 32 and len(stripped) % 2 == 0:
        try:
            key = bytes.fromhex(stripped)
        except ValueError:
            pass  # not hex: the raw text is the key
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{KEY_ENV}: the pseudonym key must be at least {MIN_KEY_BYTES} bytes")
    return key


def pseudonym(key: bytes, actor_id: str) -> str:
    """The pseudonym of ``actor_id`` under ``key``; raises :class:`InvalidEvent` for an id
    that is not a non-blank string."""
    if not isinstance(actor_id, str) or not actor_id.strip():
        raise InvalidEvent("actor.id", "expected a non-blank actor id to pseudonymize")
    try:
        message = actor_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("actor.id", "contains an unpaired surrogate") from None
    return PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()


class Pseudonymizer:
    """Maps actor ids to pseudonyms and publishes each new mapping once per process.

    ``publish(pseudonym, identity)`` is called before the pseudonym is first returned, so a
    mapping is on its way before any event that names it.
    """

    def __init__(self, key: bytes, *, publish: Publish | None = None) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"pseudonym key: expected at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._publish = publish
        self._published: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(key=<redacted>)"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, publish: Publish | None = None
    ) -> Pseudonymizer:
        """From ``BALDUR_PSEUDONYM_KEY``; raises :class:`ConfigError` when it is missing."""
        env = os.environ if environ is None else environ
        raw = env.get(KEY_ENV, "")
        if not raw.strip():
            raise ConfigError(f"{KEY_ENV} is not set: actor pseudonyms need a key")
        return cls(parse_key(raw), publish=publish)

    def __call__(self, actor_id: str) -> str:
        """The pseudonym of ``actor_id``, its mapping published first (once)."""
        name = pseudonym(self._key, actor_id)
        if self._publish is not None:
            with self._lock:
                if name not in self._published:
                    self._publish(name, actor_id)
                    self._published.add(name)
        return name


class KafkaIdentityPublisher:
    """Publishes (pseudonym, identity) to ``<topic>.identities``, keyed by pseudonym."""

    def __init__(
        self, *, bootstrap: str, topic: str, producer_config: Mapping[str, Any] | None = None
    ) -> None:
        self.topic = identities_topic(topic)
        self.failed = 0
        try:
            self._producer = confluent_kafka.Producer(
                {
                    "client.id": "baldur-audit-identities",
                    **dict(producer_config or {}),
                    "bootstrap.servers": bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                }
            )
        except confluent_kafka.KafkaException as exc:
            raise ConfigError(
                f"identity publisher: {scrub_client_secrets(str(exc), producer_config)}"
            ) from None

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            log.error("identity mapping not delivered to %s: %s", self.topic, err)

    def __call__(self, name: str, identity: str | None) -> None:
        """Send one mapping (``identity`` None: a tombstone, which erasure sends)."""
        self._producer.produce(
            self.topic,
            key=name.encode("ascii"),
            value=None if identity is None else identity.encode("utf-8"),
            on_delivery=self._delivered,
        )
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for delivery; returns how many mappings are still undelivered."""
        return int(self._producer.flush(timeout))
