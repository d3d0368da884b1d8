"""The Merkle tree: published RFC 6962/9162 known answers, a naive reference written from the
RFC's recursive definitions, the frontier and node store, and proof verification that refuses
every corruption."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import merkle
from baldur_audit.schemas.chain import EntryKind, LinkInput, frame, link_message_framed
from baldur_audit.schemas.errors import AuditError
from baldur_audit.schemas.merkle import (
    EMPTY_ROOT,
    MerkleError,
    MerkleFrontier,
    ProofError,
    RootMismatch,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    leaf_hash,
    nodes_of,
    verify_consistency,
    verify_inclusion,
)
from tests.vectors import checkpoint as checkpoint_vectors

VECTORS = Path(__file__).resolve().parents[3] / "schemas" / "vectors"
PROPS = settings(max_examples=40, deadline=None)


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return document


# --- a naive reference, straight from RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 ----------------


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf *hashes* (the RFC's D[i] already hashed as leaves)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = ref_k(len(leaves))
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = ref_k(n)
    if m <= k:
        return ref_subproof(m, leaves[:k], whole) + [ref_mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m < n."""
    return ref_subproof(m, leaves, True)


# --- a node store built the way the chainer will build it -------------------------------------


class DictNodes:
    """A dict-backed store that counts look-ups, with or without ``get_many``."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.gets = 0

    def get(self, level: int, index: int) -> bytes:
        self.gets += 1
        return self.nodes[(level, index)]


class BatchNodes(DictNodes):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[int, int]]] = []

    def get_many(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self.batches.append(list(keys))
        return {key: self.nodes[key] for key in keys if key in self.nodes}


def leaves_of(size: int) -> list[bytes]:
    return [leaf_hash(struct.pack(">I", i) + b"leaf") for i in range(size)]


@cache
def built(size: int) -> tuple[tuple[bytes, ...], DictNodes, MerkleFrontier]:
    """Leaves, a store filled only through MerkleFrontier.append, and the frontier."""
    leaves = leaves_of(size)
    store = DictNodes()
    frontier = MerkleFrontier()
    for leaf in leaves:
        for level, index, digest in frontier.append(leaf):
            assert (level, index) not in store.nodes  # a perfect node is written once
            store.nodes[(level, index)] = digest
    return tuple(leaves), store, frontier


# --- (a) published known answers --------------------------------------------------------------

KAT = load("merkle-v1.json")
KAT_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in KAT["leaf_inputs_hex"]]


def kat_store() -> tuple[DictNodes, list[bytes]]:
    store, frontier = DictNodes(), MerkleFrontier()
    roots = [frontier.root()]
    for leaf in KAT_LEAVES:
        for level, index, digest in frontier.append(leaf):
            store.nodes[(level, index)] = digest
        roots.append(frontier.root())
    return store, roots


def test_known_answer_vectors_cite_their_sources() -> None:
    assert {s["repository"] for s in KAT["sources"]} == {"transparency-dev/merkle"}
    assert all(len(s["commit"]) == 40 for s in KAT["sources"])


def test_known_answer_roots_and_nodes() -> None:
    store, roots = kat_store()
    assert [r.hex() for r in roots] == KAT["roots_hex"]
    assert EMPTY_ROOT.hex() == KAT["roots_hex"][0]
    for level, row in enumerate(KAT["node_hashes_hex"]):
        for index, digest in enumerate(row):
            assert store.nodes[(level, index)].hex() == digest
    assert len(store.nodes) == sum(len(row) for row in KAT["node_hashes_hex"])
    for size, expected in enumerate(KAT["roots_hex"]):
        assert merkle.root(store, size).hex() == expected


def test_known_answer_inclusion_proofs() -> None:
    store, _ = kat_store()
    for case in KAT["inclusion"]:
        index, size = case["leaf_index"], case["tree_size"]
        proof = inclusion_proof(store, index, size)
        assert [p.hex() for p in proof] == case["proof_hex"]
        verify_inclusion(KAT_LEAVES[index], index, size, proof, bytes.fromhex(KAT["roots_hex"][size]))


def test_known_answer_consistency_proofs() -> None:
    store, _ = kat_store()
    for case in KAT["consistency"]:
        old, new = case["old_size"], case["new_size"]
        proof = consistency_proof(store, old, new)
        assert [p.hex() for p in proof] == case["proof_hex"]
        verify_consistency(
            old, new, bytes.fromhex(KAT["roots_hex"][old]), bytes.fromhex(KAT["roots_hex"][new]), proof
        )


def _as_source_ids(groups: list[list[tuple[int, int]]]) -> tuple[list[list[int]], list[int] | None]:
    """Our node groups in transparency-dev's layout: a fold group smallest subtree first,
    and the [begin, end) positions of the one group that is folded."""
    ids: list[list[int]] = []
    rehash = None
    for group in groups:
        if len(group) > 1:
            assert rehash is None  # at most one folded (non-perfect) element per proof
            rehash = [len(ids), len(ids) + len(group)]
        ids += [list(node) for node in reversed(group)]
    return ids, rehash


def test_known_node_selection_of_inclusion_proofs() -> None:
    for case in KAT["inclusion_nodes"]:
        groups = inclusion_nodes(case["leaf_index"], case["tree_size"])
        assert _as_source_ids(groups) == (case["ids"], case["rehash"]), case
    for case in KAT["inclusion_nodes_errors"]:
        with pytest.raises(MerkleError):
            inclusion_nodes(case["leaf_index"], case["tree_size"])


def test_known_node_selection_of_consistency_proofs() -> None:
    for case in KAT["consistency_nodes"]:
        groups = consistency_nodes(case["old_size"], case["new_size"])
        assert _as_source_ids(groups) == (case["ids"], case["rehash"]), case
    for case in KAT["consistency_nodes_errors"]:
        with pytest.raises(MerkleError):
            consistency_nodes(case["old_size"], case["new_size"])


# --- (b) the committed ledger vectors -----------------------------------------------------------

LEDGER = load("checkpoint-v1.json")


def test_committed_ledger_vectors_equal_the_generator() -> None:
    assert LEDGER == checkpoint_vectors.build()


def test_leaf_data_is_the_link_message_without_prev_plus_the_link() -> None:
    """Drift guard: whatever fields the link covers, the leaf covers too (CHAIN.md §13)."""
    link_input = LinkInput(
        seq=7,
        topic="t",
        partition=0,
        offset=41,
        timestamp_ms=1,
        kind=EntryKind.DUPLICATE,
        duplicate_of=3,
        value_null=False,
        digest=bytes(range(32)),
        view_digest=bytes(range(32, 64)),
    )
    link, prev = bytes(range(64, 96)), bytes(range(96, 128))
    message = link_message_framed("hk1-0000000000000000", prev, link_input)
    fields = []
    rest = message
    while rest:
        name_len = rest[0]
        name = rest[1 : 1 + name_len]
        (value_len,) = struct.unpack(">I", rest[1 + name_len : 5 + name_len])
        fields.append((name, rest[5 + name_len : 5 + name_len + value_len]))
        rest = rest[5 + name_len + value_len :]
    assert fields[0][0] == b"domain" and fields[1] == (b"prev", prev)
    expected = frame(b"baldur-audit/leaf/v1", fields[2:] + [(b"link", link)])
    assert merkle.leaf_data(link_input, key_id="hk1-0000000000000000", link=link) == expected


def spec_leaf_data(entry: dict[str, Any], chain: dict[str, Any]) -> bytes:
    """CHAIN.md §13 with struct only: the link's fields minus prev, plus the link."""

    def fld(name: str, value: bytes) -> bytes:
        return bytes([len(name)]) + name.encode("ascii") + struct.pack(">I", len(value)) + value

    kind = {"event": 1, "rejected": 2, "duplicate": 3}[entry["kind"]]
    return b"".join(
        [
            fld("domain", b"baldur-audit/leaf/v1"),
            fld("key_id", chain["key_id"].encode()),
            fld("seq", struct.pack(">Q", entry["seq"])),
            fld("topic", chain["topic"].encode()),
            fld("partition", struct.pack(">i", chain["partition"])),
            fld("offset", struct.pack(">q", entry["offset"])),
            fld("timestamp", struct.pack(">q", entry["timestamp_ms"])),
            fld("kind", bytes([kind])),
            fld("duplicate_of", struct.pack(">Q", entry["duplicate_of"])),
            fld("value_null", b"\x01" if entry["value_hex"] is None else b"\x00"),
            fld("digest", hashlib.sha256(bytes.fromhex(entry["value_hex"] or "")).digest()),
            fld("view", bytes.fromhex(entry["view_digest_hex"])),
            fld("link", bytes.fromhex(entry["link_hex"])),
        ]
    )


