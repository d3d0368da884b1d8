"""Undelivered audit events staged in a Redis stream, drained to Kafka by any producer.

One stream per topic, ``baldur-audit:buffer:<topic>``, with one consumer group
(``baldur-audit-drain``); every trail is a consumer with a name of its own (host, pid and a
random part). Each entry holds one field ``r``: the spool's CRC-framed record (event id,
Kafka headers, the exact encoded event — already redacted and masked), and ``p``: the
consumer that staged it.

- :meth:`RedisStreamBuffer.append` runs ``XADD`` and ``XREADGROUP … >`` in one ``MULTI``:
  the new entry is delivered to its own stager's pending list in the same atomic step, so
  no live entry is ever "new" to the group and another instance never takes it while its
  stager lives. It returns once Redis has the entry in memory (what survives a crash of
  Redis itself is its persistence setting: ``appendonly yes`` with ``appendfsync always``
  loses nothing acknowledged, ``everysec`` up to about a second).
- The drainer (:class:`~..spool.drain.SpoolDrainer`) reads this consumer's entries in
  staging order and, after Kafka acknowledged them, commits them; :meth:`persist` then runs
  ``XACK`` + ``XDEL`` for them. A crash between the two repeats entries (the ledger seals
  repeats as *duplicates*), never loses one.
- A keeper thread refreshes the idle time of this consumer's entries (``XCLAIM … JUSTID``)
  every third of ``min_idle_ms``, and claims (``XAUTOCLAIM``) what sat unacknowledged
  longer than ``min_idle_ms`` in any other consumer's pending list: a dead instance's
  entries. A paused instance (longer than ``min_idle_ms``) may see its entries claimed and
  sent by another while it sends them too: duplicates, never a lost or a second event.
- Order: one instance's entries reach Kafka in the order it staged them (a claimed batch
  after its own); across instances there is no order, as between two producers.
- Redis down: :meth:`append` raises :class:`BufferUnavailable` after at most the socket
  timeout (2 s by default; no retries), so ``record()`` raises instead of blocking;
  acknowledgements are retried (the entries stay pending meanwhile).

No message or log line quotes the URL (it may hold a password): only scheme, host, port
and database, via :func:`~.redis_location`.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..spool.disk import SpoolError, SpoolFull, SpoolPosition, SpoolRecord
from ..spool.segment import FRAME_HEAD, Headers, RecordTooLarge, decode_body, encode_record, valid_frame_at
from .config import DEFAULT_MIN_IDLE_MS, BufferUnavailable, redis_location

logger = logging.getLogger(__name__)

STREAM_PREFIX = "baldur-audit:buffer:"
GROUP = "baldur-audit-drain"
DEFAULT_TIMEOUT_S = 2.0
_BATCH = 1000
# Deletes a consumer only when nothing is pending for it (DELCONSUMER drops its pending list).
_DELETE_IF_IDLE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamBuffer:
    """This process's view of the topic's Redis stream; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        topic: str,
        where: str,
        secrets: tuple[str, ...] = (),
        max_bytes: int,
        min_idle_ms: int = DEFAULT_MIN_IDLE_MS,
        on_claimed: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self.stream = STREAM_PREFIX + topic
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.where = f"{where} {self.stream}"
        self._secrets = tuple(s for s in secrets if s)
        self.max_bytes = max_bytes
        self.min_idle_ms = max(1, int(min_idle_ms))
        self._on_claimed = on_claimed
        self._lock = threading.Lock()
        # This consumer's entries not yet acknowledged by Kafka, in drain order; positions are
        # byte offsets over everything this buffer ever held (so record.size is its size).
        self._records: list[SpoolRecord] = []
        self._starts: list[int] = []
        self._ids: list[bytes] = []
        self._owned: set[bytes] = set()
        self._next = 0
        self._pending_bytes = 0
        self._to_ack: list[bytes] = []
        self._group_ready = False
        self.recovered = 0  # entries found at start (claims come later: see claimed)
        self.claimed = 0  # entries claimed from other consumers (dead instances)
        self.staged = 0  # entries this buffer appended
        self.acked = 0  # entries acknowledged (XACK + XDEL) by this buffer
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="baldur-audit-redis-buffer", daemon=True)
        self._ensure_group(quiet=True)
        self._keeper.start()

    @classmethod
    def open(
        cls,
        url: str,
        topic: str,
        *,
        max_bytes: int,
        min_idle_ms: int = DEFAULT_MIN_IDLE_MS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_claimed: Callable[[int], None] | None = None,
    ) -> RedisStreamBuffer:
        """A buffer on the Redis at ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).
        Redis need not be up yet. Raises :class:`ConfigError` on a URL redis-py refuses."""
        from baldur_audit.schemas.errors import ConfigError

        try:
            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        except (ValueError, redis.RedisError):
            raise ConfigError(f"redis_url: not a usable Redis URL ({redis_location(url)})") from None
        kwargs = client.connection_pool.connection_kwargs
        secrets = tuple(str(kwargs.get(name) or "") for name in ("password", "username"))
        return cls(
            client,
            topic=topic,
            where=redis_location(url),
            secrets=secrets,
            max_bytes=max_bytes,
            min_idle_ms=min_idle_ms,
            on_claimed=on_claimed,
        )

    # -- what the trail and the drainer use ----------------------------------------------------
    @property
    def pending(self) -> int:
        """This consumer's entries not yet acknowledged by Kafka."""
        with self._lock:
            return len(self._records)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes

    def append(self, event_id: uuid.UUID, value: bytes, headers: Headers = None) -> None:
        """Stage one event in the stream, owned by this consumer.

        Raises :class:`SpoolFull` past ``max_bytes`` of this consumer's pending entries or
        when Redis is out of memory, :class:`BufferUnavailable` when Redis cannot be reached
        or refuses the command, :class:`SpoolError` for an event too large.
        """
        try:
            frame = encode_record(event_id, value, headers)
        except RecordTooLarge as exc:
            raise SpoolError(str(exc)) from None
        with self._lock:
            if self._pending_bytes + len(frame) > self.max_bytes:
                raise SpoolFull(
                    f"redis buffer {self.where} is full for this process: {len(self._records)} "
                    f"events ({self._pending_bytes} bytes) wait for kafka, the bound is {self.max_bytes}"
                )
        if not self._group_ready:
            self._ensure_group(quiet=False)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream, {"r": frame, "p": self.consumer})
                pipe.xreadgroup(GROUP, self.consumer, {self.stream: ">"})
                added, delivered = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise self._error("staging an event", exc) from None
        if isinstance(added, Exception):
            raise self._error("staging an event", added)
        self.staged += 1
        if isinstance(delivered, Exception):
            # The group is gone (Redis lost it): the entry is in the stream, not yet delivered;
            # recreate the group and take it (and any other undelivered one) now.
            self._group_ready = False
            logger.warning(
                "redis buffer %s: %s; recreating the consumer group", self.where, self._scrub(delivered)
            )
            self._ensure_group(quiet=False)
            self._sweep()
            return
        self._own(self._entries(delivered))

    def start(self) -> SpoolPosition:
        """Where reading starts: the first entry not yet acknowledged by Kafka."""
        with self._lock:
            return SpoolPosition(0, self._starts[0] if self._starts else self._next)

    def read(self, position: SpoolPosition, *, max_records: int) -> tuple[list[SpoolRecord], SpoolPosition]:
        """Up to ``max_records`` of this consumer's entries from ``position`` (no Redis call)."""
        with self._lock:
            first = bisect.bisect_left(self._starts, position.offset)
            found = self._records[first : first + max_records]
        return found, (found[-1].end if found else position)

    def commit(self, position: SpoolPosition, *, records: int, nbytes: int) -> None:
        """Kafka acknowledged every entry before ``position``: they leave the pending list
        (acknowledged in Redis by :meth:`persist`)."""
        with self._lock:
            done = bisect.bisect_right(self._starts, position.offset - 1)
            while done and self._records[done - 1].end.offset > position.offset:
                done -= 1
            for record in self._records[:done]:
                self._pending_bytes -= record.size
            self._to_ack.extend(self._ids[:done])
            self._owned.difference_update(self._ids[:done])
            del self._records[:done], self._starts[:done], self._ids[:done]

    def persist(self) -> None:
        """``XACK`` + ``XDEL`` the entries Kafka acknowledged. Raises :class:`SpoolError`
        when Redis cannot be reached (they are acknowledged later; a crash meanwhile makes
        them duplicates)."""
        with self._lock:
            ids, self._to_ack = self._to_ack, []
        while ids:
            chunk = ids[:_BATCH]
            try:
                with self._client.pipeline(transaction=True) as pipe:
                    pipe.xack(self.stream, GROUP, *chunk)
                    pipe.xdel(self.stream, *chunk)
                    pipe.execute()
            except redis.RedisError as exc:
                with self._lock:
                    self._to_ack[:0] = ids
                raise self._error("acknowledging delivered events", exc) from None
            self.acked += len(chunk)
            ids = ids[len(chunk) :]

    def close(self) -> int:
        """Stop the keeper, acknowledge what Kafka took; returns how many of this consumer's
        entries are left (they stay pending in Redis and are claimed by another instance, or
        the next one, after ``min_idle_ms``). Never raises for Redis errors (logged)."""
        self._stop.set()
        if self._keeper.is_alive() and threading.current_thread() is not self._keeper:
            self._keeper.join(5)
        try:
            self.persist()
        except SpoolError as exc:
            logger.error("%s", exc)
        left = self.pending
        if left == 0:
            try:
                self._client.eval(_DELETE_IF_IDLE, 1, self.stream, GROUP, self.consumer)
            except redis.RedisError as exc:
                logger.info("redis buffer %s: consumer not removed: %s", self.where, self._scrub(exc))
        else:
            logger.warning(
                "redis buffer %s: %d events of this process wait for kafka; another producer claims them "
                "after %d ms",
                self.where,
                left,
                self.min_idle_ms,
            )
        self._client.close()
        return left

    # -- claiming and keeping ------------------------------------------------------------------
    def claim(self) -> int:
        """Take over what sat unacknowledged for ``min_idle_ms`` in any consumer's pending
        list (dead instances), and anything never delivered; returns how many entries of
        other consumers this buffer took. Raises :class:`BufferUnavailable`."""
        if not self._group_ready:
            self._ensure_group(quiet=False)
        taken = self._sweep()
        cursor: Any = "0-0"
        try:
            while True:
                reply: Any = self._client.xautoclaim(
                    self.stream, GROUP, self.consumer, self.min_idle_ms, start_id=cursor, count=_BATCH
                )
                cursor, entries = reply[0], reply[1]
                taken += self._own(entries)
                gone = reply[2] if len(reply) > 2 else []
                if gone:
                    logger.error(
                        "redis buffer %s: %d pending entries were deleted from the stream before "
                        "delivery (by something else than a producer)",
                        self.where,
                        len(gone),
                    )
                if _text(cursor) == "0-0":
                    break
        except redis.RedisError as exc:
            raise self._error("claiming entries", exc) from None
        return taken

    def touch(self) -> None:
        """Reset the idle time of this consumer's pending entries so no one claims them."""
        with self._lock:
            ids: list[Any] = list(self._ids)
        try:
            for first in range(0, len(ids), _BATCH):
                self._client.xclaim(
                    self.stream, GROUP, self.consumer, 0, ids[first : first + _BATCH], justid=True
                )
        except redis.RedisError as exc:
            raise self._error("refreshing pending entries", exc) from None

    def _keep(self) -> None:
        every = self.min_idle_ms / 1000 / 3
        claim_every = max(0.2, min(5.0, self.min_idle_ms / 1000 / 2))
        touched = claimed = 0.0
        while not self._stop.wait(min(every, claim_every, 1.0) / 2):
            now = time.monotonic()
            try:
                if now - touched >= every:
                    self.touch()
                    touched = now
                if now - claimed >= claim_every:
                    claimed = now
                    self.claim()
            except SpoolError as exc:
                logger.info("%s", exc)
            except Exception:  # the keeper must outlive any one failure
                logger.exception("redis buffer %s: keeper failed; retrying", self.where)

    # -- helpers ---------------------------------------------------------------------------------
    def _ensure_group(self, *, quiet: bool) -> None:
        try:
            self._client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise self._error("creating the consumer group", exc) from None
        except redis.RedisError as exc:
            if quiet:
                logger.warning("%s", self._error("creating the consumer group", exc))
                return
            raise self._error("creating the consumer group", exc) from None
        self._group_ready = True

    def _sweep(self) -> int:
        """Take entries never delivered to any consumer (left by a lost group)."""
        try:
            reply = self._client.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=_BATCH)
        except redis.RedisError as exc:
            raise self._error("reading undelivered entries", exc) from None
        return self._own(self._entries(reply))

    @staticmethod
    def _entries(reply: Any) -> list[Any]:
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return [entry for entries in reply.values() for entry in (entries[0] if entries else [])]
        return [entry for _stream, entries in reply for entry in entries]

    def _own(self, entries: list[Any]) -> int:
        """Add entries delivered to this consumer; returns how many were staged by others."""
        foreign = 0
        broken: list[bytes] = []
        with self._lock:
            for entry_id, fields in entries:
                entry_id = entry_id if isinstance(entry_id, bytes) else str(entry_id).encode()
                if entry_id in self._owned:
                    continue  # ours already (a claim of our own entry only refreshes it)
                frame = (fields or {}).get(b"r")
                if not frame or valid_frame_at(frame, 0) != len(frame):
                    broken.append(entry_id)
                    continue
                try:
                    event_id, value, headers = decode_body(frame[FRAME_HEAD.size :])
                except (ValueError, UnicodeDecodeError):
                    broken.append(entry_id)
                    continue
                start = SpoolPosition(0, self._next)
                self._next += len(frame)
                record = SpoolRecord(event_id, value, headers, start, SpoolPosition(0, self._next))
                self._records.append(record)
                self._starts.append(start.offset)
                self._ids.append(entry_id)
                self._owned.add(entry_id)
                self._pending_bytes += len(frame)
                if _text((fields or {}).get(b"p", b"")) != self.consumer:
                    foreign += 1
        if broken:
            self._set_aside(broken)
        if foreign:
            self.claimed += foreign
            if self._on_claimed is not None:
                self._on_claimed(foreign)
            logger.info("redis buffer %s: claimed %d events staged by other producers", self.where, foreign)
        return foreign

    def _set_aside(self, ids: list[bytes]) -> None:
        """Entries that are not records this library wrote (never sent: they are no audit
        events) move to ``<stream>:damaged`` instead of being claimed round and round."""
        logger.error(
            "redis buffer %s: %d entries are not audit records (ids %s); moved to %s:damaged, not sent",
            self.where,
            len(ids),
            ", ".join(_text(i) for i in ids[:5]),
            self.stream,
        )
        try:
            with self._client.pipeline(transaction=True) as pipe:
                for entry_id in ids:
                    pipe.xadd(self.stream + ":damaged", {"id": entry_id})
                pipe.xack(self.stream, GROUP, *ids)
                pipe.execute()
        except redis.RedisError as exc:
            logger.error("%s", self._error("setting damaged entries aside", exc))

    def _scrub(self, exc: BaseException | str) -> str:
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, what: str, exc: BaseException) -> SpoolError:
        detail = f"redis buffer {self.where}: {what} failed: {type(exc).__name__}: {self._scrub(exc)}"
        if isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM"):
            return SpoolFull(detail)
        return BufferUnavailable(detail)
