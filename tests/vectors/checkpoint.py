"""Builds the leaf, tree and checkpoint test vectors (``schemas/vectors/checkpoint-v1.json``).

Run ``python -m tests.vectors.checkpoint > schemas/vectors/checkpoint-v1.json`` only
when the spec changes on purpose; ``test_merkle.py`` and ``test_checkpoint.py`` (in
tests/unit/schemas/) check the committed file against the code and against independent
re-implementations of CHAIN.md.
Deterministic: the entries are those of ``tests.vectors.chain.build()``, the keys come from
fixed seeds and Ed25519 signatures are deterministic (RFC 8032).
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from baldur_audit.schemas.chain import EntryKind, LinkInput
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    default_origin,
    sign_checkpoint,
)
from baldur_audit.schemas.merkle import (
    EMPTY_ROOT,
    MerkleFrontier,
    consistency_proof,
    entry_leaf_hash,
    inclusion_proof,
    leaf_data,
    nodes_of,
    proof_to_json,
)
from tests.vectors import chain as chain_vectors

#: Seeds of the two vector keys: SHA-256 of these texts (public test keys, never for real use).
SEED_TEXTS = ("baldur-audit checkpoint vector key 1", "baldur-audit checkpoint vector key 2")
CHECKPOINT_TIMES = {
    0: datetime(2025, 11, 29, 11, 59, 59, 0, tzinfo=UTC),
    5: datetime(2025, 11, 29, 12, 0, 5, 250000, tzinfo=UTC),
}


def seeds() -> list[bytes]:
    """The fixed Ed25519 seeds of the vector keys."""
    return [hashlib.sha256(text.encode("ascii")).digest() for text in SEED_TEXTS]


def build() -> dict[str, Any]:
    """The vectors document."""
    chain = chain_vectors.build()
    key_id, topic = chain["key_id"], chain["topic"]
    frontier = MerkleFrontier()
    store: dict[tuple[int, int], bytes] = {}
    leaves = []
    roots = [EMPTY_ROOT.hex()]
    frontiers = [frontier.to_bytes().hex()]
    for entry in chain["entries"]:
        link_input = LinkInput(
            seq=entry["seq"],
            topic=topic,
            partition=chain["partition"],
            offset=entry["offset"],
            timestamp_ms=entry["timestamp_ms"],
            kind=EntryKind.from_label(entry["kind"]),
            duplicate_of=entry["duplicate_of"],
            value_null=entry["value_hex"] is None,
            digest=bytes.fromhex(entry["digest_hex"]),
            view_digest=bytes.fromhex(entry["view_digest_hex"]),
        )
        link = bytes.fromhex(entry["link_hex"])
        data = leaf_data(link_input, key_id=key_id, link=link)
        leaf = entry_leaf_hash(link_input, key_id=key_id, link=link)
        for level, index, digest in frontier.append(leaf):
            store[(level, index)] = digest
        leaves.append(
            {
                "seq": entry["seq"],
                "leaf_index": entry["seq"] - 1,
                "leaf_data_hex": data.hex(),
                "leaf_hash_hex": leaf.hex(),
            }
        )
        roots.append(frontier.root().hex())
        frontiers.append(frontier.to_bytes().hex())
    nodes = nodes_of(store)
    size = frontier.size

    signers = [CheckpointSigner.from_seed(default_origin(chain["ledger_id"]), seed) for seed in seeds()]
    checkpoints = []
    for cp_size, moment in sorted(CHECKPOINT_TIMES.items()):
        head_link = chain["genesis_link_hex"] if cp_size == 0 else chain["entries"][cp_size - 1]["link_hex"]
        checkpoint = Checkpoint(
            origin=signers[0].name,
            size=cp_size,
            root_hash=bytes.fromhex(roots[cp_size]),
            head_seq=cp_size,
            head_link=bytes.fromhex(head_link),
            timestamp=moment,
        )
        checkpoints.append(
            {
                "size": cp_size,
                "body": checkpoint.body(),
                "note_signed_by_key_1": sign_checkpoint(checkpoint, signers[:1]),
                "note_signed_by_keys_1_and_2": sign_checkpoint(checkpoint, signers),
            }
        )
    return {
        "spec": "baldur-audit leaf hash, Merkle tree and checkpoint v1 (schemas/CHAIN.md §13-§15)",
        "entries_from": chain["spec"] + ": the same key id, topic, partition and entries",
        "leaf_tag": "baldur-audit/leaf/v1",
        "leaves": leaves,
        "tree": {
            "size": size,
            "roots_hex": roots,
            "frontiers_hex": frontiers,
            "nodes": [
                {"level": level, "index": index, "hash_hex": store[(level, index)].hex()}
                for level, index in sorted(store)
            ],
            "inclusion": [
                {
                    "leaf_index": index,
                    "tree_size": size,
                    "proof": proof_to_json(inclusion_proof(nodes, index, size)),
                }
                for index in range(size)
            ],
            "consistency": [
                {
                    "old_size": old,
                    "new_size": size,
                    "proof": proof_to_json(consistency_proof(nodes, old, size)),
                }
                for old in range(size + 1)
            ],
        },
        "keys": [
            {
                "seed_hex": signer_seed.hex(),
                "name": signer.name,
                "key_hash_hex": signer.key_hash.hex(),
                "public_key_hex": signer.public_key.hex(),
                "verifier_key": signer.verifier_key(),
            }
            for signer_seed, signer in zip(seeds(), signers, strict=True)
        ],
        "checkpoints": checkpoints,
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