def test_ledger_leaves_match_an_independent_reading_of_the_spec() -> None:
    chain = checkpoint_vectors.chain_vectors.build()
    assert len(LEDGER["leaves"]) == len(chain["entries"])
    for vector, entry in zip(LEDGER["leaves"], chain["entries"], strict=True):
        data = spec_leaf_data(entry, chain)
        assert vector["leaf_data_hex"] == data.hex()
        assert vector["leaf_hash_hex"] == ref_leaf(data).hex()
        assert vector["leaf_index"] == entry["seq"] - 1


def test_ledger_tree_matches_the_reference() -> None:
    leaves = [bytes.fromhex(v["leaf_hash_hex"]) for v in LEDGER["leaves"]]
    tree = LEDGER["tree"]
    assert tree["roots_hex"] == [ref_mth(leaves[:n]).hex() for n in range(len(leaves) + 1)]
    store = nodes_of({(n["level"], n["index"]): bytes.fromhex(n["hash_hex"]) for n in tree["nodes"]})
    root = bytes.fromhex(tree["roots_hex"][-1])
    for case in tree["inclusion"]:
        proof = merkle.proof_from_json(case["proof"])
        assert proof == ref_path(case["leaf_index"], leaves)
        verify_inclusion(leaves[case["leaf_index"]], case["leaf_index"], case["tree_size"], proof, root)
    for case in tree["consistency"]:
        proof = merkle.proof_from_json(case["proof"])
        old = case["old_size"]
        assert proof == (ref_proof(old, leaves) if 0 < old < len(leaves) else [])
        verify_consistency(old, case["new_size"], bytes.fromhex(tree["roots_hex"][old]), root, proof)
    for size, encoded in enumerate(tree["frontiers_hex"]):
        frontier = MerkleFrontier.from_bytes(bytes.fromhex(encoded))
        assert frontier.size == size and frontier.root().hex() == tree["roots_hex"][size]
        assert MerkleFrontier.from_nodes(store, size) == frontier


