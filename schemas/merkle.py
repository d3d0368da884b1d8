"""The Merkle tree over ledger entries: RFC 9162 §2.1 hashing, proofs and their verification.

Pure: node hashes come from a caller's store (any object with ``get(level, index)``). The
tree's leaf ``i`` is the entry with seq ``i + 1``; its leaf data (:func:`leaf_data`) commits
to everything the entry's HMAC link covers, and to the link itself.

Storage model: the store keeps the hash of every *perfect* subtree of the tree, node
``(level, index)`` covering leaves ``[index * 2**level, (index + 1) * 2**level)``; a perfect
node never changes once its last leaf is appended. :class:`MerkleFrontier` is the compact
range (the perfect subtrees whose sizes are the binary digits of the tree size) that tells
the appender which nodes become complete. Any subtree hash the RFC's recursion needs is a
perfect node or the right fold of at most log2(n) perfect nodes that tile it, so roots and
proofs cost O(log n) node look-ups, fetched in one :meth:`NodeStore.get_many` call when
the store offers it. ``CHAIN.md`` ("Leaf hash", "Merkle tree and proofs") is normative.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from . import accel
from .chain import LinkInput, SealedEntry, field
from .errors import AuditError

LEAF_TAG = b"baldur-audit/leaf/v1"
HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
FRONTIER_VERSION = 1
_U64 = struct.Struct(">Q")
_FRONTIER_HEADER = struct.Struct(">BQ")

Node = tuple[int, int]  # (level, index)


class MerkleError(AuditError):
    """A tree operation got arguments it cannot honour (bad index or size, missing node,
    malformed frontier or proof encoding)."""


class ProofError(MerkleError):
    """An inclusion or consistency proof does not verify."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class RootMismatch(ProofError):
    """A proof is well-formed but leads to another root than the one given."""

    def __init__(self, what: str, expected: bytes, computed: bytes) -> None:
        self.expected = expected
        self.computed = computed
        super().__init__(f"{what}: expected root {expected.hex()[:16]}…, computed {computed.hex()[:16]}…")


# --- hashing -------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _fixed(name: bytes, size: int) -> bytes:
    """The framing in front of a fixed-size value (``chain.field`` without the value)."""
    return struct.pack(">B", len(name)) + name + struct.pack(">I", size)


_LEAF_DOMAIN = field(b"domain", LEAF_TAG)
_H_SEQ, _H_PARTITION = _fixed(b"seq", 8), _fixed(b"partition", 4)
_H_OFFSET, _H_TIMESTAMP = _fixed(b"offset", 8), _fixed(b"timestamp", 8)
_H_KIND, _H_DUPLICATE = _fixed(b"kind", 1), _fixed(b"duplicate_of", 8)
_H_NULL, _H_LINK = _fixed(b"value_null", 1), _fixed(b"link", HASH_BYTES)
_I32, _I64, _U8 = struct.Struct(">i").pack, struct.Struct(">q").pack, struct.Struct(">B").pack
_LEAF_PREFIX = hashlib.sha256(b"\x00")


def leaf_data(link_input: LinkInput, *, key_id: str, link: bytes) -> bytes:
    """The leaf data of a ledger entry (CHAIN.md, "Leaf hash").

    The link message's fields without ``prev``, in the same order and encodings, then the
    entry's link: an auditor without the HMAC key can check an entry's digest against a
    signed root, and the tree is tied to the HMAC chain. Spelled out field by field (it
    runs once per entry); ``tests/unit/schemas/test_merkle.py`` derives it from
    ``chain.link_message_framed`` so the two cannot drift apart. Raises
    :class:`MerkleError` if ``link`` is not 32 bytes.
    """
    if len(link) != HASH_BYTES:
        raise MerkleError(f"link must be {HASH_BYTES} bytes, found {len(link)}")
    return b"".join(
        (
            _LEAF_DOMAIN,
            field(b"key_id", key_id.encode("utf-8")),
            _H_SEQ,
            _U64.pack(link_input.seq),
            field(b"topic", link_input.topic.encode("utf-8")),
            _H_PARTITION,
            _I32(link_input.partition),
            _H_OFFSET,
            _I64(link_input.offset),
            _H_TIMESTAMP,
            _I64(link_input.timestamp_ms),
            _H_KIND,
            _U8(link_input.kind.code),
            _H_DUPLICATE,
            _U64.pack(link_input.duplicate_of),
            _H_NULL,
            b"\x01" if link_input.value_null else b"\x00",
            field(b"digest", link_input.digest),
            field(b"view", link_input.view_digest),
            _H_LINK,
            link,
        )
    )


