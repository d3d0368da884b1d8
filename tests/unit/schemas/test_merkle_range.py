"""Range proofs over the Merkle tree (schemas/merkle.py, docs/EXPORT-FORMAT.md "Range proof"):
checked against a naive reference written from RFC 9162's recursive MTH, built from a node
store the way the checkpointer builds it, and refused for every leaf changed, dropped, added
or moved, and for every proof element changed, dropped or added."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldur_audit.schemas.merkle import (
    MerkleError,
    MerkleFrontier,
    ProofError,
    RootMismatch,
    inclusion_proof,
    leaf_hash,
    nodes_of,
    range_nodes,
    range_proof,
    range_ranges,
    range_root,
    subtree_root,
    verify_range,
)

PROPS = settings(max_examples=60, deadline=None)
MAX = 300


# --- a naive reference: RFC 9162 §2.1.1 over lists of leaf hashes ---------------------------------


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = ref_k(len(leaves))
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_range_proof(leaves: Sequence[bytes], begin: int, end: int) -> list[bytes]:
    """The MTH of every maximal subtree of the recursion that holds no leaf of [begin, end),
    left to right, computed from the leaves themselves."""

    def go(low: int, items: Sequence[bytes]) -> list[bytes]:
        high = low + len(items)
        if high <= begin or low >= end:
            return [ref_mth(items)]
        if begin <= low and high <= end:
            return []
        k = ref_k(len(items))
        return go(low, items[:k]) + go(low + k, items[k:])

    return go(0, leaves)


def leaves_of(size: int) -> list[bytes]:
    return [leaf_hash(struct.pack(">I", i) + b"leaf") for i in range(size)]


LEAVES = leaves_of(MAX)


def store_of(size: int) -> tuple[object, list[bytes]]:
    """The perfect nodes of the tree of ``size`` as the checkpointer stores them, and each
    prefix's root."""
    nodes: dict[tuple[int, int], bytes] = {}
    roots = []
    frontier = MerkleFrontier()
    for leaf in LEAVES[:size]:
        for level, index, digest in frontier.append(leaf):
            nodes[(level, index)] = digest
        roots.append(frontier.root())
    return nodes_of(nodes), roots


STORE, ROOTS = store_of(MAX)


def root_of(size: int) -> bytes:
    return ROOTS[size - 1]


ranges = st.integers(1, MAX).flatmap(
    lambda size: st.tuples(st.just(size), st.integers(0, size - 1)).flatmap(
        lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), st.integers(pair[1] + 1, pair[0]))
    )
)


# --- agreement with the reference -----------------------------------------------------------------


@PROPS
@given(ranges)
def test_the_proof_from_stored_nodes_is_the_reference_and_verifies(case: tuple[int, int, int]) -> None:
    size, begin, end = case
    proof = range_proof(STORE, begin, end, size)
    assert proof == ref_range_proof(LEAVES[:size], begin, end)
    assert range_root(LEAVES[begin:end], begin, size, proof) == ref_mth(LEAVES[:size]) == root_of(size)
    verify_range(LEAVES[begin:end], begin, size, proof, root_of(size))
    assert len(proof) <= 2 * math.ceil(math.log2(size)) if size > 1 else proof == []
    assert [b - a for a, b in range_ranges(begin, end, size)] == [
        sum(1 << level for level, _ in group) for group in range_nodes(begin, end, size)
    ]


def test_every_range_of_trees_up_to_40_leaves_verifies() -> None:
    for size in range(1, 41):
        for begin in range(size):
            for end in range(begin + 1, size + 1):
                proof = range_proof(STORE, begin, end, size)
                assert proof == ref_range_proof(LEAVES[:size], begin, end), (size, begin, end)
                verify_range(LEAVES[begin:end], begin, size, proof, root_of(size))


