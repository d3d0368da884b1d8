"""The Merkle tree and the checkpoints, stored in PostgreSQL beside the entries (CHAIN.md
§13-14): the perfect nodes (``merkle_nodes``) as a node store, the tree's frontier
(``merkle_tree``), and the signed checkpoints (``checkpoints``).

The tree is extended by ``checkpointer.extend_tree`` inside :func:`locked_tree`, one
transaction per chunk; proofs read their O(log n) nodes in one query.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from baldur_audit.schemas.checkpoint import Checkpoint
from baldur_audit.schemas.merkle import HASH_BYTES, MerkleError, MerkleFrontier, Node

from . import Connection, translated

_COPY_NODES = "COPY merkle_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)"
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_NODE_TUPLE = struct.Struct(">hihiqi").pack  # 3 fields: int2 level, int8 idx, bytea length


class PostgresMerkleNodes:
    """The stored perfect nodes (``merkle_nodes``) as a :class:`merkle.NodeStore`: a proof's
    O(log n) nodes come in one query (:meth:`get_many`)."""

    def __init__(self, conn: Connection) -> None:
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
                ([level for level, _ in nodes], [index for _, index in nodes]),
            ).fetchall()
        return {(int(level), int(index)): bytes(digest) for level, index, digest in rows}


@dataclass(frozen=True, slots=True)
class TreeHead:
    """How far the stored tree reaches: ``size`` leaves, their root, and the link of entry
    ``size`` (the genesis link when 0)."""

    size: int
    root: bytes
    head_link: bytes


def read_tree(conn: Connection) -> TreeHead | None:
    """The stored tree's head (None before the first extension); raises MerkleError if the
    stored frontier disagrees with the stored nodes."""
    with translated("read merkle tree", conn):
        row = conn.execute("SELECT size, frontier, head_link FROM merkle_tree WHERE id = 1").fetchone()
    if row is None:
        return None
    frontier = _checked_frontier(conn, int(row[0]), bytes(row[1]))
    return TreeHead(frontier.size, frontier.root(), bytes(row[2]))


def tree_size(conn: Connection) -> int:
    """The stored tree's size as it is, unchecked (0 before the first extension)."""
    with translated("read merkle tree size", conn):
        row = conn.execute("SELECT size FROM merkle_tree WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _checked_frontier(conn: Connection, size: int, encoded: bytes) -> MerkleFrontier:
    frontier = MerkleFrontier.from_bytes(encoded)
    if frontier.size != size or MerkleFrontier.from_nodes(PostgresMerkleNodes(conn), size) != frontier:
        raise MerkleError(f"the stored merkle frontier (size {size}) disagrees with the stored merkle nodes")
    return frontier


def _copy_nodes(nodes: Sequence[tuple[int, int, bytes]]) -> bytes:
    return b"".join(
        (
            _COPY_SIGNATURE,
            *(_NODE_TUPLE(3, 2, level, 8, index, HASH_BYTES) + digest for level, index, digest in nodes),
            b"\xff\xff",
        )
    )


@dataclass(slots=True)
class LockedTree:
    """The stored tree inside the transaction that extends it: its checked frontier, the link
    of its last leaf, and the chain head's seq it may grow to."""

    conn: Connection
    frontier: MerkleFrontier
    head_link: bytes
    head_seq: int

    def save(self, nodes: Sequence[tuple[int, int, bytes]], link: bytes) -> None:
        """Store the new perfect ``nodes`` (COPY) and the grown frontier, whose last leaf's
        link is ``link``."""
        with self.conn.cursor() as cur:
            with cur.copy(_COPY_NODES) as copy:
                copy.write(_copy_nodes(nodes))
            cur.execute(
                "UPDATE merkle_tree SET size = %s, frontier = %s, head_link = %s,"
                " updated_at = now() WHERE id = 1",
                (self.frontier.size, self.frontier.to_bytes(), link),
            )


@contextmanager
def locked_tree(conn: Connection, genesis_link: bytes) -> Iterator[LockedTree]:
    """One transaction holding the ``merkle_tree`` row (concurrent builders serialise on it),
    created empty on first use. Raises StoreUnavailable/StoreRefused, MerkleError."""
    with translated("extend the merkle tree", conn), conn.transaction():
        conn.execute(
            "INSERT INTO merkle_tree (id, size, frontier, head_link)"
            " VALUES (1, 0, %s, %s) ON CONFLICT (id) DO NOTHING",
            (MerkleFrontier().to_bytes(), genesis_link),
        )
        row = conn.execute(
            "SELECT size, frontier, head_link FROM merkle_tree WHERE id = 1 FOR UPDATE"
        ).fetchone()
        head = conn.execute("SELECT last_seq FROM chain_head WHERE id = 1").fetchone()
        assert row is not None and head is not None  # created above; init made the head
        frontier = _checked_frontier(conn, int(row[0]), bytes(row[1]))
        yield LockedTree(conn, frontier, bytes(row[2]), int(head[0]))


# --- stored checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A row of ``checkpoints``: the signed note and what it says."""

    tree_size: int
    root: bytes
    head_link: bytes
    note: str
    signed_at: datetime


def stored_checkpoint(
    conn: Connection, *, size: int | None = None, min_size: int = 0
) -> StoredCheckpoint | None:
    """The newest stored checkpoint of exactly ``size`` leaves, or else the largest one
    covering at least ``min_size`` leaves (None if there is none)."""
    query = (
        "SELECT tree_size, root, head_link, note, signed_at FROM checkpoints WHERE "
        + ("tree_size = %s" if size is not None else "tree_size >= %s")
        + " ORDER BY tree_size DESC, id DESC LIMIT 1"
    )
    with translated("read checkpoints", conn):
        row = conn.execute(query, (size if size is not None else min_size,)).fetchone()
    if row is None:
        return None
    return StoredCheckpoint(int(row[0]), bytes(row[1]), bytes(row[2]), row[3], row[4])


def store_checkpoint(conn: Connection, checkpoint: Checkpoint, note: str) -> None:
    """Insert a signed checkpoint (after it was witnessed)."""
    with translated("store checkpoint", conn), conn.transaction():
        conn.execute(
            "INSERT INTO checkpoints (tree_size, root, head_seq, head_link, note,"
            " signed_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                checkpoint.size,
                checkpoint.root_hash,
                checkpoint.head_seq,
                checkpoint.head_link,
                note,
                checkpoint.timestamp,
            ),
        )
