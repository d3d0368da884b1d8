"""Checking an evidence bundle offline (``bundle.py``): no database, no Kafka, no HMAC key —
only the checkpoint verifier keys. Imports the pure core and ``bundle.py`` only.

It checks the note's signature, the bundle's own spelling (one canonical JSON text, so no
byte of it can change unnoticed), the entry's visible fields against its view digest and,
when the payload is included, against the payload and its digest, then the leaf against the
signed root (inclusion) or the two roots against each other (consistency). Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from baldur_audit.schemas.chain import EntryKind, classify
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    UnverifiableCheckpoint,
    VerifierKey,
    open_checkpoint,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, WriterSchema, is_schema_record, read_fingerprint
from baldur_audit.schemas.errors import DecodeError
from baldur_audit.schemas.merkle import (
    MerkleError,
    ProofError,
    proof_from_json,
    verify_consistency,
    verify_inclusion,
)
from baldur_audit.schemas.view import entry_view, rejected_view_body, split_view, view_digest

from .bundle import (
    CONSISTENCY_FORMAT,
    ENTRY_KEYS,
    FIELD_COLUMNS,
    INCLUSION_FORMAT,
    MAX_BUNDLE_BYTES,
    BundleInvalid,
    entry_leaf,
    fields_view_body,
    ms_iso,
    note_key_ids,
    render,
)

_HEX32 = re.compile(r"[0-9a-f]{64}")
_DUMMY_TIMESTAMP = b"\x00\x00\x00\x08" + bytes(8)  # frames a view body as a whole view


@dataclass(frozen=True, slots=True)
class ProofReport:
    """A bundle that verified: what it proves."""

    kind: str
    summary: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {"valid": True, "kind": self.kind, **self.summary}


def _strict_json(data: bytes | str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise BundleInvalid(f"the bundle repeats the key {key!r}")
            result[key] = value
        return result

    def constant(token: str) -> Any:
        raise BundleInvalid(f"the bundle holds {token}, which is not JSON")

    if isinstance(data, bytes):
        if len(data) > MAX_BUNDLE_BYTES:
            raise BundleInvalid(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise BundleInvalid("the bundle is not ASCII JSON") from None
    try:
        parsed = json.loads(data, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, BundleInvalid):
            raise
        raise BundleInvalid(f"the bundle is not JSON ({str(exc).split(':')[0]})") from None
    if not isinstance(parsed, dict):
        raise BundleInvalid("the bundle is not a JSON object")
    if render(parsed) != data:
        raise BundleInvalid(
            "the bundle is not in its canonical form: it was edited or "
            "reformatted after `baldur-audit prove` wrote it"
        )
    return parsed


def _keys(document: object, expected: set[str] | frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(document, dict) or set(document) != set(expected):
        raise BundleInvalid(f"{where} must hold exactly the keys {', '.join(sorted(expected))}")
    return document


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BundleInvalid(f"{where} must be an integer in [{low}, {high}]")
    return value


def _hex32(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise BundleInvalid(f"{where} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


def _open(document: object, verifiers: Sequence[VerifierKey], where: str) -> tuple[Checkpoint, list[str]]:
    doc = _keys(document, {"note", "key_ids"}, where)
    note, key_ids = doc["note"], doc["key_ids"]
    if (
        not isinstance(note, str)
        or not isinstance(key_ids, list)
        or not all(isinstance(k, str) for k in key_ids)
    ):
        raise BundleInvalid(f"{where}.note must be text and {where}.key_ids a list of key ids")
    unverifiable: UnverifiableCheckpoint | None = None
    try:
        checkpoint, signers = open_checkpoint(note, verifiers)
    except UnverifiableCheckpoint as exc:
        unverifiable = exc
    except CheckpointError as exc:
        raise BundleInvalid(f"{where}: {exc}") from None
    if key_ids != note_key_ids(note):
        raise BundleInvalid(
            f"{where}.key_ids do not name the note's signatures ({', '.join(note_key_ids(note)) or 'none'})"
        )
    if unverifiable is not None:
        raise unverifiable
    labels = {v.name: v.label for v in verifiers}
    return checkpoint, [labels.get(name, name) for name in signers]


def _check_entry(document: object) -> tuple[dict[str, Any], list[str]]:
    """Structure, fields against the view digest, payload against digest and fields."""
    entry = _keys(document, ENTRY_KEYS, "entry")
    seq = _int(entry["seq"], "entry.seq", 1, 2**63 - 1)
    _int(entry["partition"], "entry.partition", -(2**31), 2**31 - 1)
    _int(entry["kafka_offset"], "entry.kafka_offset", 0, 2**63 - 1)
    timestamp_ms = _int(entry["kafka_timestamp_ms"], "entry.kafka_timestamp_ms", -(2**53), 2**53)
    if not isinstance(entry["topic"], str) or not isinstance(entry["key_id"], str) or not entry["key_id"]:
        raise BundleInvalid("entry.topic and entry.key_id must be text")
    if not isinstance(entry["kind"], str) or entry["kind"] not in {kind.label for kind in EntryKind}:
        raise BundleInvalid("entry.kind must be event, rejected, duplicate or schema")
    duplicate_of = _int(entry["duplicate_of"], "entry.duplicate_of", 0, seq - 1)
    if (entry["kind"] == "duplicate") != (duplicate_of > 0):
        raise BundleInvalid(
            "entry.duplicate_of must name an earlier entry for a duplicate, and be 0 otherwise"
        )
    if not isinstance(entry["value_null"], bool) or not isinstance(entry["payload_included"], bool):
        raise BundleInvalid("entry.value_null and entry.payload_included must be true or false")
    digest = _hex32(entry["digest"], "entry.digest")
    stated_view = _hex32(entry["view_digest"], "entry.view_digest")
    _hex32(entry["link"], "entry.link")
    try:
        shown_time = ms_iso(timestamp_ms)
    except OverflowError:
        shown_time = None
    if entry["kafka_time"] != shown_time:
        raise BundleInvalid("entry.kafka_time is not entry.kafka_timestamp_ms")
    if entry["fields"] is None:  # pruned by retention: only the sealed digests remain
        if entry["payload_included"] or entry["payload"] is not None or entry["writer_schema"] is not None:
            raise BundleInvalid("an entry without fields (pruned) cannot include a payload")
        return entry, ["fields and payload were pruned: only the sealed digests are proven"]
    body = fields_view_body(entry["fields"])
    if not hmac.compare_digest(view_digest(entry_view(timestamp_ms, body)), stated_view):
        raise BundleInvalid(
            "entry.fields do not hash to entry.view_digest: the fields shown are not the ones sealed"
        )
    checks = ["fields hash to the sealed view digest"]
    if not entry["payload_included"]:
        if entry["payload"] is not None or entry["writer_schema"] is not None:
            raise BundleInvalid(
                "entry.payload and entry.writer_schema must be null when the payload is not included"
            )
        return entry, checks
    checks.extend(_check_payload(entry, digest, body))
    return entry, checks


def _check_payload(entry: dict[str, Any], digest: bytes, body: bytes) -> list[str]:
    encoded = entry["payload"]
    payload: bytes | None = None
    if encoded is not None:
        if not isinstance(encoded, str):
            raise BundleInvalid("entry.payload must be base64 text or null")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BundleInvalid("entry.payload is not base64") from None
        if base64.b64encode(payload).decode("ascii") != encoded:
            raise BundleInvalid("entry.payload is not canonical base64")
    if entry["value_null"] != (payload is None):
        raise BundleInvalid("entry.value_null disagrees with entry.payload")
    if not hmac.compare_digest(hashlib.sha256(payload or b"").digest(), digest):
        raise BundleInvalid("the payload does not hash to entry.digest")
    schemas: dict[bytes, WriterSchema] = dict(KNOWN_SCHEMAS)
    if entry["writer_schema"] is not None:
        if not isinstance(entry["writer_schema"], str):
            raise BundleInvalid("entry.writer_schema must be text or null")
        try:
            schema = WriterSchema.from_json(entry["writer_schema"])
        except DecodeError as exc:
            raise BundleInvalid(f"entry.writer_schema is not an Avro schema: {exc}") from None
        schemas.setdefault(schema.fingerprint, schema)
    if entry["kind"] == "rejected":
        try:
            fingerprint: bytes | None = read_fingerprint(payload) if payload else None
        except DecodeError:
            fingerprint = None
        expected = rejected_view_body(fingerprint)
        if payload and is_schema_record(payload) and rejected_view_body(payload[2:10]) == body:
            expected = body  # a refused schema record shows its header's fingerprint (CHAIN.md §19)
    elif entry["kind"] == "schema":
        outcome = classify(payload, schemas)
        if outcome.schema is None:
            raise BundleInvalid(
                f"the entry is sealed as schema but its payload is not one: {outcome.reject_reason}"
            )
        expected = outcome.view_body
    else:
        outcome = classify(payload, schemas)
        if outcome.event_id is None:
            raise BundleInvalid(
                f"the entry is sealed as {entry['kind']} but its payload does not "
                f"decode: {outcome.reject_reason}"
            )
        expected = outcome.view_body
    if expected != body:
        shown, decoded = split_view(_DUMMY_TIMESTAMP + body), split_view(_DUMMY_TIMESTAMP + expected)
        names = [
            name
            for (name, _), a, b in zip(FIELD_COLUMNS, (shown or [])[1:], (decoded or [])[1:], strict=False)
            if a != b
        ]
        raise BundleInvalid(
            f"entry.fields.{names[0] if names else 'schema_fingerprint'} is not what the payload says"
        )
    return ["payload hashes to the sealed digest", "fields are what the payload says"]


def check_bundle(data: bytes | str, verifiers: Sequence[VerifierKey]) -> ProofReport:
    """Verify an inclusion or consistency bundle with only checkpoint verifier keys.

    Raises :class:`BundleInvalid` (malformed, edited, or a check failed: the message says
    which), :class:`UnverifiableCheckpoint` (no given key signed a checkpoint: cannot tell).
    """
    bundle = _strict_json(data)
    kind = bundle.get("format")
    try:
        if kind == INCLUSION_FORMAT:
            return _check_inclusion(bundle, verifiers)
        if kind == CONSISTENCY_FORMAT:
            return _check_consistency(bundle, verifiers)
    except UnicodeEncodeError:  # a lone surrogate (an escaped d800 code unit) in some text
        raise BundleInvalid("the bundle holds text that is not valid Unicode") from None
    raise BundleInvalid(f"unknown bundle format (expected {INCLUSION_FORMAT} or {CONSISTENCY_FORMAT})")


def _describe(checkpoint: Checkpoint, signers: list[str]) -> dict[str, Any]:
    return {
        "size": checkpoint.size,
        "root": checkpoint.root_hash.hex(),
        "head_link": checkpoint.head_link.hex(),
        "time": checkpoint.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "signed_by": signers,
    }


def _check_inclusion(bundle: dict[str, Any], verifiers: Sequence[VerifierKey]) -> ProofReport:
    _keys(bundle, {"format", "checkpoint", "entry", "leaf_hash", "inclusion_proof"}, "the bundle")
    checkpoint, signers = _open(bundle["checkpoint"], verifiers, "checkpoint")
    entry, checks = _check_entry(bundle["entry"])
    leaf = entry_leaf(entry)
    stated = bundle["leaf_hash"]
    if not isinstance(stated, str) or stated != base64.b64encode(leaf).decode("ascii"):
        raise BundleInvalid("leaf_hash is not the hash of the entry (CHAIN.md §13)")
    proof_doc = _keys(bundle["inclusion_proof"], {"leaf_index", "tree_size", "hashes"}, "inclusion_proof")
    if _int(proof_doc["leaf_index"], "inclusion_proof.leaf_index", 0, 2**63) != entry["seq"] - 1:
        raise BundleInvalid("inclusion_proof.leaf_index must be entry.seq - 1")
    if _int(proof_doc["tree_size"], "inclusion_proof.tree_size", 0, 2**64) != checkpoint.size:
        raise BundleInvalid("inclusion_proof.tree_size is not the checkpoint's tree size")
    try:
        hashes = proof_from_json(proof_doc["hashes"])
        verify_inclusion(leaf, entry["seq"] - 1, checkpoint.size, hashes, checkpoint.root_hash)
    except (MerkleError, ProofError) as exc:
        raise BundleInvalid(f"inclusion proof: {exc}") from None
    if entry["seq"] == checkpoint.size and entry["link"] != checkpoint.head_link.hex():
        raise BundleInvalid("the entry at the checkpoint's size does not have its head link")
    checks.append("leaf is included under the signed root")
    fields = entry["fields"] or dict.fromkeys(("event_id", "actor", "action", "target", "occurred_at"))
    return ProofReport(
        kind="inclusion",
        summary={
            "origin": checkpoint.origin,
            "seq": entry["seq"],
            "kafka_offset": entry["kafka_offset"],
            "entry_kind": entry["kind"],
            "event_id": fields["event_id"],
            "actor": fields["actor"],
            "action": fields["action"],
            "target": fields["target"],
            "occurred_at": fields["occurred_at"],
            "key_id": entry["key_id"],
            "payload_checked": entry["payload_included"],
            "checkpoint": _describe(checkpoint, signers),
            "checks": ["checkpoint signature", *checks],
        },
    )


def _check_consistency(bundle: dict[str, Any], verifiers: Sequence[VerifierKey]) -> ProofReport:
    _keys(bundle, {"format", "old", "new", "proof"}, "the bundle")
    old, old_signers = _open(bundle["old"], verifiers, "old")
    new, new_signers = _open(bundle["new"], verifiers, "new")
    if old.origin != new.origin:
        raise BundleInvalid(f"the checkpoints are of two ledgers ({old.origin!r}, {new.origin!r})")
    if old.size == new.size and old.head_link != new.head_link:
        raise BundleInvalid(f"two checkpoints of size {old.size} name different head links")
    try:
        proof = proof_from_json(bundle["proof"])
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except (MerkleError, ProofError) as exc:
        raise BundleInvalid(f"consistency proof: {exc}") from None
    return ProofReport(
        kind="consistency",
        summary={
            "origin": old.origin,
            "old": _describe(old, old_signers),
            "new": _describe(new, new_signers),
            "checks": ["checkpoint signatures", "same ledger", "consistency proof"],
        },
    )
