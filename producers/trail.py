"""The audit trail a service embeds: redact, mask, trace, validate, encode, produce.

``AuditTrail.record()`` turns one change into a :class:`ChangeEvent`, single-object
encodes it and hands it to an idempotent Kafka producer (``enable.idempotence=true``,
so ``acks=all`` and no duplicates or reordering from retries). Secrets are redacted and
the client IP masked before encoding, so they never leave the process.

Failure semantics (what the host service is promised):

- ``record()`` never blocks for long and never drops an event silently. When Kafka is
  down, events wait in the producer's memory queue (up to ``queue_max_messages``) and
  are retried until ``message_timeout_ms``. When that queue is full, ``record()`` waits
  at most ``max_block_ms`` for room and then raises :class:`DeliveryBacklog`: the event
  was *not* accepted, and the caller decides (fail the change, or log it elsewhere).
  A durable disk spool in front of the queue is a later addition; until then, events
  still queued when the process dies are lost, which is why ``close()`` reports them.
- Every accepted event ends in exactly one delivery report: counted in :attr:`stats`
  as delivered or failed; a failure is logged at ERROR with the event id and passed to
  the optional ``on_failure(event_id, error)`` callback. A failed delivery may still
  have been written (librdkafka cannot tell after a timeout): the ledger's rule "first
  occurrence of an event id wins" makes a later resend harmless.
- Delivery reports are served by ``poll(0)`` inside ``record()`` and by ``flush()``;
  callbacks (``on_failure`` included) run on whichever thread calls those.
- The message key is None: the ledger topic has one partition, which orders everything.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import confluent_kafka

from baldur_audit.schemas.codec import encode_event
from baldur_audit.schemas.errors import AuditError, BrokerUnavailable, ConfigError, InvalidEvent
from baldur_audit.schemas.event import Actor, ChangeEvent, to_json_text, uuid7

from .kafka_producer import KafkaProducerPort, build_producer, scrub_settings
from .mask import mask_client_ip
from .redact import Redactor
from .trace import make_traceparent, resolve_trace_id

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:29092"
DEFAULT_TOPIC = "baldur.audit.events"
#: What ``record()`` returns on a disabled trail: no event was recorded.
NIL_EVENT_ID = uuid.UUID(int=0)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})

FailureCallback = Callable[[uuid.UUID, str], None]
ProducerFactory = Callable[[dict[str, Any]], KafkaProducerPort]


class DeliveryBacklog(AuditError):
    """The producer queue stayed full: the event was not accepted (nothing was sent)."""

    def __init__(self, event_id: uuid.UUID, pending: int, waited_ms: int) -> None:
        self.event_id = event_id
        self.pending = pending
        super().__init__(f"event {event_id} not accepted: {pending} events already wait for "
                         f"kafka and the queue stayed full for {waited_ms} ms")


class TrailClosed(AuditError):
    """``record()`` was called after ``close()``."""


@dataclass(frozen=True, slots=True)
class TrailStats:
    """Counts since the trail was created; ``pending`` = queued - delivered - failed."""

    queued: int = 0  # accepted by the producer
    delivered: int = 0  # acknowledged by the broker (acks=all)
    failed: int = 0  # delivery report with an error: timed out, purged, refused
    refused: int = 0  # record() raised DeliveryBacklog or BrokerUnavailable: never queued

    @property
    def pending(self) -> int:
        return self.queued - self.delivered - self.failed


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true/false, 1/0, yes/no or on/off, "
                      f"found {value[:20]!r}")


def _env_key(text: str) -> bytes:
    """A redaction key from the environment: hex (even length, 32+ digits) or raw text."""
    stripped = text.strip()
    if len(stripped) >= 32 and len(stripped) % 2 == 0:
        try:
            return bytes.fromhex(stripped)
        except ValueError:
            pass  # not hex: the raw text is the key
    return stripped.encode("utf-8")


class AuditTrail:
    """Records change events to the ledger topic; see the module docstring for guarantees."""

    def __init__(self, *, bootstrap: str, topic: str = DEFAULT_TOPIC, enabled: bool = True,
                 redaction_key: bytes | None = None,
                 producer_config: Mapping[str, Any] | None = None,
                 service: str | None = None, on_failure: FailureCallback | None = None,
                 message_timeout_ms: int = 300_000, queue_max_messages: int = 100_000,
                 max_block_ms: int = 50,
                 producer_factory: ProducerFactory | None = None) -> None:
        """Raises :class:`ConfigError` on a bad setting or a producer librdkafka refuses."""
        if not isinstance(topic, str) or not topic.strip():
            raise ConfigError("topic: expected a topic name")
        self._topic = topic
        self._enabled = enabled
        self._service = service
        self._redactor = Redactor(redaction_key)
        self._on_failure = on_failure
        self._max_block_ms = max(0, int(max_block_ms))
        self._lock = threading.Lock()
        self._stats = TrailStats()
        self._closed = False
        self._fatal = False
        self._producer: KafkaProducerPort | None = None
        self._settings: dict[str, Any] = {}
        if not enabled:
            return  # a disabled trail has no producer and no connection
        self._factory: ProducerFactory = producer_factory or confluent_kafka.Producer
        self._settings = dict(producer_config or {})
        self._build_options: dict[str, Any] = {
            "bootstrap": bootstrap, "client_id": service or "baldur-audit",
            "message_timeout_ms": message_timeout_ms, "queue_max_messages": queue_max_messages,
        }
        self._producer = build_producer(self._factory, **self._rebuild_options())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> AuditTrail:
        """A trail configured from ``BALDUR_*`` variables; ``options`` go to the constructor.

        ``BALDUR_AUDIT_ENABLED`` (true/1/yes/on; default false: a no-op trail),
        ``BALDUR_KAFKA_BOOTSTRAP`` (default 127.0.0.1:29092), ``BALDUR_AUDIT_TOPIC``
        (default baldur.audit.events), ``BALDUR_REDACTION_KEY`` (hex of 32+ digits, or
        raw text), ``BALDUR_SERVICE_NAME``. Raises :class:`ConfigError` on a bad value.
        """
        env = os.environ if environ is None else environ
        key_text = env.get("BALDUR_REDACTION_KEY")
        settings: dict[str, Any] = {
            "enabled": _env_flag(env, "BALDUR_AUDIT_ENABLED"),
            "bootstrap": env.get("BALDUR_KAFKA_BOOTSTRAP") or DEFAULT_BOOTSTRAP,
            "topic": env.get("BALDUR_AUDIT_TOPIC") or DEFAULT_TOPIC,
            "redaction_key": _env_key(key_text) if key_text else None,
            "service": env.get("BALDUR_SERVICE_NAME") or None,
        }
        settings.update(options)
        return cls(**settings)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def stats(self) -> TrailStats:
        with self._lock:
            return self._stats

    def record(self, *, actor: str | Actor, action: str, target: str, before: Any = None,
               after: Any = None, reason: str | None = None, source: str = "api",
               actor_type: str = "user", trace_id: str | None = None,
               traceparent: str | None = None, client_ip: str | list[str] | None = None,
               attributes: Mapping[str, str] | None = None,
               occurred_at: datetime | None = None,
               event_id: uuid.UUID | None = None) -> uuid.UUID:
        """Record one change and return its event id (:data:`NIL_EVENT_ID` when disabled).

        ``actor`` is a name (typed by ``actor_type``) or an :class:`Actor`. ``before`` and
        ``after`` are JSON-like values. A disabled trail returns at once, validating
        nothing. Raises what :meth:`prepare` and :meth:`publish` raise.
        """
        if not self._enabled:
            return NIL_EVENT_ID
        if self._closed:
            raise TrailClosed("audit trail is closed")
        return self.publish(self.prepare(
            actor=actor, action=action, target=target, before=before, after=after,
            reason=reason, source=source, actor_type=actor_type, trace_id=trace_id,
            traceparent=traceparent, client_ip=client_ip, attributes=attributes,
            occurred_at=occurred_at, event_id=event_id))

    def prepare(self, *, actor: str | Actor, action: str, target: str, before: Any = None,
                after: Any = None, reason: str | None = None, source: str = "api",
                actor_type: str = "user", trace_id: str | None = None,
                traceparent: str | None = None, client_ip: str | list[str] | None = None,
                attributes: Mapping[str, str] | None = None,
                occurred_at: datetime | None = None,
                event_id: uuid.UUID | None = None) -> ChangeEvent:
        """The redacted, masked and validated event :meth:`record` would send; sends nothing.

        Lets a caller check a batch before sending any of it (then :meth:`publish` each).
        Raises :class:`InvalidEvent` naming the bad field.
        """
        if attributes is not None and not isinstance(attributes, Mapping):
            raise InvalidEvent("attributes", "expected a mapping of strings to strings")
        extra = dict(attributes or {})
        if self._service is not None:
            extra.setdefault("service", self._service)
        return ChangeEvent(
            event_id=uuid7(time.time_ns() // 1_000_000, os.urandom(10)) if event_id is None
            else event_id,
            occurred_at=occurred_at or datetime.now(UTC),
            actor=actor if isinstance(actor, Actor) else Actor(id=actor, type=actor_type),
            action=action,
            target=target,
            source=source,
            before=self._json("before", before),
            after=self._json("after", after),
            reason=self._redactor.redact(reason),
            trace_id=resolve_trace_id(trace_id, traceparent),
            client_ip=mask_client_ip(client_ip),
            attributes=self._redactor.redact(extra),
        )

    def publish(self, event: ChangeEvent) -> uuid.UUID:
        """Send an event built by :meth:`prepare`; returns its id (nil when disabled).

        The event is sent as it is: build it with :meth:`prepare`, which redacts and
        masks. Raises :class:`InvalidEvent` if ``event`` is not a :class:`ChangeEvent`,
        :class:`DeliveryBacklog` when the producer queue stays full,
        :class:`BrokerUnavailable` when the producer refuses the message, and
        :class:`TrailClosed` after :meth:`close`.
        """
        if not isinstance(event, ChangeEvent):
            raise InvalidEvent("event", f"expected a ChangeEvent, found {type(event).__name__}")
        if not self._enabled:
            return NIL_EVENT_ID
        if self._closed:
            raise TrailClosed("audit trail is closed")
        headers = None
        if event.trace_id is not None:
            headers = [("traceparent", make_traceparent(event.trace_id).encode("ascii"))]
        self._produce(event.event_id, encode_event(event), headers)
        return event.event_id

    def record_change(self, *, actor: str | Actor, target: str, before: Any, after: Any,
                      reason: str | None = None, action: str = "update",
                      **options: Any) -> uuid.UUID:
        """Record a configuration change (default action ``update``); see :meth:`record`."""
        return self.record(actor=actor, action=action, target=target, before=before,
                           after=after, reason=reason, **options)

    def record_healing(self, *, target: str, action: str, reason: str, before: Any = None,
                       after: Any = None, actor: str | Actor = "baldur-healer",
                       actor_type: str = "system", source: str = "framework",
                       **options: Any) -> uuid.UUID:
        """Record an automated healing decision (trip, recover, restart, scale, failover...).

        A healing decision must say why: raises :class:`InvalidEvent` naming ``reason``
        when it is missing or empty, and whatever :meth:`record` raises.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidEvent("reason", "is required for a healing decision")
        return self.record(actor=actor, actor_type=actor_type, action=action, target=target,
                           before=before, after=after, reason=reason, source=source,
                           **options)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for delivery; returns how many are still undelivered.

        The count is the producer's queue length afterwards (queued plus in flight).
        Events whose delivery failed are not in it: they are in :attr:`stats` ``.failed``
        and were passed to ``on_failure``.
        """
        producer = self._producer
        if producer is None:
            return 0
        return int(producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then stop; returns how many events were still undelivered.

        Those events are purged, so each gets a failed delivery report (counted, logged
        with its event id and passed to ``on_failure``) instead of vanishing silently.
        """
        if self._closed:
            return 0
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is None:
            return 0
        remaining = int(producer.flush(timeout))
        if remaining:
            logger.error("closing the audit trail with %d events undelivered to %s; "
                         "they are reported as failed", remaining, self._topic)
            producer.purge()
            producer.poll(0)
        return remaining

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _json(self, name: str, value: Any) -> str | None:
        if value is None:
            return None
        return to_json_text(name, self._redactor.redact(value))

    def _produce(self, event_id: uuid.UUID, payload: bytes,
                 headers: list[tuple[str, bytes]] | None) -> None:
        producer = self._current_producer()
        on_delivery = functools.partial(self._on_delivery, event_id)
        deadline = time.monotonic() + self._max_block_ms / 1000
        while True:
            try:
                producer.produce(self._topic, value=payload, headers=headers,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                # The queue is full: serve delivery reports to make room, briefly.
                left = deadline - time.monotonic()
                if left <= 0:
                    self._count(refused=1)
                    raise DeliveryBacklog(event_id, len(producer), self._max_block_ms) from None
                producer.poll(min(left, 0.01))
            except confluent_kafka.KafkaException as exc:
                self._count(refused=1)
                error = exc.args[0] if exc.args else None
                name = error.name() if isinstance(error, confluent_kafka.KafkaError) else "?"
                raise BrokerUnavailable(f"kafka producer refused event {event_id}: "
                                        f"{name}") from None
        self._count(queued=1)
        producer.poll(0)

    def _current_producer(self) -> KafkaProducerPort:
        """The producer, recreated first if the previous one hit a fatal error."""
        with self._lock:
            producer = self._producer
            if producer is None:
                raise TrailClosed("audit trail is closed")
            if not self._fatal:
                return producer
            self._fatal = False
            self._producer = build_producer(self._factory, **self._rebuild_options())
            fresh = self._producer
        # librdkafka fails what the old producer still held: serve those reports.
        producer.purge()
        producer.poll(0)
        return fresh

    def _rebuild_options(self) -> dict[str, Any]:
        return dict(self._build_options, extra=self._settings, error_cb=self._on_error)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            current = self._stats
            self._stats = TrailStats(**{name: getattr(current, name) + deltas.get(name, 0)
                                        for name in ("queued", "delivered", "failed",
                                                     "refused")})

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        text = scrub_settings(error.str(), self._settings)
        if error.fatal():
            self._fatal = True  # the next record() builds a new producer
            logger.error("kafka producer fatal error %s: %s; it will be recreated",
                         error.name(), text)
        else:
            logger.warning("kafka producer error %s: %s", error.name(), text)

    def _on_delivery(self, event_id: uuid.UUID, error: confluent_kafka.KafkaError | None,
                     message: object) -> None:
        if error is None:
            self._count(delivered=1)
            return
        self._count(failed=1)
        text = f"{error.name()}: {scrub_settings(error.str(), self._settings)}"
        logger.error("audit event %s was not delivered to %s (%s); it may still have been "
                     "written", event_id, self._topic, text)
        if self._on_failure is not None:
            try:
                self._on_failure(event_id, text)
            except Exception:  # a host callback must not break delivery reporting
                logger.exception("on_failure callback raised for audit event %s", event_id)