def entry_leaf_hash(link_input: LinkInput, *, key_id: str, link: bytes) -> bytes:
    """``leaf_hash(leaf_data(...))``: the tree leaf of the entry with seq ``link_input.seq``.
    Raises :class:`MerkleError` if ``link`` is not 32 bytes."""
    native = accel.native
    if native is not None and len(link) == HASH_BYTES and link.__class__ is bytes:
        return native.leaf_hash(
            key_id,
            link_input.seq,
            link_input.topic,
            link_input.partition,
            link_input.offset,
            link_input.timestamp_ms,
            link_input.kind.code,
            link_input.duplicate_of,
            link_input.value_null,
            link_input.digest,
            link_input.view_digest,
            link,
        )
    digest = _LEAF_PREFIX.copy()
    digest.update(leaf_data(link_input, key_id=key_id, link=link))
    return digest.digest()


def entry_leaves(entries: Sequence[SealedEntry]) -> list[bytes]:
    """The tree leaf of each sealed entry: ``entry_leaf_hash(entry.link_input(), ...)``, for a
    whole batch in one native call when the accelerator is on (schemas/accel.py)."""
    native = accel.native
    if native is not None:
        leaves = native.entry_leaves(entries if isinstance(entries, list) else list(entries))
        if leaves is not None:
            return leaves
    return [entry_leaf_hash(entry.link_input(), key_id=entry.key_id, link=entry.link) for entry in entries]


# --- node stores ---------------------------------------------------------------------------


@runtime_checkable
class NodeStore(Protocol):
    """Where perfect-subtree hashes live; ``get`` raises ``KeyError`` for an unknown node.

    A store may also offer ``get_many(nodes) -> Mapping[(level, index), bytes]`` to answer
    a whole proof in one round trip (one SQL query); it is used when present.
    """

    def get(self, level: int, index: int) -> bytes: ...


