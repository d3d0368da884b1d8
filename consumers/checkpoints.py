"""Checkpoints of the ledger: the Merkle tree kept in PostgreSQL beside the entries, and the
:class:`Checkpointer` that signs a checkpoint (keys: ``checkpoint_keys.py``) every N entries
or T seconds and hands it to the witnesses (``witness.py``) before storing it.

The tree (CHAIN.md §13-14) is extended from its stored size to the chain head by reading
the entries back (:meth:`PostgresLedgerStore.iter_sealed_rows`), checking each entry's link
when the HMAC keys are given (a checkpoint is then never signed over an entry that does not
verify), and writing the new perfect nodes with ``COPY`` and the new frontier in one
transaction per chunk. Signing key material never leaves :class:`CheckpointSigner`.
"""

from __future__ import annotations

import hmac
import logging
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from baldur_audit.schemas.chain import EntryKind, LedgerLinker, LinkInput, SigningKey
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    checkpoint_time,
    sign_checkpoint,
)
from baldur_audit.schemas.errors import (
    AuditError,
    LinkMismatch,
    SequenceGap,
    StoreRefused,
    StoreUnavailable,
    ValueMismatch,
)
from baldur_audit.schemas.merkle import (
    HASH_BYTES,
    MerkleError,
    MerkleFrontier,
    Node,
    entry_leaf_hash,
)

from .checkpoint_keys import CheckpointKeys
from .config import UNPARSABLE_DSN, dsn_password, redact_dsn, scrub
from .store import PostgresLedgerStore, SealedRow

log = logging.getLogger(__name__)

EVERY_ENV = "BALDUR_CHECKPOINT_EVERY"
INTERVAL_ENV = "BALDUR_CHECKPOINT_INTERVAL"
DEFAULT_EVERY = 10_000
DEFAULT_INTERVAL = 30.0
#: Leaves appended per transaction when the tree catches up (bounds memory and lock time).
CHUNK = 50_000
_KINDS = {kind.label: kind for kind in EntryKind}


# --- PostgreSQL ----------------------------------------------------------------------------------

def connect(dsn: str, *, application_name: str = "baldur-audit-checkpoints") -> psycopg.Connection[Any]:
    """An autocommit connection (each ``conn.transaction()`` block is a real transaction,
    never a savepoint in an implicit one); raises StoreUnavailable, password never shown."""
    try:
        return psycopg.connect(dsn, connect_timeout=10, application_name=application_name,
                               client_encoding="UTF8", autocommit=True)
    except psycopg.Error as exc:
        if redact_dsn(dsn) == UNPARSABLE_DSN:
            raise StoreUnavailable("cannot connect to PostgreSQL: the DSN is not a valid "
                                   "connection string or URI") from None
        raise StoreUnavailable(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: "
                               f"{scrub(str(exc).strip(), dsn_password(dsn), dsn)}") from None


@contextmanager
def translated(what: str, conn: psycopg.Connection[Any], dsn: str = "") -> Iterator[None]:
    """Driver errors as :class:`StoreUnavailable` (transient) or :class:`StoreRefused`."""
    try:
        yield
    except AuditError:
        raise
    except psycopg.Error as exc:
        detail = scrub(str(exc).strip(), dsn_password(dsn), dsn) if dsn else str(exc).strip()
        if conn.closed or isinstance(exc, psycopg.OperationalError):
            raise StoreUnavailable(f"{what}: PostgreSQL failed: {detail}") from None
        raise StoreRefused(f"{what}: {type(exc).__name__}: {detail}") from None


