"""Builds the forward-secure ratchet vectors (``schemas/vectors/ratchet-v1.json``).

Run ``python -m tests.vectors.ratchet > schemas/vectors/ratchet-v1.json`` only when
CHAIN.md §16 changes on purpose; tests/unit/schemas/test_keys.py checks the committed file
against the code and against an independent HKDF written from RFC 5869 with ``hmac`` alone.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.keys import RATCHET_TAG, epoch_of, ratchet_secret

INITIAL_KEY = bytes(range(32))
EPOCHS = 6
EPOCH_ENTRIES = 3
SEQS = [1, 2, 3, 4, 6, 7, 16, 18]


def build() -> dict[str, Any]:
    """The vectors as a JSON-ready object."""
    epochs = []
    secret = INITIAL_KEY
    for epoch in range(EPOCHS):
        if epoch:
            secret = ratchet_secret(secret, epoch)
        epochs.append(
            {
                "epoch": epoch,
                "info_hex": "" if epoch == 0 else (RATCHET_TAG + struct.pack(">Q", epoch)).hex(),
                "key_hex": secret.hex(),
                "key_id": SigningKey.derive(secret).key_id,
            }
        )
    return {
        "spec": "baldur-audit CHAIN.md §16, ratchet v1",
        "kdf": "HKDF-SHA256 (RFC 5869), salt absent (32 zero bytes), L = 32",
        "rule": "K_0 = initial key; K_{e+1} = HKDF(IKM = K_e, info = 'baldur-audit/ratchet/v1' "
        "|| u64be(e+1)); epoch(seq) = (seq - 1) // N; key_id as CHAIN.md §3",
        "initial_key_hex": INITIAL_KEY.hex(),
        "epochs": epochs,
        "epoch_entries": EPOCH_ENTRIES,
        "seq_epochs": [
            {
                "seq": seq,
                "epoch": epoch_of(seq, EPOCH_ENTRIES),
                "key_id": epochs[epoch_of(seq, EPOCH_ENTRIES)]["key_id"],
            }
            for seq in SEQS
        ],
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2)
    sys.stdout.write("\n")
