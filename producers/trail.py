"""The audit trail a service embeds: redact, mask, trace, validate, encode, produce.

``AuditTrail.record()`` turns one change into a :class:`ChangeEvent`, single-object
encodes it and hands it to an idempotent Kafka producer (``enable.idempotence=true``,
so ``acks=all`` and no duplicates or reordering from retries). Secrets are redacted and
the client IP masked before encoding, so they never leave the process.

Durability (``durability=``):

- ``"spool"`` (the default of :meth:`AuditTrail.from_env`, and of the constructor when
  ``spool_dir`` is given): events the broker cannot take *now* go to a durable disk spool
  (:mod:`.spool`), fsync'd before ``record()`` returns, and a background thread
  (:mod:`.spool.drain`) sends them when the broker is back — also after a restart or a
  ``kill -9`` of the process. An event is spooled when the broker is not known to be
  reachable (from start-up until the first acknowledgement, and after ``_ALL_BROKERS_DOWN``,
  ``_TRANSPORT`` or a ``_MSG_TIMED_OUT`` delivery), when the producer's memory queue is
  full, and while the spool holds anything (so later events do not overtake spooled
  ones). On ``_ALL_BROKERS_DOWN`` the events still waiting in the memory queue are purged
  from it into the spool, and a delivery that fails with an error that may pass (timeout,
  purge, an unreachable or refusing cluster, a missing topic) puts its event into the
  spool instead of dropping it. *Not durable in this mode*: events handed to the producer
  while the broker was up stay in memory until acknowledged, so a crash of the process in
  that window (at most ``linger.ms`` plus one round trip while the broker answers; until
  the purge when it stops answering) loses them.
- ``"always"``: every event is written to the spool before it is sent (a write-ahead
  log); nothing ``record()`` returned for is lost to a process crash.
- ``"memory"`` (the constructor's default without ``spool_dir``): no spool. Events wait in
  the producer's memory queue (up to ``queue_max_messages``) and are retried until
  ``message_timeout_ms``; when that queue is full ``record()`` waits at most
  ``max_block_ms`` for room and then raises :class:`DeliveryBacklog`. Events still queued
  when the process dies are lost, which is why ``close()`` reports them.

Failure semantics (what the host service is promised):

- ``record()`` never blocks for long (with a spool: one ``fdatasync``) and never drops an
  event silently: when it raises (:class:`DeliveryBacklog`, :class:`SpoolFull`,
  :class:`SpoolError`, :class:`BrokerUnavailable`) the event was *not* accepted, and with
  a spool ``on_failure`` is told as well.
- Every accepted event ends delivered (counted in :attr:`stats`), or failed: counted,
  logged at ERROR with the event id and passed to the optional
  ``on_failure(event_id, error)`` callback. With a spool, only errors about the message
  itself (too large, invalid) fail an event; others keep it in the spool. A failed or
  repeated delivery may still have been written (librdkafka cannot tell after a
  timeout): the ledger's rule "first occurrence of an event id wins" seals the repeat as
  a *duplicate*, so queries show one row.
- Delivery reports are served by ``poll(0)`` inside ``record()`` (memory mode), by the
  drainer thread (spool modes) and by ``flush()``; callbacks (``on_failure`` included) run
  on whichever thread serves them.
- Order: events reach the topic in the order ``record()`` accepted them, except that an
  event re-spooled after a failed delivery lands after the events spooled meanwhile.
- The message key is None: the ledger topic has one partition, which orders everything.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import confluent_kafka

from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
from baldur_audit.schemas.defaults import DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
from baldur_audit.schemas.errors import AuditError, BrokerUnavailable, ConfigError, InvalidEvent
from baldur_audit.schemas.event import Actor, ChangeEvent, to_json_text, uuid7

from .buffer import DEFAULT_MIN_IDLE_MS, open_redis_buffer, redis_buffer_settings
from .context import fill_from_context
from .filechain.config import DISTRIBUTED_ENV
from .filechain.config import open_from_env as open_file_chain
from .filechain.format import FileChainError
from .filechain.writer import FileChainWriter
from .kafka_config import CONFIG_ENV, load_client_config
from .kafka_producer import KafkaProducerPort, build_producer, is_permanent, refusal_hint, scrub_settings
from .mask import mask_client_ip
from .metrics import TrailMetrics
from .redact import Redactor
from .schema_records import SchemaAnnouncer
from .spool.disk import DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES, DiskSpool, SpoolError
from .spool.drain import SpoolDrainer
from .spool.slots import default_spool_dir, open_slots
from .trace import make_traceparent, resolve_trace_id

if TYPE_CHECKING:
    from .buffer.redis_stream import RedisStreamBuffer

logger = logging.getLogger(__name__)

#: What ``record()`` returns on a disabled trail: no event was recorded.
NIL_EVENT_ID = uuid.UUID(int=0)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
DURABILITIES = ("memory", "spool", "always")
_UNREACHABLE = frozenset(
    {confluent_kafka.KafkaError._ALL_BROKERS_DOWN, confluent_kafka.KafkaError._TRANSPORT}
)

FailureCallback = Callable[[uuid.UUID, str], None]
ProducerFactory = Callable[[dict[str, Any]], KafkaProducerPort]


class DeliveryBacklog(AuditError):
    """The producer queue stayed full: the event was not accepted (nothing was sent)."""

    def __init__(self, event_id: uuid.UUID, pending: int, waited_ms: int) -> None:
        self.event_id = event_id
        self.pending = pending
        super().__init__(
            f"event {event_id} not accepted: {pending} events already wait for "
            f"kafka and the queue stayed full for {waited_ms} ms"
        )


class TrailClosed(AuditError):
    """``record()`` was called after ``close()``."""


@dataclass(frozen=True, slots=True)
class TrailStats:
    """Counts since the trail was created; ``pending`` = queued - delivered - failed."""

    queued: int = 0  # accepted: by the producer or the spool, or recovered from a spool
    delivered: int = 0  # acknowledged by the broker (acks=all)
    failed: int = 0  # delivery report with an error: timed out, purged, refused
    refused: int = 0  # record() raised (backlog, spool full, broker refused): never queued
    spooled: int = 0  # written to the spool (at record() or after a failed delivery)
    recovered: int = 0  # found in a spool at start (left by an earlier process), sent again

    @property
    def pending(self) -> int:
        return self.queued - self.delivered - self.failed


_STAT_FIELDS = tuple(item.name for item in dataclasses.fields(TrailStats))
_ONE_DELIVERED = {"delivered": 1}


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true/false, 1/0, yes/no or on/off, found {value[:20]!r}")


def _env_key(text: str) -> bytes:
    """A redaction key from the environment: hex (even length, 32+ digits) or raw text."""
    stripped = text.strip()
    if len(stripped) >= 32 and len(stripped) % 2 == 0:
        try:
            return bytes.fromhex(stripped)
        except ValueError:
            pass  # not hex: the raw text is the key
    return stripped.encode("utf-8")


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def caller_event_id(value: object) -> uuid.UUID:
    """A caller's event id (``record(event_id=...)``): a :class:`uuid.UUID`, or its
    36-character hyphenated text in either case; not the nil UUID, which a disabled trail
    returns. Re-sending an event under the id it had makes the ledger seal the copy as a
    *duplicate*, never as a second event (an outbox or a retrying sender relies on that).
    Raises :class:`InvalidEvent` naming ``event_id`` (quoting no value)."""
    if isinstance(value, str) and _UUID_TEXT.fullmatch(value):
        value = uuid.UUID(value)
    if not isinstance(value, uuid.UUID):
        raise InvalidEvent("event_id", "expected a UUID (36 characters, hyphenated hex)")
    if value == NIL_EVENT_ID:
        raise InvalidEvent("event_id", "the nil UUID is not an event id")
    return value


class AuditTrail:
    """Records change events to the ledger topic; see the module docstring for guarantees."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        enabled: bool = True,
        redaction_key: bytes | None = None,
        producer_config: Mapping[str, Any] | None = None,
        service: str | None = None,
        on_failure: FailureCallback | None = None,
        message_timeout_ms: int = 300_000,
        queue_max_messages: int = 100_000,
        max_block_ms: int = 50,
        durability: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        producer_factory: ProducerFactory | None = None,
        pseudonymize_actors: Callable[[str], str] | None = None,
        file_chain: FileChainWriter | None = None,
        redis_url: str | None = None,
        redis_min_idle_ms: int = DEFAULT_MIN_IDLE_MS,
    ) -> None:
        """Raises :class:`ConfigError` on a bad setting, a producer librdkafka refuses or an
        unusable spool directory; :class:`SpoolError` when the spool cannot be recovered.

        ``durability`` is ``"memory"``, ``"spool"`` or ``"always"`` (module docstring); it
        defaults to ``"spool"`` when ``spool_dir`` is given, else ``"memory"``. The spool of
        a trail lives in ``<spool_dir>/<topic>/<slot>`` (``spool_dir`` defaults to
        ``$BALDUR_AUDIT_SPOOL_DIR`` or ``spool`` in the state folder). With ``redis_url``
        the spool is a Redis stream instead (:mod:`.buffer.redis_stream`), shared by every
        trail of the topic: each drains what it staged and claims what a dead one left
        after ``redis_min_idle_ms``.
        """
        if not isinstance(topic, str) or not topic.strip():
            raise ConfigError("topic: expected a topic name")
        if durability is None:
            durability = "memory" if spool_dir is None and redis_url is None else "spool"
        if durability not in DURABILITIES:
            raise ConfigError(
                f"durability: expected one of {', '.join(DURABILITIES)}, found {str(durability)[:20]!r}"
            )
        for name, number in (
            ("spool_max_bytes", spool_max_bytes),
            ("spool_segment_bytes", spool_segment_bytes),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
                raise ConfigError(f"{name}: expected a positive number of bytes")
        self._topic = topic
        self._enabled = enabled
        self._service = service
        self._redactor = Redactor(redaction_key)
        # Opt-in (right to erasure): actor ids become keyed pseudonyms, e.g. a
        # producers.pseudonym.Pseudonymizer that publishes each mapping to <topic>.identities.
        self._pseudonymize = pseudonymize_actors
        self._on_failure = on_failure
        self._max_block_ms = max(0, int(max_block_ms))
        self._lock = threading.Lock()
        self._order = threading.RLock()  # routing: spool appends and direct sends keep order
        self._schema_records = SchemaAnnouncer(schemas=KNOWN_SCHEMAS)  # CHAIN.md §19
        self._counts = dict.fromkeys(_STAT_FIELDS, 0)  # TrailStats fields, under _lock
        self._metrics = TrailMetrics(topic, enabled=enabled)  # Prometheus, if installed
        self._closed = False
        self._fatal = False
        # Why the cluster refused the producer (credentials, TLS, ACLs), and when that was logged.
        self._refusal: str | None = None
        self._refusal_logged = -60.0
        self._producer: KafkaProducerPort | None = None
        self._settings: dict[str, Any] = {}
        self._durability = durability if enabled else "memory"
        self._spool: DiskSpool | RedisStreamBuffer | None = None
        self._drainer: SpoolDrainer | None = None
        # True once the broker acknowledged, False after it was found unreachable, None
        # before either: with a spool, events are spooled unless it is True.
        self._reachable: bool | None = None
        self._purge_armed = False  # set once the broker answered: the next outage purges
        self._purge_due = False
        # The local file chain (filechain/): events are sealed in-process, no Kafka at all.
        self._file = file_chain if enabled else None
        if not enabled or self._file is not None:
            return  # a disabled trail has no producer, no connection and no spool
        self._factory: ProducerFactory = producer_factory or confluent_kafka.Producer
        self._settings = dict(producer_config or {})
        self._build_options: dict[str, Any] = {
            "bootstrap": bootstrap,
            "client_id": service or "baldur-audit",
            "message_timeout_ms": message_timeout_ms,
            "queue_max_messages": queue_max_messages,
        }
        adopted: list[DiskSpool] = []
        if self._durability == "memory" and redis_url is not None and enabled:
            raise ConfigError("redis_url: the Redis buffer needs durability spool or always, not memory")
        if self._durability != "memory" and redis_url is not None:
            self._spool = open_redis_buffer(
                redis_url,
                topic,
                max_bytes=spool_max_bytes,
                min_idle_ms=redis_min_idle_ms,
                on_claimed=lambda count: self._count(queued=count, recovered=count),
            )
        elif self._durability != "memory":
            root = Path(spool_dir) if spool_dir is not None else default_spool_dir(os.environ)
            self._spool, adopted = open_slots(
                root, topic, max_bytes=spool_max_bytes, segment_bytes=spool_segment_bytes
            )
            recovered = self._spool.recovered + sum(spool.recovered for spool in adopted)
            self._count(queued=recovered, recovered=recovered)
        try:
            self._producer = build_producer(self._factory, **self._rebuild_options())
        except BaseException:
            for spool in (*adopted, *([self._spool] if self._spool else [])):
                spool.close()
            raise
        if self._spool is not None:
            self._drainer = SpoolDrainer(topic=topic, spools=[*adopted, self._spool], hooks=_Hooks(self))
            self._drainer.start()
            self._metrics.watch_spool(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> AuditTrail:
        """A trail configured from ``BALDUR_*`` variables; ``options`` go to the constructor.

        ``BALDUR_AUDIT_ENABLED`` (true/1/yes/on; default false: a no-op trail),
        ``BALDUR_KAFKA_BOOTSTRAP`` (default 127.0.0.1:29092), ``BALDUR_AUDIT_TOPIC``
        (default baldur.audit.events), ``BALDUR_REDACTION_KEY`` (hex of 32+ digits, or
        raw text), ``BALDUR_SERVICE_NAME``, ``BALDUR_AUDIT_DURABILITY`` (memory, spool or
        always; default spool), ``BALDUR_AUDIT_SPOOL_DIR`` (default ``spool`` in
        ``$BALDUR_STATE_DIR`` or ``$XDG_STATE_HOME/baldur-audit``),
        ``BALDUR_AUDIT_SPOOL_MAX_BYTES`` (default 1 GiB), ``BALDUR_KAFKA_CONFIG`` (a librdkafka
        properties file: security and tuning, see ``kafka_config.py``). Raises
        :class:`ConfigError` on a bad value.
        """
        env = os.environ if environ is None else environ
        key_text = env.get("BALDUR_REDACTION_KEY")
        durability = (env.get("BALDUR_AUDIT_DURABILITY") or "spool").strip().lower()
        if durability not in DURABILITIES:
            raise ConfigError(
                f"BALDUR_AUDIT_DURABILITY: expected one of "
                f"{', '.join(DURABILITIES)}, found {durability[:20]!r}"
            )
        settings: dict[str, Any] = {
            "enabled": _env_flag(env, "BALDUR_AUDIT_ENABLED"),
            "bootstrap": env.get("BALDUR_KAFKA_BOOTSTRAP") or DEFAULT_BOOTSTRAP,
            "topic": env.get("BALDUR_AUDIT_TOPIC") or DEFAULT_TOPIC,
            "redaction_key": _env_key(key_text) if key_text else None,
            "service": env.get("BALDUR_SERVICE_NAME") or None,
            "durability": durability,
        }
        if durability != "memory":
            settings["spool_dir"] = default_spool_dir(env)
        max_text = (env.get("BALDUR_AUDIT_SPOOL_MAX_BYTES") or "").strip()
        if max_text:
            if not max_text.isdigit() or int(max_text) <= 0:
                raise ConfigError(
                    "BALDUR_AUDIT_SPOOL_MAX_BYTES: expected a positive number "
                    f"of bytes, found {max_text[:20]!r}"
                )
            settings["spool_max_bytes"] = int(max_text)
        config_file = (env.get(CONFIG_ENV) or "").strip()
        if config_file:
            settings["producer_config"] = load_client_config(config_file)
        if settings["enabled"] and not _env_flag(env, DISTRIBUTED_ENV) and "file_chain" not in options:
            settings["file_chain"] = open_file_chain(env, topic=options.get("topic", settings["topic"]))
        settings.update(redis_buffer_settings(env))
        settings.update(options)
        return cls(**settings)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def refusal(self) -> str | None:
        """The last error by which the cluster refused this producer (authentication, TLS,
        authorization), with what to check; None if it never did. Kafka keeps refusing until
        the configuration or the cluster changes, however often the client retries."""
        return self._refusal

    @property
    def stats(self) -> TrailStats:
        with self._lock:
            return TrailStats(**self._counts)

    @property
    def spool_bytes(self) -> int:
        """Bytes of events waiting in this trail's spool (0 without one, or once closed)."""
        drainer = self._drainer
        if drainer is None or self._closed:
            return 0
        return sum(spool.pending_bytes for spool in drainer.spools)

    def record(
        self,
        *,
        actor: str | Actor | None = None,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
        source: str = "api",
        actor_type: str | None = None,
        trace_id: str | None = None,
        traceparent: str | None = None,
        client_ip: str | list[str] | None = None,
        attributes: Mapping[str, str] | None = None,
        occurred_at: datetime | None = None,
        event_id: uuid.UUID | str | None = None,
    ) -> uuid.UUID:
        """Record one change and return its event id (:data:`NIL_EVENT_ID` when disabled).

        ``actor`` is a name (typed by ``actor_type``, default ``user``) or an :class:`Actor`.
        Inside a request (:mod:`.context`, set by :mod:`.middleware`) the actor, client IP
        and trace the caller leaves out come from the request context. ``before`` and
        ``after`` are JSON-like values. ``event_id`` (a UUID, or its text) is the caller's
        own id for the event, for an outbox or a retrying sender: a re-send with the same id
        is sealed as a *duplicate*, never as a second event; by default a new UUIDv7. A
        disabled trail returns at once, validating nothing. Raises what :meth:`prepare` and
        :meth:`publish` raise.
        """
        if not self._enabled:
            return NIL_EVENT_ID
        if self._closed:
            raise TrailClosed("audit trail is closed")
        return self.publish(
            self.prepare(
                actor=actor,
                action=action,
                target=target,
                before=before,
                after=after,
                reason=reason,
                source=source,
                actor_type=actor_type,
                trace_id=trace_id,
                traceparent=traceparent,
                client_ip=client_ip,
                attributes=attributes,
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    def prepare(
        self,
        *,
        actor: str | Actor | None = None,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
        source: str = "api",
        actor_type: str | None = None,
        trace_id: str | None = None,
        traceparent: str | None = None,
        client_ip: str | list[str] | None = None,
        attributes: Mapping[str, str] | None = None,
        occurred_at: datetime | None = None,
        event_id: uuid.UUID | str | None = None,
    ) -> ChangeEvent:
        """The redacted, masked and validated event :meth:`record` would send; sends nothing.

        Lets a caller check a batch before sending any of it (then :meth:`publish` each).
        Raises :class:`InvalidEvent` naming the bad field.
        """
        if attributes is not None and type(attributes) is not dict and not isinstance(attributes, Mapping):
            raise InvalidEvent("attributes", "expected a mapping of strings to strings")
        filled = fill_from_context(
            {
                "actor": actor,
                "actor_type": actor_type,
                "client_ip": client_ip,
                "trace_id": trace_id,
                "traceparent": traceparent,
            }
        )
        extra = dict(attributes or {})
        if self._service is not None:
            extra.setdefault("service", self._service)
        return ChangeEvent(
            event_id=uuid7(time.time_ns() // 1_000_000, os.urandom(10))
            if event_id is None
            else caller_event_id(event_id),
            occurred_at=datetime.now(UTC) if occurred_at is None else occurred_at,
            actor=self._actor(filled["actor"], filled["actor_type"]),
            action=action,
            target=self._redactor.redact(target) if isinstance(target, str) else target,
            source=source,
            before=self._json("before", before),
            after=self._json("after", after),
            reason=self._redactor.redact(reason),
            trace_id=resolve_trace_id(filled["trace_id"], filled["traceparent"]),
            client_ip=mask_client_ip(filled["client_ip"]),
            attributes=self._redactor.redact(extra),
        )

    def _actor(self, actor: str | Actor, actor_type: str) -> Actor:
        found = actor if isinstance(actor, Actor) else Actor(id=actor, type=actor_type)
        # A credential pasted into an actor id (a DSN, a bearer token) is redacted too.
        found = Actor(id=self._redactor.redact(found.id), type=found.type)
        if self._pseudonymize is None:
            return found
        return Actor(id=self._pseudonymize(found.id), type=found.type)

    def publish(self, event: ChangeEvent) -> uuid.UUID:
        """Send an event built by :meth:`prepare`; returns its id (nil when disabled).

        The event is sent as it is: build it with :meth:`prepare`, which redacts and
        masks. Raises :class:`InvalidEvent` if ``event`` is not a :class:`ChangeEvent`,
        :class:`DeliveryBacklog` when the producer queue stays full (memory mode),
        :class:`SpoolFull` / :class:`SpoolError` when the spool cannot take the event,
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
        value = encode_event(event)
        record = self._schema_records.before(self._topic, value)  # its writer schema first
        if record is not None:
            self._send(record[0], record[1], None)
        self._send(event.event_id, value, headers)
        return event.event_id

    def record_change(
        self,
        *,
        actor: str | Actor | None = None,
        target: str,
        before: Any,
        after: Any,
        reason: str | None = None,
        action: str = "update",
        **options: Any,
    ) -> uuid.UUID:
        """Record a configuration change (default action ``update``); see :meth:`record`."""
        return self.record(
            actor=actor, action=action, target=target, before=before, after=after, reason=reason, **options
        )

    def record_healing(
        self,
        *,
        target: str,
        action: str,
        reason: str,
        before: Any = None,
        after: Any = None,
        actor: str | Actor = "baldur-healer",
        actor_type: str = "system",
        source: str = "framework",
        **options: Any,
    ) -> uuid.UUID:
        """Record an automated healing decision (trip, recover, restart, scale, failover...).

        A healing decision must say why: raises :class:`InvalidEvent` naming ``reason``
        when it is missing or empty, and whatever :meth:`record` raises.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidEvent("reason", "is required for a healing decision")
        return self.record(
            actor=actor,
            actor_type=actor_type,
            action=action,
            target=target,
            before=before,
            after=after,
            reason=reason,
            source=source,
            **options,
        )

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for delivery; returns how many are still undelivered.

        Memory mode: the producer's queue length afterwards (queued plus in flight). With a
        spool: :attr:`stats` ``.pending``, the accepted events neither acknowledged nor
        failed (in the producer or in the spool). Events whose delivery failed are not
        counted: they are in :attr:`stats` ``.failed`` and were passed to ``on_failure``.
        """
        if self._file is not None:
            self._file.flush()
            return 0
        producer = self._producer
        if producer is None:
            return 0
        if self._spool is None:
            return int(producer.flush(timeout))
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            pending = self.stats.pending
            left = deadline - time.monotonic()
            if pending <= 0 or left <= 0:
                return max(0, pending)
            if len(producer):
                producer.flush(min(left, 0.1))
            else:  # the rest is in the spool: the drainer sends it
                time.sleep(min(left, 0.02))

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then stop; returns how many events were still undelivered.

        Memory mode: those events are purged, so each gets a failed delivery report (counted,
        logged with its event id and passed to ``on_failure``) instead of vanishing silently.
        With a spool they stay in the spool (the ones still in the producer are purged into
        it) and are sent by the next trail that opens it; the count is what it holds.
        """
        if self._closed:
            return 0
        self._closed = True
        if self._file is not None:
            self._file.close()
            return 0
        if self._spool is not None:
            return self._close_spooled(timeout)
        producer, self._producer = self._producer, None
        if producer is None:
            return 0
        remaining = int(producer.flush(timeout))
        if remaining:
            logger.error(
                "closing the audit trail with %d events undelivered to %s; they are reported as failed",
                remaining,
                self._topic,
            )
            producer.purge()
            producer.poll(0)
        return remaining

    def _close_spooled(self, timeout: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        drainer = self._drainer
        while self.stats.pending and time.monotonic() < deadline:
            producer = self._producer
            live = (len(producer) if producer is not None else 0) - (
                drainer.in_flight() if drainer is not None else 0
            )
            if self._reachable is False and live <= 0:
                break  # kafka is down and all that is pending is on disk: no use waiting
            time.sleep(0.02)
        drainer, spool = self._drainer, self._spool
        assert drainer is not None and spool is not None  # set together in __init__
        drainer.stop()
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and len(producer):
            # What is left in memory goes to the spool (live events) or stays there (spooled
            # ones): the reports of the purge do that.
            producer.purge()
            producer.poll(0)
        drainer.settle(force=True)
        left = sum(other.close() for other in drainer.spools if other is not spool)
        left += spool.close()
        try:
            if isinstance(spool, DiskSpool):
                spool.directory.parent.rmdir()  # the topic's folder, once no slot is left in it
        except OSError:
            pass
        if left:
            logger.warning(
                "closing the audit trail with %d events not yet delivered to %s; "
                "they are kept in the spool %s and sent when a trail opens it "
                "again",
                left,
                self._topic,
                _place(spool),
            )
        return left

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _json(self, name: str, value: Any) -> str | None:
        if value is None:
            return None
        return to_json_text(name, self._redactor.redact(value))

    def _send(self, event_id: uuid.UUID, payload: bytes, headers: list[tuple[str, bytes]] | None) -> None:
        if self._file is not None:
            try:
                self._file.append(payload)
            except (OSError, FileChainError) as exc:
                self._count(refused=1)
                logger.error("audit event %s not sealed into the file chain: %s", event_id, exc)
                self._tell(event_id, str(exc))
                raise FileChainError(f"event {event_id} not sealed into the file chain: {exc}") from None
            self._count(queued=1, delivered=1)
            return
        if self._spool is None:
            self._produce(event_id, payload, headers)
            return
        with self._order:
            producer = self._current_producer()
            if self._durability == "always" or self._reachable is not True or self._spool.pending:
                self._spool_event(event_id, payload, headers)
                return
            try:
                producer.produce(
                    self._topic,
                    value=payload,
                    headers=headers,
                    on_delivery=functools.partial(self._on_delivery, event_id, payload, headers),
                )
            except BufferError:  # the memory queue is full: the spool takes it
                self._spool_event(event_id, payload, headers)
                return
            except confluent_kafka.KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not (isinstance(error, confluent_kafka.KafkaError) and is_permanent(error)):
                    self._spool_event(event_id, payload, headers)
                    return
                self._count(refused=1)
                raise BrokerUnavailable(f"kafka producer refused event {event_id}: {error.name()}") from None
            self._count(queued=1)

    def _spool_event(
        self, event_id: uuid.UUID, payload: bytes, headers: list[tuple[str, bytes]] | None
    ) -> None:
        """Store an event in the spool for ``record()``; raises (and tells) when it cannot."""
        spool, drainer = self._spool, self._drainer
        assert spool is not None and drainer is not None  # only called in the spool modes
        try:
            spool.append(event_id, payload, headers)
        except SpoolError as exc:
            self._count(refused=1)
            logger.error("audit event %s not accepted: %s", event_id, exc)
            self._tell(event_id, str(exc))
            raise
        self._count(queued=1, spooled=1)
        drainer.wake()

    def _produce(self, event_id: uuid.UUID, payload: bytes, headers: list[tuple[str, bytes]] | None) -> None:
        producer = self._current_producer()
        # No spool to put it back into: the report needs the event id only.
        on_delivery = functools.partial(self._on_delivery, event_id, b"", None)
        deadline = None
        while True:
            try:
                producer.produce(self._topic, value=payload, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                # The queue is full: serve delivery reports to make room, briefly.
                if deadline is None:
                    deadline = time.monotonic() + self._max_block_ms / 1000
                left = deadline - time.monotonic()
                if left <= 0:
                    self._count(refused=1)
                    raise DeliveryBacklog(event_id, len(producer), self._max_block_ms) from None
                producer.poll(min(left, 0.01))
            except confluent_kafka.KafkaException as exc:
                self._count(refused=1)
                error = exc.args[0] if exc.args else None
                name = error.name() if isinstance(error, confluent_kafka.KafkaError) else "?"
                raise BrokerUnavailable(f"kafka producer refused event {event_id}: {name}") from None
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
            counts = self._counts
            for name, delta in deltas.items():
                counts[name] += delta
        self._metrics.count(deltas)

    def _describe(self, error: confluent_kafka.KafkaError) -> str:
        return f"{error.name()}: {scrub_settings(error.str(), self._settings)}"

    def _tell(self, event_id: uuid.UUID, text: str) -> None:
        if self._on_failure is None:
            return
        try:
            self._on_failure(event_id, text)
        except Exception:  # a host callback must not break delivery reporting
            logger.exception("on_failure callback raised for audit event %s", event_id)

    def _broker_up(self) -> None:
        if self._reachable is not True:
            self._reachable = True
            if self._spool is not None and self._counts["spooled"]:
                logger.info("kafka acknowledges audit events again")
        self._purge_armed = True

    def _housekeeping(self) -> None:
        """Drainer tick: after an outage began, move the memory queue into the spool."""
        if not self._purge_due:
            return
        with self._order:
            self._purge_due = False
            producer = self._producer
            if producer is None:
                return
            # Only what waits in the queue: in-flight requests may still be acknowledged.
            producer.purge(in_queue=True, in_flight=False)
            producer.poll(0)  # the purge reports put the events into the spool, in order

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        text = scrub_settings(error.str(), self._settings)
        if error.code() in _UNREACHABLE and self._spool is not None:
            # Also after an idle disconnect (librdkafka #5142): then the next event takes
            # one trip through the spool, and the first acknowledgement ends it.
            if self._reachable is not False:
                logger.info(
                    "kafka unreachable (%s): audit events go to the spool %s until it acknowledges again",
                    error.name(),
                    _place(self._spool),
                )
            self._reachable = False
            if error.code() == confluent_kafka.KafkaError._ALL_BROKERS_DOWN and self._purge_armed:
                self._purge_armed = False
                self._purge_due = True
                if self._drainer is not None:
                    self._drainer.wake()
        hint = refusal_hint(error)
        if hint is not None:
            self._refusal = f"{text} ({hint})"
            # librdkafka retries at once: one line a minute, not one per attempt.
            if time.monotonic() - self._refusal_logged >= 60:
                self._refusal_logged = time.monotonic()
                logger.error("kafka refuses the audit producer: %s", self._refusal)
            return
        if self._refusal is not None and error.code() in _UNREACHABLE:
            logger.debug("kafka producer error %s: %s", error.name(), text)  # the refusal's echo
            return
        if error.fatal():
            self._fatal = True  # the next record() builds a new producer
            logger.error("kafka producer fatal error %s: %s; it will be recreated", error.name(), text)
        elif self._spool is None:
            logger.warning("kafka producer error %s: %s", error.name(), text)
        else:
            logger.info("kafka producer error %s: %s", error.name(), text)

    def _on_delivery(
        self,
        event_id: uuid.UUID,
        payload: bytes,
        headers: list[tuple[str, bytes]] | None,
        error: confluent_kafka.KafkaError | None,
        message: object,
    ) -> None:
        if error is None:  # once per event: _count without its keyword dict
            with self._lock:
                self._counts["delivered"] += 1
            self._metrics.count(_ONE_DELIVERED)
            if self._reachable is not True or not self._purge_armed:
                self._broker_up()
            return
        text = self._describe(error)
        if self._spool is not None and not is_permanent(error):
            if error.code() == confluent_kafka.KafkaError._MSG_TIMED_OUT:
                self._reachable = False
            try:
                with self._order:
                    self._spool.append(event_id, payload, headers)
            except SpoolError as exc:
                text = f"{text}; and the spool refused it: {exc}"
            else:
                self._count(spooled=1)
                logger.info("audit event %s not delivered (%s); kept in the spool", event_id, text)
                if self._drainer is not None:
                    self._drainer.wake()
                return
        self._count(failed=1)
        logger.error(
            "audit event %s was not delivered to %s (%s); it may still have been written",
            event_id,
            self._topic,
            text,
        )
        self._tell(event_id, text)


def _place(spool: DiskSpool | RedisStreamBuffer) -> object:
    """Where a spool keeps its events, for log lines (never a Redis password)."""
    return spool.directory.parent if isinstance(spool, DiskSpool) else spool.where


class _Hooks:
    """The drainer's view of its trail."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    def current_producer(self) -> KafkaProducerPort:
        return self._trail._current_producer()

    def housekeeping(self) -> None:
        self._trail._housekeeping()

    def delivered(self, count: int) -> None:
        self._trail._count(delivered=count)

    def failed(self, event_id: uuid.UUID, text: str) -> None:
        trail = self._trail
        trail._count(failed=1)
        logger.error(
            "spooled audit event %s cannot be delivered to %s (%s); it is dropped from the spool",
            event_id,
            trail._topic,
            text,
        )
        trail._tell(event_id, text)

    def broker_up(self) -> None:
        self._trail._broker_up()

    def describe(self, error: confluent_kafka.KafkaError) -> str:
        return self._trail._describe(error)