class PostgresMerkleNodes:
    """The stored perfect nodes (``merkle_nodes``) as a :class:`merkle.NodeStore`: a proof's
    O(log n) nodes come in one query (:meth:`get_many`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def get(self, level: int, index: int) -> bytes:
        """One node; raises ``KeyError`` when it is not stored."""
        found = self.get_many([(level, index)])
        if (level, index) not in found:
            raise KeyError((level, index))
        return found[(level, index)]

    def get_many(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        """The stored hashes of ``nodes`` (missing ones are absent from the answer)."""
        if not nodes:
            return {}
        with translated("read merkle nodes", self._conn):
            rows = self._conn.execute(
                "SELECT n.level, n.idx, n.hash FROM merkle_nodes n"
                " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)"
                " ON n.level = w.level AND n.idx = w.idx",
                ([level for level, _ in nodes], [index for _, index in nodes])).fetchall()
        return {(int(level), int(index)): bytes(digest) for level, index, digest in rows}


@dataclass(frozen=True, slots=True)
class TreeHead:
    """How far the stored tree reaches: ``size`` leaves, their root, and the link of entry
    ``size`` (the genesis link when 0)."""

    size: int
    root: bytes
    head_link: bytes


def read_tree(conn: psycopg.Connection[Any]) -> TreeHead | None:
    """The stored tree's head (None before the first extension); raises MerkleError if the
    stored frontier disagrees with the stored nodes."""
    with translated("read merkle tree", conn):
        row = conn.execute("SELECT size, frontier, head_link FROM merkle_tree WHERE id = 1"
                           ).fetchone()
    if row is None:
        return None
    frontier = _checked_frontier(conn, int(row[0]), bytes(row[1]))
    return TreeHead(frontier.size, frontier.root(), bytes(row[2]))


def _checked_frontier(conn: psycopg.Connection[Any], size: int, encoded: bytes) -> MerkleFrontier:
    frontier = MerkleFrontier.from_bytes(encoded)
    if frontier.size != size or MerkleFrontier.from_nodes(PostgresMerkleNodes(conn), size) != frontier:
        raise MerkleError(f"the stored merkle frontier (size {size}) disagrees with the stored "
                          "merkle nodes")
    return frontier


_COPY_NODES = "COPY merkle_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)"
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_NODE_TUPLE = struct.Struct(">hihiqi").pack  # 3 fields: int2 level, int8 idx, bytea length


def _copy_nodes(nodes: Sequence[tuple[int, int, bytes]]) -> bytes:
    return b"".join((_COPY_SIGNATURE,
                     *(_NODE_TUPLE(3, 2, level, 8, index, HASH_BYTES) + digest
                       for level, index, digest in nodes),
                     b"\xff\xff"))


class _LinkCheck:
    """Recomputes each appended entry's link from its stored fields (CHAIN.md §6)."""

    def __init__(self, keys: Mapping[str, SigningKey], topic: str, partition: int,
                 prev_link: bytes) -> None:
        self._keys = keys
        self._topic, self._partition = topic, partition
        self._linkers: dict[str, LedgerLinker] = {}
        self.prev_link = prev_link
        self.unchecked = 0

    def check(self, row: SealedRow, kind: EntryKind, timestamp_ms: int) -> None:
        seq, offset, _label, duplicate_of, value_null, payload_sha, digest, key_id, link, view_sha = row[:10]
        if not hmac.compare_digest(payload_sha, digest):
            raise ValueMismatch(seq, "payload bytes differ from the sealed digest")
        linker = self._linkers.get(key_id)
        if linker is None:
            key = self._keys.get(key_id)
            if key is None:
                # Unverifiable here (an old or forward-secure epoch key is gone), which is not
                # tampered: the entry is treed unchecked and `verify` reports it as unverifiable.
                self.unchecked += 1
                self.prev_link = link
                return
            linker = self._linkers[key_id] = LedgerLinker(key, topic=self._topic,
                                                          partition=self._partition)
        computed = linker.link(self.prev_link, seq, offset, timestamp_ms, kind.code, duplicate_of,
                               value_null, digest, view_sha)
        if not hmac.compare_digest(computed, link):
            raise LinkMismatch(seq, link, computed)
        self.prev_link = link


def row_leaf(row: SealedRow, *, topic: str, partition: int) -> tuple[bytes, EntryKind, int]:
    """The leaf hash of a stored entry (CHAIN.md §13), its kind and Kafka timestamp (ms).

    Raises :class:`ValueMismatch` for a stored kind or timestamp the chain cannot hold.
    """
    seq, offset, label, duplicate_of, value_null, _sha, digest, key_id, link, view_sha, ts_ms = row[:11]
    kind = _KINDS.get(label)
    if kind is None:
        raise ValueMismatch(seq, "column kind holds an unknown kind")
    if ts_ms is None:
        raise ValueMismatch(seq, "column kafka_timestamp is not a finite time")
    link_input = LinkInput(seq=seq, topic=topic, partition=partition, offset=offset,
                           timestamp_ms=ts_ms, kind=kind, duplicate_of=duplicate_of,
                           value_null=bool(value_null), digest=bytes(digest),
                           view_digest=bytes(view_sha))
    return entry_leaf_hash(link_input, key_id=key_id, link=bytes(link)), kind, ts_ms