def _fetch(nodes: NodeStore, keys: Sequence[Node]) -> dict[Node, bytes]:
    """The hashes of ``keys``, in one ``get_many`` call when the store has it."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    get_many = getattr(nodes, "get_many", None)
    found: dict[Node, bytes] = {}
    if get_many is not None:
        answer = get_many(wanted)
        for key in wanted:
            if key not in answer:
                raise MerkleError(f"node (level {key[0]}, index {key[1]}) is not in the store")
            found[key] = answer[key]
    else:
        for key in wanted:
            try:
                found[key] = nodes.get(*key)
            except KeyError:
                raise MerkleError(f"node (level {key[0]}, index {key[1]}) is not in the store") from None
    for key, value in found.items():
        if not isinstance(value, bytes | bytearray | memoryview) or len(value) != HASH_BYTES:
            raise MerkleError(
                f"node (level {key[0]}, index {key[1]}) in the store is not a {HASH_BYTES}-byte hash"
            )
        found[key] = bytes(value)
    return found


# --- subtree arithmetic ----------------------------------------------------------------------


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 1 << 64:
        raise MerkleError(f"{name} must be an integer in [0, 2**64), found {value!r}")


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def tiles(begin: int, end: int) -> list[Node]:
    """The perfect nodes, largest first, whose concatenation is leaves ``[begin, end)``.

    Defined for the subtrees RFC 9162's recursion produces (``begin`` a multiple of the
    largest power of two not above ``end - begin``); raises :class:`MerkleError` otherwise.
    """
    out: list[Node] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin % (1 << level):
            raise MerkleError(f"leaves [{begin}, {end}) are not a subtree of a Merkle tree")
        out.append((level, begin >> level))
        begin += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a subtree from its tiles (largest first): right fold with node_hash."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[size]), in proof order.

    Raises :class:`MerkleError` unless ``0 <= index < size``.
    """
    _check_size("tree size", size)
    _check_size("leaf index", index)
    if index >= size:
        raise MerkleError(f"leaf index {index} is not in a tree of size {size}")
    siblings: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _split(end - begin)
        if index < begin + k:
            siblings.append((begin + k, end))
            end = begin + k
        else:
            siblings.append((begin, begin + k))
            begin += k
    siblings.reverse()  # PATH appends the sibling after the deeper part of the path
    return siblings


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(old_size, D[new_size]), in proof order.

    Empty when ``old_size`` is 0 or equals ``new_size``; raises :class:`MerkleError` if
    ``old_size > new_size``.
    """
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    if old_size > new_size:
        raise MerkleError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size in (0, new_size):
        return []
    parts: list[tuple[int, int]] = []
    begin, end, whole = 0, new_size, True
    while True:
        n, m = end - begin, old_size - begin
        if m == n:
            if not whole:
                parts.append((begin, end))
            break
        k = _split(n)
        if m <= k:
            parts.append((begin + k, end))
            end = begin + k
        else:
            parts.append((begin, begin + k))
            begin += k
            whole = False
    parts.reverse()  # SUBPROOF appends each sibling after the deeper part of the proof
    return parts


def inclusion_nodes(index: int, size: int) -> list[list[Node]]:
    """For each element of PATH(index, D[size]), the perfect nodes that compose it."""
    return [tiles(begin, end) for begin, end in inclusion_ranges(index, size)]


def consistency_nodes(old_size: int, new_size: int) -> list[list[Node]]:
    """For each element of PROOF(old_size, D[new_size]), the perfect nodes that compose it."""
    return [tiles(begin, end) for begin, end in consistency_ranges(old_size, new_size)]


def _hash_groups(nodes: NodeStore, groups: Sequence[Sequence[Node]]) -> list[bytes]:
    found = _fetch(nodes, [key for group in groups for key in group])
    return [_fold([found[key] for key in group]) for group in groups]


def root(nodes: NodeStore, size: int) -> bytes:
    """MTH(D[size]) from the store (EMPTY_ROOT for size 0); raises :class:`MerkleError`."""
    _check_size("tree size", size)
    if size == 0:
        return EMPTY_ROOT
    return _hash_groups(nodes, [tiles(0, size)])[0]


def inclusion_proof(nodes: NodeStore, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion proof PATH(index, D[size]); raises :class:`MerkleError`."""
    return _hash_groups(nodes, inclusion_nodes(index, size))