# --- (c) the code against the reference, exhaustively for small trees --------------------------

SMALL = 34


def test_frontier_roots_and_store_match_the_reference_for_every_small_size() -> None:
    leaves, store, _ = built(SMALL)
    frontier = MerkleFrontier()
    for size in range(SMALL + 1):
        assert frontier.root() == ref_mth(leaves[:size]) == merkle.root(store, size)
        assert MerkleFrontier.from_bytes(frontier.to_bytes()) == frontier
        assert MerkleFrontier.from_nodes(store, size) == frontier
        if size < SMALL:
            frontier.append(leaves[size])


def test_every_inclusion_proof_of_every_small_tree() -> None:
    leaves, store, _ = built(SMALL)
    for size in range(1, SMALL + 1):
        root = ref_mth(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(store, index, size)
            assert proof == ref_path(index, leaves[:size])
            verify_inclusion(leaves[index], index, size, proof, root)


def test_every_consistency_proof_of_every_small_tree() -> None:
    leaves, store, _ = built(SMALL)
    for new in range(SMALL + 1):
        new_root = ref_mth(leaves[:new])
        for old in range(new + 1):
            proof = consistency_proof(store, old, new)
            assert proof == (ref_proof(old, leaves[:new]) if 0 < old < new else [])
            verify_consistency(old, new, ref_mth(leaves[:old]), new_root, proof)


@PROPS
@given(st.data())
def test_proofs_match_the_reference_up_to_300_leaves(data: st.DataObject) -> None:
    leaves, store, _ = built(300)
    size = data.draw(st.integers(1, 300), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(0, size), label="old")
    assert merkle.root(store, size) == ref_mth(leaves[:size])
    proof = inclusion_proof(store, index, size)
    assert proof == ref_path(index, leaves[:size])
    verify_inclusion(leaves[index], index, size, proof, ref_mth(leaves[:size]))
    consistency = consistency_proof(store, old, size)
    assert consistency == (ref_proof(old, leaves[:size]) if 0 < old < size else [])
    verify_consistency(old, size, ref_mth(leaves[:old]), ref_mth(leaves[:size]), consistency)


def test_proofs_cost_logarithmic_lookups_and_one_batch() -> None:
    leaves, plain, frontier = built(300)
    batch = BatchNodes()
    batch.nodes = plain.nodes
    for size in (1, 2, 3, 100, 255, 256, 257, 299, 300):
        depth = max(1, (size - 1).bit_length())
        for index in (0, size // 3, size - 1):
            batch.batches.clear()
            assert inclusion_proof(batch, index, size) == ref_path(index, leaves[:size])
            assert len(batch.batches) == (1 if size > 1 else 0)
            assert sum(len(b) for b in batch.batches) <= 2 * depth
        for old in (1, size // 2, size - 1):
            batch.batches.clear()
            consistency_proof(batch, old, size)
            assert len(batch.batches) <= 1
            assert sum(len(b) for b in batch.batches) <= 2 * depth + 1
    before = plain.gets
    merkle.root(plain, 300)  # 300 = 256 + 32 + 8 + 4: four perfect nodes
    assert plain.gets - before == 4
    assert frontier.nodes() == [(8, 0), (5, 8), (3, 36), (2, 74)]


def test_append_returns_exactly_the_perfect_nodes_completed() -> None:
    frontier = MerkleFrontier()
    created = [frontier.append(leaf) for leaf in leaves_of(8)]
    assert [[(level, index) for level, index, _ in c] for c in created] == [
        [(0, 0)],
        [(0, 1), (1, 0)],
        [(0, 2)],
        [(0, 3), (1, 1), (2, 0)],
        [(0, 4)],
        [(0, 5), (1, 2)],
        [(0, 6)],
        [(0, 7), (1, 3), (2, 1), (3, 0)],
    ]
    assert created[-1][-1][2] == frontier.root()


# --- (d) verification refuses every corruption -------------------------------------------------


def flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def assert_inclusion_refused(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)


def test_inclusion_refuses_corruptions_of_every_small_proof() -> None:
    leaves, store, _ = built(SMALL)
    other = hashlib.sha256(b"other").digest()
    for size in range(1, 18):
        root = ref_mth(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(store, index, size)
            for position in range(len(proof)):  # every element, a different bit each time
                for bit in (0, (index * 37 + position * 11) % 256, 255):
                    changed = list(proof)
                    changed[position] = flip(proof[position], bit)
                    assert_inclusion_refused(leaves[index], index, size, changed, root)
            for bit in (0, 129, 255):
                assert_inclusion_refused(flip(leaves[index], bit), index, size, proof, root)
                assert_inclusion_refused(leaves[index], index, size, proof, flip(root, bit))
            for wrong in range(size + 3):  # every other index
                if wrong != index:
                    assert_inclusion_refused(leaves[index], wrong, size, proof, root)
            for wrong in range(1, SMALL + 1):  # every other size, against that size's root
                if wrong != size:
                    assert_inclusion_refused(leaves[index], index, wrong, proof, ref_mth(leaves[:wrong]))
            for wrong in (size * 2, size // 2):  # the same root claimed for another size
                assert_inclusion_refused(leaves[index], index, wrong, proof, root)
            assert_inclusion_refused(leaves[index], index, size, proof + [other], root)
            with pytest.raises(ProofError, match="too long"):  # RFC step 4a, not a root mismatch
                verify_inclusion(leaves[index], index, size, proof + [other], root)
            assert_inclusion_refused(leaves[index], index, size, proof + [root], root)
            assert_inclusion_refused(leaves[index], index, size, [other] + proof, root)
            assert_inclusion_refused(leaves[index], index, size, [root] + proof, root)
            if proof:
                assert_inclusion_refused(leaves[index], index, size, proof[:-1], root)
                assert_inclusion_refused(leaves[index], index, size, proof[1:], root)
            if len(proof) > 1:
                swapped = [proof[1], proof[0]] + proof[2:]
                assert_inclusion_refused(leaves[index], index, size, swapped, root)


def assert_consistency_refused(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, new_root, proof)


def test_consistency_refuses_corruptions_of_every_small_proof() -> None:
    leaves, store, _ = built(SMALL)
    other = hashlib.sha256(b"other").digest()
    roots = [ref_mth(leaves[:n]) for n in range(SMALL + 1)]
    for new in range(2, 18):
        for old in range(1, new):
            proof = consistency_proof(store, old, new)
            old_root, new_root = roots[old], roots[new]
            for position in range(len(proof)):
                for bit in (0, (old * 37 + position * 11) % 256, 255):
                    changed = list(proof)
                    changed[position] = flip(proof[position], bit)
                    assert_consistency_refused(old, new, old_root, new_root, changed)
            for bit in (0, 200):
                assert_consistency_refused(old, new, flip(old_root, bit), new_root, proof)
                assert_consistency_refused(old, new, old_root, flip(new_root, bit), proof)
            for wrong_old in range(0, new + 1):  # every other old size, with its real root
                if wrong_old != old:
                    assert_consistency_refused(wrong_old, new, roots[wrong_old], new_root, proof)
            for wrong_new in range(1, SMALL + 1):  # every other new size, with its real root
                if wrong_new != new:
                    assert_consistency_refused(old, wrong_new, old_root, roots[wrong_new], proof)
            assert_consistency_refused(old, new, new_root, old_root, proof)  # swapped roots
            assert_consistency_refused(old, new, old_root, new_root, [])
            assert_consistency_refused(old, new, old_root, new_root, proof[:-1])
            assert_consistency_refused(old, new, old_root, new_root, proof + [other])
            with pytest.raises(ProofError, match="too long"):  # RFC step 6a, not a root mismatch
                verify_consistency(old, new, old_root, new_root, proof + [other])
            assert_consistency_refused(old, new, old_root, new_root, proof + [old_root])
            assert_consistency_refused(old, new, old_root, new_root, [other] + proof)
            assert_consistency_refused(old, new, old_root, new_root, [proof[0]] + proof)


@PROPS
@given(st.data())
def test_any_single_bit_flip_is_refused(data: st.DataObject) -> None:
    leaves, store, _ = built(300)
    size = data.draw(st.integers(2, 300), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(store, index, size)
    position = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 255), label="bit")
    proof[position] = flip(proof[position], bit)
    assert_inclusion_refused(leaves[index], index, size, proof, ref_mth(leaves[:size]))
    old = data.draw(st.integers(1, size - 1), label="old")
    consistency = consistency_proof(store, old, size)
    position = data.draw(st.integers(0, len(consistency) - 1), label="consistency element")
    consistency[position] = flip(consistency[position], bit)
    assert_consistency_refused(old, size, ref_mth(leaves[:old]), ref_mth(leaves[:size]), consistency)


def test_consistency_edge_cases() -> None:
    leaves, _, _ = built(4)
    root1, root2 = ref_mth(leaves[:1]), ref_mth(leaves[:2])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 2, EMPTY_ROOT, root2, [])
    verify_consistency(1, 1, root1, root1, [])
    assert_consistency_refused(0, 2, root1, root2, [])  # size 0 must have the empty root
    assert_consistency_refused(0, 0, root1, root1, [])
    assert_consistency_refused(1, 1, root1, root2, [])  # equal sizes, different roots
    assert_consistency_refused(1, 1, root1, root1, [EMPTY_ROOT])  # equal roots, non-empty proof
    assert_consistency_refused(0, 1, EMPTY_ROOT, root1, [EMPTY_ROOT])
    assert_consistency_refused(2, 1, root2, root1, [])  # back in time
    assert_consistency_refused(1, 2, root1, root2, [])  # empty proof
    with pytest.raises(RootMismatch) as caught:
        verify_consistency(1, 2, root1, flip(root2, 3), [leaves[1]])
    assert caught.value.expected == flip(root2, 3) and caught.value.computed == root2
    assert "expected root" in str(caught.value)


def test_inclusion_edge_cases() -> None:
    leaves, _, _ = built(2)
    some = hashlib.sha256(b"x").digest()
    verify_inclusion(leaves[0], 0, 1, [], leaves[0])  # a one-leaf tree's root is the leaf
    for index, size in ((0, 0), (1, 0), (1, 1), (2, 1)):
        assert_inclusion_refused(some, index, size, [], EMPTY_ROOT)
        assert_inclusion_refused(some, index, size, [], some)
    with pytest.raises(RootMismatch) as caught:
        verify_inclusion(leaves[0], 0, 1, [], some)
    assert (caught.value.expected, caught.value.computed) == (some, leaves[0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: verify_inclusion(b"short", 0, 1, [], EMPTY_ROOT),
        lambda: verify_inclusion(EMPTY_ROOT, 0, 1, [], b""),
        lambda: verify_inclusion(EMPTY_ROOT, 0, 2, [b"x" * 31], EMPTY_ROOT),
        lambda: verify_inclusion(EMPTY_ROOT, -1, 2, [], EMPTY_ROOT),
        lambda: verify_inclusion(EMPTY_ROOT, True, 2, [], EMPTY_ROOT),
        lambda: verify_inclusion(EMPTY_ROOT, 0, "2", [], EMPTY_ROOT),
        lambda: verify_consistency(1, 2, EMPTY_ROOT, EMPTY_ROOT, ["not bytes"]),
        lambda: verify_consistency(-1, 2, EMPTY_ROOT, EMPTY_ROOT, []),
        lambda: verify_consistency(1, 2, b"x" * 33, EMPTY_ROOT, [EMPTY_ROOT]),
    ],
)
def test_malformed_verification_input_is_a_proof_error(call: Any) -> None:
    with pytest.raises(ProofError):
        call()


# --- (e) bad arguments and encodings are typed errors ------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda store: inclusion_proof(store, 0, 0),
        lambda store: inclusion_proof(store, 5, 5),
        lambda store: inclusion_proof(store, -1, 5),
        lambda store: inclusion_proof(store, 0, 9),  # beyond what the store holds
        lambda store: consistency_proof(store, 6, 5),
        lambda store: consistency_proof(store, 3, 9),
        lambda store: merkle.root(store, 9),
        lambda store: merkle.root(store, -1),
        lambda store: merkle.root(store, 2**64),
        lambda store: MerkleFrontier.from_nodes(store, 9),
    ],
)
def test_bad_arguments_are_merkle_errors(call: Any) -> None:
    _, store, _ = built(8)
    with pytest.raises(MerkleError):
        call(store)


def test_missing_or_malformed_nodes_are_merkle_errors() -> None:
    batch = BatchNodes()
    with pytest.raises(MerkleError, match="not in the store"):
        merkle.root(batch, 3)
    batch.nodes = {(1, 0): b"x" * 32, (0, 2): b"short"}
    with pytest.raises(MerkleError, match="32-byte"):
        merkle.root(batch, 3)
    batch.nodes[(0, 2)] = memoryview(b"y" * 32)  # type: ignore[assignment]  # a driver's buffer
    assert merkle.root(batch, 3) == merkle.node_hash(b"x" * 32, b"y" * 32)


def test_frontier_bytes_are_validated() -> None:
    _, _, frontier = built(300)
    encoded = frontier.to_bytes()
    assert len(encoded) == 9 + 32 * 4
    assert MerkleFrontier.from_bytes(encoded) == frontier
    for bad in (
        b"",
        encoded[:8],
        encoded[:-1],
        encoded + b"\x00",
        b"\x02" + encoded[1:],
        encoded[:1] + struct.pack(">Q", 301) + encoded[9:],
    ):
        with pytest.raises(MerkleError):
            MerkleFrontier.from_bytes(bad)
    empty = MerkleFrontier()
    assert empty.to_bytes() == b"\x01" + bytes(8) and empty.root() == EMPTY_ROOT
    with pytest.raises(MerkleError):
        empty.append(b"short")


def test_resumed_frontier_continues_like_the_original() -> None:
    leaves = leaves_of(40)
    original = MerkleFrontier()
    for leaf in leaves[:23]:
        original.append(leaf)
    resumed = MerkleFrontier.from_bytes(original.to_bytes())
    for leaf in leaves[23:]:
        assert resumed.append(leaf) == original.append(leaf)
    assert resumed.root() == ref_mth(leaves)


def test_proof_json_encoding() -> None:
    proof = [EMPTY_ROOT, hashlib.sha256(b"a").digest()]
    encoded = merkle.proof_to_json(proof)
    assert encoded[0] == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert merkle.proof_from_json(json.loads(json.dumps(encoded))) == proof
    for bad in (
        "not a list",
        [1],
        ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"],
        ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV="],  # non-canonical last digit
        ["47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="],
        ["AAAA"],
        ["é"],
    ):
        with pytest.raises(MerkleError):
            merkle.proof_from_json(bad)


def test_errors_are_audit_errors() -> None:
    assert issubclass(ProofError, MerkleError) and issubclass(MerkleError, AuditError)
    assert issubclass(RootMismatch, ProofError)