def extend_tree(conn: psycopg.Connection[Any], *, keys: Mapping[str, SigningKey] | None = None,
                up_to: int | None = None, chunk: int = CHUNK) -> TreeHead:
    """Append every sealed entry beyond the stored tree, up to the chain head (or ``up_to``),
    in transactions of ``chunk`` leaves; returns the tree reached.

    With ``keys``, each entry's link is recomputed first and the first one that does not
    verify raises :class:`ChainBreak` (nothing of its chunk is stored). Concurrent builders
    serialise on the ``merkle_tree`` row. Raises StoreUnavailable/StoreRefused, ConfigError
    (no ledger), MerkleError (stored tree inconsistent).
    """
    ledger = PostgresLedgerStore(conn, "")
    meta = ledger.read_meta()
    while True:
        with translated("extend the merkle tree", conn), conn.transaction():
            conn.execute("INSERT INTO merkle_tree (id, size, frontier, head_link)"
                         " VALUES (1, 0, %s, %s) ON CONFLICT (id) DO NOTHING",
                         (MerkleFrontier().to_bytes(), meta.genesis_link))
            size, encoded, head_link = conn.execute(
                "SELECT size, frontier, head_link FROM merkle_tree WHERE id = 1 FOR UPDATE"
            ).fetchone()
            frontier = _checked_frontier(conn, int(size), bytes(encoded))
            head_seq = int(conn.execute("SELECT last_seq FROM chain_head WHERE id = 1").fetchone()[0])
            target = head_seq if up_to is None else min(head_seq, up_to)
            if frontier.size >= target:
                return TreeHead(frontier.size, frontier.root(), bytes(head_link))
            last = min(target, frontier.size + chunk)
            check = None if keys is None else _LinkCheck(keys, meta.topic, meta.partition,
                                                         bytes(head_link))
            created: list[tuple[int, int, bytes]] = []
            link = bytes(head_link)
            expected = frontier.size + 1
            # Fetch exactly the rows wanted: the database hashes each row's view as it sends it.
            rows = ledger.iter_sealed_rows(conn, from_seq=expected,
                                           batch=max(1, min(last - frontier.size, 10_000)))
            with closing(rows):  # type: ignore[type-var]
                for row in rows:
                    seq = row[0]
                    if seq != expected:
                        raise SequenceGap(expected, seq, f"seq {expected} is missing from the "
                                                         "ledger below the chain head")
                    leaf, kind, timestamp_ms = row_leaf(row, topic=meta.topic,
                                                        partition=meta.partition)
                    if check is not None:
                        check.check(row, kind, timestamp_ms)
                    created.extend(frontier.append(leaf))
                    link = bytes(row[8])
                    if seq == last:
                        break
                    expected += 1
            if check is not None and check.unchecked:
                log.info("%d entries appended to the merkle tree without a link check: their "
                         "key is not configured here", check.unchecked)
            if frontier.size != last:
                raise SequenceGap(frontier.size + 1, None, f"the ledger ends at seq {frontier.size} "
                                                           f"below the chain head at seq {target}")
            with conn.cursor() as cur:
                with cur.copy(_COPY_NODES) as copy:
                    copy.write(_copy_nodes(created))
                cur.execute("UPDATE merkle_tree SET size = %s, frontier = %s, head_link = %s,"
                            " updated_at = now() WHERE id = 1",
                            (frontier.size, frontier.to_bytes(), link))
        if frontier.size >= target:
            return TreeHead(frontier.size, frontier.root(), link)


# --- stored checkpoints --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A row of ``checkpoints``: the signed note and what it says."""

    tree_size: int
    root: bytes
    head_link: bytes
    note: str
    signed_at: datetime


def stored_checkpoint(conn: psycopg.Connection[Any], *, size: int | None = None,
                      min_size: int = 0) -> StoredCheckpoint | None:
    """The newest stored checkpoint of exactly ``size`` leaves, or else the largest one
    covering at least ``min_size`` leaves (None if there is none)."""
    query = ("SELECT tree_size, root, head_link, note, signed_at FROM checkpoints WHERE "
             + ("tree_size = %s" if size is not None else "tree_size >= %s")
             + " ORDER BY tree_size DESC, id DESC LIMIT 1")
    with translated("read checkpoints", conn):
        row = conn.execute(query, (size if size is not None else min_size,)).fetchone()
    if row is None:
        return None
    return StoredCheckpoint(int(row[0]), bytes(row[1]), bytes(row[2]), row[3], row[4])


def store_checkpoint(conn: psycopg.Connection[Any], checkpoint: Checkpoint, note: str) -> None:
    """Insert a signed checkpoint (after it was witnessed)."""
    with translated("store checkpoint", conn), conn.transaction():
        conn.execute("INSERT INTO checkpoints (tree_size, root, head_seq, head_link, note,"
                     " signed_at) VALUES (%s, %s, %s, %s, %s, %s)",
                     (checkpoint.size, checkpoint.root_hash, checkpoint.head_seq,
                      checkpoint.head_link, note, checkpoint.timestamp))


# --- the checkpointer ------------------------------------------------------------------------------

class WitnessSink(Protocol):
    """Somewhere a signed checkpoint is published outside the database's control."""

    name: str

    def publish(self, checkpoint: Checkpoint, note: str) -> str:
        """Publish ``note``; returns where it went. Raises ServiceUnavailable/ConfigError."""
        ...

    def close(self) -> None:
        """Release the sink's resources."""
        ...