def consistency_proof(nodes: NodeStore, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 consistency proof PROOF(old_size, D[new_size]); raises :class:`MerkleError`."""
    return _hash_groups(nodes, consistency_nodes(old_size, new_size))


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------------------


def _check_hash(what: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_BYTES:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProofError(f"{what} must be a {HASH_BYTES}-byte hash, found {size}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` with
    ``root_hash`` (RFC 9162 §2.1.3.2). Returns nothing; raises :class:`ProofError`
    (:class:`RootMismatch` when the proof leads elsewhere)."""
    _check_hash("leaf hash", leaf)
    _check_hash("root hash", root_hash)
    for position, element in enumerate(proof):
        _check_hash(f"inclusion proof element {position}", element)
    for name, value in (("leaf index", index), ("tree size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProofError(f"{name} must be a non-negative integer, found {value!r}")
    # 1. leaf_index must be below tree_size.
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    # 2.-3.
    fn, sn, r = index, size - 1, bytes(leaf)
    # 4.
    for p in proof:
        if sn == 0:
            raise ProofError(
                f"inclusion proof for leaf {index} of {size} is too long ({len(proof)} elements)"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # 5.
    if sn != 0:
        raise ProofError(f"inclusion proof for leaf {index} of {size} is too short ({len(proof)} elements)")
    if not hmac.compare_digest(r, root_hash):
        raise RootMismatch(f"inclusion of leaf {index} in tree of size {size}", root_hash, r)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` with ``old_root`` is a prefix of the tree of
    ``new_size`` with ``new_root`` (RFC 9162 §2.1.4.2). Returns nothing; raises
    :class:`ProofError` (:class:`RootMismatch` when the proof leads elsewhere).

    Outside the RFC's ``0 < first < second``: equal sizes need an empty proof and equal
    roots; size 0 needs an empty proof and ``old_root == EMPTY_ROOT``.
    """
    _check_hash("old root hash", old_root)
    _check_hash("new root hash", new_root)
    for position, element in enumerate(proof):
        _check_hash(f"consistency proof element {position}", element)
    for name, value in (("old tree size", old_size), ("new tree size", new_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProofError(f"{name} must be a non-negative integer, found {value!r}")
    what = f"consistency of tree size {old_size} with {new_size}"
    if old_size > new_size:
        raise ProofError(f"{what}: the old tree is larger than the new one")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError(f"{what}: the proof must be empty, found {len(proof)} elements")
        if old_size == 0:
            if not hmac.compare_digest(old_root, EMPTY_ROOT):
                raise RootMismatch(f"{what}: root of the empty tree", EMPTY_ROOT, bytes(old_root))
        elif not hmac.compare_digest(old_root, new_root):
            raise RootMismatch(f"{what}: equal sizes", bytes(old_root), bytes(new_root))
        return
    path = [bytes(element) for element in proof]
    # 1.
    if not path:
        raise ProofError(f"{what}: the proof is empty")
    # 2.
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"{what}: the proof is too long ({len(proof)} elements)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError(f"{what}: the proof is too short ({len(proof)} elements)")
    if not hmac.compare_digest(fr, old_root):
        raise RootMismatch(f"{what}: old root", bytes(old_root), fr)
    if not hmac.compare_digest(sr, new_root):
        raise RootMismatch(f"{what}: new root", bytes(new_root), sr)


# --- proof encoding ---------------------------------------------------------------------------


def proof_to_json(proof: Iterable[bytes]) -> list[str]:
    """A proof as JSON: the list of its hashes in standard, padded base64."""
    return [base64.b64encode(element).decode("ascii") for element in proof]


def proof_from_json(encoded: object) -> list[bytes]:
    """The proof :func:`proof_to_json` wrote; raises :class:`MerkleError` for anything that
    is not a list of canonical base64 strings of 32-byte hashes."""
    if not isinstance(encoded, list):
        raise MerkleError(f"a proof must be a JSON list of base64 hashes, found {type(encoded).__name__}")
    proof = []
    for position, element in enumerate(encoded):
        if not isinstance(element, str):
            raise MerkleError(f"proof element {position} must be a base64 string")
        proof.append(decode_hash(element, f"proof element {position}"))
    return proof


def decode_hash(text: str, what: str = "hash") -> bytes:
    """A 32-byte hash from canonical standard base64; raises :class:`MerkleError`."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise MerkleError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise MerkleError(f"{what} is not canonical base64")
    if len(raw) != HASH_BYTES:
        raise MerkleError(f"{what} must decode to {HASH_BYTES} bytes, found {len(raw)}")
    return raw


# --- the frontier ------------------------------------------------------------------------------


class MerkleFrontier:
    """The compact range of the current tree: one perfect-subtree root per 1-bit of the
    tree size, largest first. Appending a leaf returns the perfect nodes it completes,
    which the caller stores; the frontier persists beside the chain head."""

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []  # hashes of the perfect subtrees, largest first

    @property
    def size(self) -> int:
        """The number of leaves appended."""
        return self._size

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf hash; returns the new perfect nodes ``(level, index, hash)``,
        level 0 (the leaf itself) first. Raises :class:`MerkleError` for a bad hash."""
        if not isinstance(leaf, bytes | bytearray) or len(leaf) != HASH_BYTES:
            raise MerkleError(f"a leaf hash must be {HASH_BYTES} bytes")
        position = self._size
        current = bytes(leaf)
        created = [(0, position, current)]
        level = 0
        while position >> level & 1:  # each trailing 1-bit of the old size merges a subtree
            current = node_hash(self._stack.pop(), current)
            level += 1
            created.append((level, position >> level, current))
        self._stack.append(current)
        self._size = position + 1
        return created

    def root(self) -> bytes:
        """MTH of the tree so far (EMPTY_ROOT when empty)."""
        return _fold(self._stack) if self._stack else EMPTY_ROOT

    def nodes(self) -> list[Node]:
        """The (level, index) of each frontier hash, largest first."""
        return tiles(0, self._size)

    def to_bytes(self) -> bytes:
        """``u8 version (1) || u64 size || the frontier hashes, largest first``."""
        return _FRONTIER_HEADER.pack(FRONTIER_VERSION, self._size) + b"".join(self._stack)

    @classmethod
    def from_bytes(cls, encoded: bytes) -> MerkleFrontier:
        """The frontier :meth:`to_bytes` wrote; raises :class:`MerkleError` if malformed."""
        if len(encoded) < _FRONTIER_HEADER.size:
            raise MerkleError("merkle frontier is truncated")
        version, size = _FRONTIER_HEADER.unpack_from(encoded)
        if version != FRONTIER_VERSION:
            raise MerkleError(f"merkle frontier version {version} is not {FRONTIER_VERSION}")
        count = bin(size).count("1")
        expected = _FRONTIER_HEADER.size + count * HASH_BYTES
        if len(encoded) != expected:
            raise MerkleError(
                f"merkle frontier of size {size} must be {expected} bytes, found {len(encoded)}"
            )
        body = encoded[_FRONTIER_HEADER.size :]
        return cls._of(size, [bytes(body[i : i + HASH_BYTES]) for i in range(0, len(body), HASH_BYTES)])

    @classmethod
    def from_nodes(cls, nodes: NodeStore, size: int) -> MerkleFrontier:
        """The frontier of the tree of ``size`` read back from a node store (one fetch)."""
        _check_size("tree size", size)
        keys = tiles(0, size)
        found = _fetch(nodes, keys)
        return cls._of(size, [found[key] for key in keys])

    @classmethod
    def _of(cls, size: int, stack: list[bytes]) -> MerkleFrontier:
        frontier = cls()
        frontier._size = size
        frontier._stack = stack
        return frontier

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MerkleFrontier):
            return NotImplemented
        return self._size == other._size and self._stack == other._stack

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"MerkleFrontier(size={self._size}, root={self.root().hex()[:16]}…)"


def nodes_of(entries: Mapping[Node, bytes]) -> NodeStore:
    """A read-only node store over a mapping (for tests and small in-memory trees)."""
    return _MappingNodes(entries)


class _MappingNodes:
    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[Node, bytes]) -> None:
        self._entries = entries

    def get(self, level: int, index: int) -> bytes:
        return self._entries[(level, index)]


# --- range proofs: a contiguous run of leaves --------------------------------------------------
#
# A range proof shows that leaves ``[begin, end)`` of the tree of ``size`` leaves are exactly the
# given leaf hashes, in that order, under the tree's root. Walk RFC 9162's recursion for
# MTH(D[size]): a subtree that holds no leaf of the range is given by its hash (one proof
# element), a subtree that lies inside the range is hashed from the given leaves, and any other
# subtree is split at k as the RFC splits it. The proof is the hashes of the disjoint subtrees,
# left to right; there are at most two per level, so at most 2·log2(size). A one-leaf range is
# checked by the same nodes as its inclusion proof (in another order). CHAIN.md does not define
# it: docs/EXPORT-FORMAT.md ("Range proof") does.


def _check_range(begin: int, end: int, size: int) -> None:
    _check_size("tree size", size)
    _check_size("range start", begin)
    _check_size("range end", end)
    if not begin < end <= size:
        raise MerkleError(f"leaves [{begin}, {end}) are not a non-empty range of a tree of size {size}")


def range_ranges(begin: int, end: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the range proof of leaves ``[begin, end)`` of the
    tree of ``size``, left to right (empty when the range is the whole tree).

    Raises :class:`MerkleError` unless ``0 <= begin < end <= size``.
    """
    _check_range(begin, end, size)
    out: list[tuple[int, int]] = []
    stack = [(0, size)]
    while stack:  # depth first, left subtree first: the disjoint subtrees come out left to right
        low, high = stack.pop()
        if high <= begin or low >= end:
            out.append((low, high))
        elif not (begin <= low and high <= end):
            k = _split(high - low)
            stack.append((low + k, high))
            stack.append((low, low + k))
    return out


def range_nodes(begin: int, end: int, size: int) -> list[list[Node]]:
    """For each element of the range proof of ``[begin, end)``, the perfect nodes that compose it."""
    return [tiles(low, high) for low, high in range_ranges(begin, end, size)]


def range_proof(nodes: NodeStore, begin: int, end: int, size: int) -> list[bytes]:
    """The range proof of leaves ``[begin, end)`` of the tree of ``size`` (O(log n) nodes, one
    fetch); raises :class:`MerkleError`."""
    return _hash_groups(nodes, range_nodes(begin, end, size))


def subtree_root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the given leaf hashes (at least one), as RFC 9162 defines it for any list:
    the fold of the perfect subtrees an appender keeps. Raises :class:`MerkleError`."""
    if not leaves:
        raise MerkleError("the root of no leaves is EMPTY_ROOT, not a subtree")
    stack: list[bytes] = []
    for count, leaf in enumerate(leaves):
        current = leaf
        while count & 1:  # each trailing 1-bit merges a completed subtree
            current = node_hash(stack.pop(), current)
            count >>= 1
        stack.append(current)
    return _fold(stack)


def range_root(leaves: Sequence[bytes], begin: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root of the tree of ``size`` whose leaves from ``begin`` on are ``leaves``, as the
    range proof ``proof`` completes it. Raises :class:`ProofError` for a proof or leaf of the
    wrong shape (too short, too long, not 32-byte hashes, a range outside the tree)."""
    for name, value in (("range start", begin), ("tree size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProofError(f"{name} must be a non-negative integer, found {value!r}")
    end = begin + len(leaves)
    if not begin < end <= size:
        raise ProofError(
            f"{len(leaves)} leaves from index {begin} are not a non-empty range of a tree of size {size}"
        )
    for position, element in enumerate(proof):
        _check_hash(f"range proof element {position}", element)
    for position, leaf in enumerate(leaves):
        if not isinstance(leaf, bytes | bytearray) or len(leaf) != HASH_BYTES:
            _check_hash(f"leaf hash {begin + position}", leaf)
    elements = iter(proof)
    used = 0

    def walk(low: int, high: int) -> bytes:
        nonlocal used
        if high <= begin or low >= end:
            element = next(elements, None)
            if element is None:
                raise ProofError(
                    f"range proof of leaves [{begin}, {end}) of {size} is too short ({len(proof)} elements)"
                )
            used += 1
            return bytes(element)
        if begin <= low and high <= end:
            return subtree_root(leaves[low - begin : high - begin])
        k = _split(high - low)
        left = walk(low, low + k)
        return node_hash(left, walk(low + k, high))

    computed = walk(0, size)
    if used != len(proof):
        raise ProofError(
            f"range proof of leaves [{begin}, {end}) of {size} is too long ({len(proof)} elements)"
        )
    return computed


def verify_range(
    leaves: Sequence[bytes], begin: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that ``leaves`` are exactly leaves ``begin, begin + 1, …`` of the tree of ``size``
    with ``root_hash``: no leaf of the range missing, added, changed or moved. Returns nothing;
    raises :class:`ProofError` (:class:`RootMismatch` when the proof leads elsewhere)."""
    _check_hash("root hash", root_hash)
    computed = range_root(leaves, begin, size, proof)
    if not hmac.compare_digest(computed, root_hash):
        raise RootMismatch(
            f"range of leaves [{begin}, {begin + len(leaves)}) in tree of size {size}",
            bytes(root_hash),
            computed,
        )