def test_the_whole_tree_needs_no_proof_and_one_leaf_needs_its_inclusion_path() -> None:
    for size in (1, 2, 7, 64, 255):
        assert range_proof(STORE, 0, size, size) == []
        verify_range(LEAVES[:size], 0, size, [], root_of(size))
        for index in {0, size // 2, size - 1}:
            one = range_proof(STORE, index, index + 1, size)
            assert sorted(one) == sorted(inclusion_proof(STORE, index, size))


def test_subtree_root_is_the_mth_of_any_list() -> None:
    for count in range(1, 70):
        assert subtree_root(LEAVES[:count]) == ref_mth(LEAVES[:count])
    with pytest.raises(MerkleError):
        subtree_root([])


# --- refusals -----------------------------------------------------------------------------------


def _refused(leaves: Sequence[bytes], begin: int, size: int, proof: Sequence[bytes]) -> None:
    with pytest.raises(ProofError):
        verify_range(leaves, begin, size, proof, root_of(size))


@PROPS
@given(ranges, st.data())
def test_a_changed_dropped_added_or_moved_leaf_is_refused(
    case: tuple[int, int, int], data: st.DataObject
) -> None:
    size, begin, end = case
    proof = range_proof(STORE, begin, end, size)
    leaves = LEAVES[begin:end]
    at = data.draw(st.integers(0, len(leaves) - 1), label="at")
    changed = list(leaves)
    changed[at] = hashlib.sha256(leaves[at]).digest()
    _refused(changed, begin, size, proof)
    if len(leaves) > 1:
        _refused(leaves[:at] + leaves[at + 1 :], begin, size, proof)  # dropped
        swapped = list(leaves)
        other = (at + 1) % len(leaves)
        swapped[at], swapped[other] = swapped[other], swapped[at]
        _refused(swapped, begin, size, proof)  # reordered
    _refused(leaves[:at] + [leaves[at]] + leaves[at:], begin, size, proof)  # one shown twice
    if end < size:
        _refused(leaves + [LEAVES[end]], begin, size, proof)  # the true next leaf added
    if begin > 0:
        _refused([LEAVES[begin - 1], *leaves], begin - 1, size, proof)  # the true previous leaf added
        _refused(leaves, begin - 1, size, proof)  # the same leaves at another position
    if end < size:
        _refused(leaves, begin + 1, size, proof)


@PROPS
@given(ranges, st.data())
def test_a_changed_dropped_or_added_proof_element_is_refused(
    case: tuple[int, int, int], data: st.DataObject
) -> None:
    size, begin, end = case
    proof = range_proof(STORE, begin, end, size)
    leaves = LEAVES[begin:end]
    _refused(leaves, begin, size, [*proof, LEAVES[0]])
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="at")
        changed = list(proof)
        changed[at] = bytes(32)
        _refused(leaves, begin, size, changed)
        _refused(leaves, begin, size, proof[:at] + proof[at + 1 :])
    if size < MAX:
        with pytest.raises(ProofError):  # the same proof against a larger tree's root
            verify_range(leaves, begin, size + 1, proof, root_of(size + 1))


def test_a_wrong_root_is_a_root_mismatch_and_malformed_input_a_proof_error() -> None:
    proof = range_proof(STORE, 3, 9, 20)
    with pytest.raises(RootMismatch) as caught:
        verify_range(LEAVES[3:9], 3, 20, proof, root_of(19))
    assert caught.value.expected == root_of(19) and caught.value.computed == root_of(20)
    with pytest.raises(ProofError, match="non-empty range"):
        range_root([], 3, 20, proof)
    with pytest.raises(ProofError, match="non-empty range"):
        range_root(LEAVES[3:9], 15, 20, proof)
    with pytest.raises(ProofError, match="32-byte"):
        range_root([*LEAVES[3:8], b"short"], 3, 20, proof)
    with pytest.raises(ProofError, match="32-byte"):
        range_root(LEAVES[3:9], 3, 20, [*proof[:-1], b"short"])
    with pytest.raises(ProofError, match="non-negative"):
        range_root(LEAVES[3:9], -1, 20, proof)
    with pytest.raises(ProofError, match="too short"):
        range_root(LEAVES[3:9], 3, 20, proof[:-1])
    with pytest.raises(ProofError, match="too long"):
        range_root(LEAVES[3:9], 3, 20, [*proof, proof[0]])
    for begin, end, size in ((0, 0, 5), (3, 2, 5), (0, 6, 5), (-1, 2, 5)):
        with pytest.raises(MerkleError):
            range_ranges(begin, end, size)
    with pytest.raises(MerkleError, match="not in the store"):
        range_proof(nodes_of({}), 0, 1, 2)


# --- the worked examples of docs/EXPORT-FORMAT.md §8 --------------------------------------------

VECTORS = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "merkle-v1.json"
DOC_EXAMPLES = {
    (2, 5, 8): [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    (3, 4, 7): [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e",
    ],
    (5, 7, 7): [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (0, 8, 8): [],
}


def test_the_documented_examples_on_the_published_tree() -> None:
    published = json.loads(VECTORS.read_text(encoding="utf-8"))
    leaves = [leaf_hash(bytes.fromhex(text)) for text in published["leaf_inputs_hex"]]
    roots = published["roots_hex"]
    for (begin, end, size), expected in DOC_EXAMPLES.items():
        root = bytes.fromhex(roots[size])
        assert ref_mth(leaves[:size]) == root
        proof = ref_range_proof(leaves[:size], begin, end)
        assert [element.hex() for element in proof] == expected
        verify_range(leaves[begin:end], begin, size, proof, root)