@dataclass(frozen=True, slots=True)
class MadeCheckpoint:
    """A checkpoint that was signed, witnessed and stored, and what it cost."""

    checkpoint: Checkpoint
    note: str
    published: tuple[str, ...]
    appended: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        cp = self.checkpoint
        return {"origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex(),
                "head_seq": cp.head_seq, "head_link": cp.head_link.hex(),
                "time": cp.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "published": list(self.published),
                "leaves_appended": self.appended, "seconds": round(self.seconds, 4),
                "note": self.note}


@dataclass(slots=True)
class CheckpointerStats:
    """What a checkpointer did (for ``chain --json`` and benchmarks)."""

    made: int = 0
    failed: int = 0
    seconds: float = 0.0
    last_size: int = 0
    failures: list[str] = field(default_factory=list)


class Checkpointer:
    """Extends the tree, signs a checkpoint, publishes it to every witness, then stores it.

    :meth:`after_batch` is the chainer's hook: it makes one when ``every`` entries were
    sealed since the last checkpoint, or ``interval`` seconds passed with new entries, and
    never raises — a failure is logged and retried after a growing delay, so checkpoints
    can never stop the sealing of the audit trail.
    """

    def __init__(self, *, dsn: str, keys: CheckpointKeys, chain_keys: Mapping[str, SigningKey] | None,
                 witnesses: Sequence[WitnessSink], every: int = DEFAULT_EVERY,
                 interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        keys.require_signer()
        self._dsn = dsn
        self._keys = keys
        self._chain_keys = chain_keys
        self._witnesses = tuple(witnesses)
        self._every = every
        self._interval = interval
        self._clock = clock
        self._wall = wall
        self._conn: psycopg.Connection[Any] | None = None
        self._last_size: int | None = None
        self._last_time = clock()
        self._retry_at = 0.0
        self._delay = 5.0
        self.stats = CheckpointerStats()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, application_name="baldur-audit-checkpointer")
        return self._conn

    def checkpoint(self) -> MadeCheckpoint:
        """Make one checkpoint now, at the chain head. Raises AuditError subclasses."""
        started = time.perf_counter()
        conn = self._connection()
        try:
            before = read_tree(conn)
            tree = extend_tree(conn, keys=self._chain_keys)
            checkpoint = Checkpoint(origin=self._keys.origin, size=tree.size, root_hash=tree.root,
                                    head_seq=tree.size, head_link=tree.head_link,
                                    timestamp=checkpoint_time(self._wall()))
            note = sign_checkpoint(checkpoint, self._keys.signers)
            published = tuple(witness.publish(checkpoint, note) for witness in self._witnesses)
            store_checkpoint(conn, checkpoint, note)
        except StoreUnavailable:
            conn.close()
            raise
        made = MadeCheckpoint(checkpoint=checkpoint, note=note, published=published,
                              appended=tree.size - (before.size if before else 0),
                              seconds=time.perf_counter() - started)
        self._last_size, self._last_time = tree.size, self._clock()
        self.stats.made += 1
        self.stats.seconds += made.seconds
        self.stats.last_size = tree.size
        log.info("checkpoint of size %d (root %s…) signed and witnessed in %.1f ms",
                 tree.size, tree.root.hex()[:16], made.seconds * 1000)
        return made

    def due(self, head_seq: int) -> bool:
        """Whether a checkpoint is due with the chain head at ``head_seq``."""
        if self._last_size is None:
            conn = self._connection()
            newest = stored_checkpoint(conn)
            self._last_size = newest.tree_size if newest else 0
        grown = head_seq - self._last_size
        if grown <= 0:
            return False
        return (self._every > 0 and grown >= self._every) or \
            (self._interval > 0 and self._clock() - self._last_time >= self._interval)

    def after_batch(self, head_seq: int) -> None:
        """The chainer's hook (after each batch, and when idle): checkpoint if due."""
        now = self._clock()
        if now < self._retry_at:
            return
        try:
            if self.due(head_seq):
                self.checkpoint()
            self._delay = 5.0
        except Exception as exc:  # a checkpoint failure, even a bug, must never stop the sealing
            self.stats.failed += 1
            message = " ".join(str(exc).split()) or type(exc).__name__
            self.stats.failures.append(message)
            log.warning("checkpoint failed, retrying in %.0f s: %s", self._delay, message)
            self._retry_at = now + self._delay
            self._delay = min(self._delay * 2, 300.0)
            if isinstance(exc, StoreUnavailable) and self._conn is not None:
                self._conn.close()

    def close(self) -> None:
        """Close the connection and the witnesses."""
        if self._conn is not None:
            self._conn.close()
        for witness in self._witnesses:
            witness.close()

