"""Offline evidence: inclusion bundles (one entry, its RFC 9162 inclusion proof and the signed
checkpoint) and consistency bundles (two checkpoints and the proof that the ledger only grew).

Building reads O(log n) stored tree nodes in one query (``checkpoints.PostgresMerkleNodes``)
and never rehashes the ledger. Checking (:func:`check_bundle`) is pure: no database, no
Kafka, no HMAC key — only the checkpoint verifier keys. It checks the note's signature, the
bundle's own spelling (one canonical JSON text, so no byte of it can change unnoticed), the
entry's visible fields against its view digest and, when the payload is included, against
the payload and its digest, then the leaf against the signed root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from baldur_audit.schemas.chain import EntryKind, LinkInput, classify
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    UnverifiableCheckpoint,
    VerifierKey,
    open_checkpoint,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, WriterSchema, read_fingerprint
from baldur_audit.schemas.errors import AuditError, DecodeError, SequenceGap, ValueMismatch
from baldur_audit.schemas.merkle import (
    MerkleError,
    ProofError,
    consistency_proof,
    entry_leaf_hash,
    inclusion_proof,
    proof_from_json,
    proof_to_json,
    verify_consistency,
    verify_inclusion,
)
from baldur_audit.schemas.view import (
    NULL,
    PG_EPOCH_US,
    VIEW_COLUMNS,
    bytes_field,
    entry_view,
    rejected_view_body,
    text_field,
    view_digest,
)

from .checkpoints import PostgresMerkleNodes, StoredCheckpoint, read_tree, stored_checkpoint
from .store import PostgresLedgerStore
from .verify import split_view

INCLUSION_FORMAT = "baldur-audit/inclusion-bundle/v1"
CONSISTENCY_FORMAT = "baldur-audit/consistency-bundle/v1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
FIELD_COLUMNS = VIEW_COLUMNS[1:]  # the view after kafka_timestamp (which timestamp_ms gives)
ENTRY_KEYS = frozenset({
    "seq", "topic", "partition", "kafka_offset", "kafka_timestamp_ms", "kafka_time", "kind",
    "duplicate_of", "value_null", "digest", "view_digest", "key_id", "link", "fields",
    "payload", "payload_included", "writer_schema"})
_HEX32 = re.compile(r"[0-9a-f]{64}")
_ISO_US = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z")
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I64 = struct.Struct(">q")
_LEN = struct.Struct(">i")


class BundleInvalid(AuditError):
    """The bundle is not valid evidence: malformed, edited, or it does not verify."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class ProofUnavailable(AuditError):
    """No proof can be built (yet): no checkpoint covers the entry, or the tree is behind."""


def render(bundle: Mapping[str, Any]) -> str:
    """A bundle's one spelling: sorted keys, two-space indent, ASCII, final newline."""
    return json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


# --- the visible fields -----------------------------------------------------------------------

def _iso_us(unix_us: int) -> str | int:
    """µs since the Unix epoch as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the integer itself when
    the time is outside what ISO 8601 years 1-9999 can say)."""
    try:
        moment = _UNIX_EPOCH + timedelta(microseconds=unix_us)
    except OverflowError:
        return unix_us
    if not 1 <= moment.year <= 9999:
        return unix_us
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def _parse_us(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if isinstance(_iso_us(value), str):
            raise BundleInvalid(f"{what} must be written as a time")
        return value
    match = _ISO_US.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BundleInvalid(f"{what} is not a time written YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        moment = datetime(*(int(g) for g in match.groups()[:6]), int(match.group(7)), tzinfo=UTC)
    except ValueError:
        raise BundleInvalid(f"{what} is not a valid time") from None
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


def view_fields(view: bytes, seq: int = 1) -> dict[str, Any]:
    """The visible columns of an entry's view (after kafka_timestamp) as JSON values;
    raises :class:`ValueMismatch` if the view is not well framed."""
    values = split_view(view)
    if values is None:
        raise ValueMismatch(seq, "the stored view is not well framed")
    fields: dict[str, Any] = {}
    for (name, kind), value in zip(FIELD_COLUMNS, values[1:], strict=True):
        if value is None:
            fields[name] = None
        elif kind == "uuid":
            fields[name] = str(uuid.UUID(bytes=value))
        elif kind == "timestamptz":
            fields[name] = _iso_us(_I64.unpack(value)[0] + PG_EPOCH_US)
        elif kind == "bytea":
            fields[name] = value.hex()
        else:
            fields[name] = value.decode("utf-8")
    return fields


def fields_view_body(fields: object) -> bytes:
    """The view bytes (after kafka_timestamp) the fields spell; raises BundleInvalid."""
    if not isinstance(fields, dict) or set(fields) != {name for name, _ in FIELD_COLUMNS}:
        raise BundleInvalid("entry.fields must hold exactly the visible columns "
                            + ", ".join(name for name, _ in FIELD_COLUMNS))
    parts = []
    for name, kind in FIELD_COLUMNS:
        value = fields[name]
        if value is None:
            parts.append(NULL)
        elif kind == "uuid":
            if not isinstance(value, str):
                raise BundleInvalid(f"entry.fields.{name} must be a UUID")
            try:
                parsed = uuid.UUID(value)
            except ValueError:
                raise BundleInvalid(f"entry.fields.{name} is not a UUID") from None
            if str(parsed) != value:
                raise BundleInvalid(f"entry.fields.{name} is not a canonical UUID")
            parts.append(bytes_field(parsed.bytes))
        elif kind == "timestamptz":
            parts.append(_LEN.pack(8) + _I64.pack(_parse_us(value, f"entry.fields.{name}") - PG_EPOCH_US))
        elif kind == "bytea":
            if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-f]{2})*", value):
                raise BundleInvalid(f"entry.fields.{name} must be lowercase hex")
            parts.append(bytes_field(bytes.fromhex(value)))
        else:
            if not isinstance(value, str):
                raise BundleInvalid(f"entry.fields.{name} must be text or null")
            parts.append(text_field(value))
    return b"".join(parts)


# --- building ---------------------------------------------------------------------------------------

def _ms_iso(timestamp_ms: int) -> str:
    moment = _UNIX_EPOCH + timedelta(milliseconds=timestamp_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def note_key_ids(note: str) -> list[str]:
    """``name+keyhash`` of every signature line of a signed note, in order."""
    labels = []
    block = note[note.rfind("\n\n") + 2:] if "\n\n" in note else ""
    for line in block.split("\n"):
        name, _, encoded = line[2:].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if line.startswith("\u2014 ") and len(raw) >= 4:
            labels.append(f"{name}+{raw[:4].hex()}")
    return labels


def _checkpoint_doc(note: str) -> dict[str, Any]:
    return {"note": note, "key_ids": note_key_ids(note)}


def build_inclusion_bundle(conn: psycopg.Connection[Any], seq: int, *, size: int | None = None,
                           include_payload: bool = True) -> dict[str, Any]:
    """The evidence bundle of entry ``seq`` under the newest stored checkpoint covering it
    (or the one of ``size`` leaves): O(log n) node reads.

    Raises :class:`ProofUnavailable` (no such checkpoint, tree behind), :class:`SequenceGap`
    (a covered entry is missing), StoreUnavailable.
    """
    ledger = PostgresLedgerStore(conn, "")
    meta = ledger.read_meta()
    stored: StoredCheckpoint | None = stored_checkpoint(conn, size=size) if size is not None \
        else stored_checkpoint(conn, min_size=seq)
    if stored is None:
        newest = stored_checkpoint(conn)
        raise ProofUnavailable(
            f"no checkpoint of size {size} is stored" if size is not None else
            f"no checkpoint covers seq {seq} yet (the newest covers "
            f"{newest.tree_size if newest else 0} entries): run `baldur-audit checkpoint`")
    if not 1 <= seq <= stored.tree_size:
        raise ProofUnavailable(f"seq {seq} is not in the checkpoint of size {stored.tree_size}")
    tree = read_tree(conn)
    if tree is None or tree.size < stored.tree_size:
        raise ProofUnavailable(f"the stored merkle tree does not reach size {stored.tree_size}")
    with closing(ledger.iter_sealed_rows(conn, from_seq=seq, batch=1)) as rows:  # type: ignore[type-var]
        row = next(iter(rows), None)
    stored_view = ledger.entry_view(conn, seq)
    if row is None or row[0] != seq or stored_view is None:
        raise SequenceGap(seq, None, f"entry {seq} is missing although the checkpoint of size "
                                     f"{stored.tree_size} covers it")
    view, payload, timestamp_ms = stored_view
    fields = view_fields(view, seq)
    fingerprint = bytes.fromhex(fields["schema_fingerprint"]) if fields["schema_fingerprint"] else None
    writer_schema = None
    if include_payload and fingerprint is not None and fingerprint not in KNOWN_SCHEMAS:
        known = ledger.writer_schemas()
        writer_schema = known[fingerprint].schema_json if fingerprint in known else None
    entry = entry_document(
        seq=seq, topic=meta.topic, partition=meta.partition, offset=row[1],
        timestamp_ms=timestamp_ms, kind=row[2], duplicate_of=row[3], value_null=bool(row[4]),
        digest=bytes(row[6]), view=view, key_id=row[7], link=bytes(row[8]), payload=payload,
        include_payload=include_payload, writer_schema=writer_schema)
    proof = inclusion_proof(PostgresMerkleNodes(conn), seq - 1, stored.tree_size)
    return inclusion_bundle(entry, stored.note, proof, stored.tree_size)


def entry_document(*, seq: int, topic: str, partition: int, offset: int, timestamp_ms: int,
                   kind: str, duplicate_of: int, value_null: bool, digest: bytes, view: bytes,
                   key_id: str, link: bytes, payload: bytes | None, include_payload: bool,
                   writer_schema: str | None = None) -> dict[str, Any]:
    """An entry as a bundle shows it: the link fields, the visible columns decoded from its
    ``view`` (the whole view, kafka_timestamp first) and, if included, the payload."""
    return {
        "seq": seq, "topic": topic, "partition": partition, "kafka_offset": offset,
        "kafka_timestamp_ms": timestamp_ms, "kafka_time": _ms_iso(timestamp_ms),
        "kind": kind, "duplicate_of": duplicate_of, "value_null": value_null,
        "digest": digest.hex(), "view_digest": view_digest(view).hex(), "key_id": key_id,
        "link": link.hex(), "fields": view_fields(view, seq),
        "payload": base64.b64encode(payload).decode("ascii")
        if include_payload and payload is not None else None,
        "payload_included": include_payload,
        "writer_schema": writer_schema if include_payload else None,
    }


def inclusion_bundle(entry: Mapping[str, Any], note: str, proof: Sequence[bytes],
                     tree_size: int) -> dict[str, Any]:
    """An inclusion bundle from its parts (the proof of leaf ``entry.seq - 1``)."""
    return {"format": INCLUSION_FORMAT, "checkpoint": _checkpoint_doc(note), "entry": dict(entry),
            "leaf_hash": base64.b64encode(_entry_leaf(entry)).decode("ascii"),
            "inclusion_proof": {"leaf_index": entry["seq"] - 1, "tree_size": tree_size,
                                "hashes": proof_to_json(proof)}}


def build_consistency_bundle(conn: psycopg.Connection[Any], old: tuple[Checkpoint, str],
                             new: tuple[Checkpoint, str]) -> dict[str, Any]:
    """The consistency bundle between two checkpoints (O(log n) node reads).

    Raises :class:`ProofUnavailable` if the old one is larger or the tree is behind.
    """
    (old_cp, old_note), (new_cp, new_note) = old, new
    if old_cp.size > new_cp.size:
        raise ProofUnavailable(f"the old checkpoint (size {old_cp.size}) is larger than the new "
                               f"one (size {new_cp.size})")
    tree = read_tree(conn)
    if new_cp.size and (tree is None or tree.size < new_cp.size):
        raise ProofUnavailable(f"the stored merkle tree does not reach size {new_cp.size}")
    proof = consistency_proof(PostgresMerkleNodes(conn), old_cp.size, new_cp.size)
    return consistency_bundle(old_note, new_note, proof)


def consistency_bundle(old_note: str, new_note: str, proof: Sequence[bytes]) -> dict[str, Any]:
    """A consistency bundle from its parts."""
    return {"format": CONSISTENCY_FORMAT, "old": _checkpoint_doc(old_note),
            "new": _checkpoint_doc(new_note), "proof": proof_to_json(proof)}


# --- checking ----------------------------------------------------------------------------------------

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
        raise BundleInvalid("the bundle is not in its canonical form: it was edited or "
                            "reformatted after `baldur-audit prove` wrote it")
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
    if not isinstance(note, str) or not isinstance(key_ids, list) or \
            not all(isinstance(k, str) for k in key_ids):
        raise BundleInvalid(f"{where}.note must be text and {where}.key_ids a list of key ids")
    unverifiable: UnverifiableCheckpoint | None = None
    try:
        checkpoint, signers = open_checkpoint(note, verifiers)
    except UnverifiableCheckpoint as exc:
        unverifiable = exc
    except CheckpointError as exc:
        raise BundleInvalid(f"{where}: {exc}") from None
    if key_ids != note_key_ids(note):
        raise BundleInvalid(f"{where}.key_ids do not name the note's signatures "
                            f"({', '.join(note_key_ids(note)) or 'none'})")
    if unverifiable is not None:
        raise unverifiable
    labels = {v.name: v.label for v in verifiers}
    return checkpoint, [labels.get(name, name) for name in signers]


def _entry_leaf(entry: Mapping[str, Any]) -> bytes:
    link_input = LinkInput(
        seq=entry["seq"], topic=entry["topic"], partition=entry["partition"],
        offset=entry["kafka_offset"], timestamp_ms=entry["kafka_timestamp_ms"],
        kind=EntryKind.from_label(entry["kind"]), duplicate_of=entry["duplicate_of"],
        value_null=entry["value_null"], digest=bytes.fromhex(entry["digest"]),
        view_digest=bytes.fromhex(entry["view_digest"]))
    return entry_leaf_hash(link_input, key_id=entry["key_id"], link=bytes.fromhex(entry["link"]))


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
        raise BundleInvalid("entry.kind must be event, rejected or duplicate")
    duplicate_of = _int(entry["duplicate_of"], "entry.duplicate_of", 0, seq - 1)
    if (entry["kind"] == "duplicate") != (duplicate_of > 0):
        raise BundleInvalid("entry.duplicate_of must name an earlier entry for a duplicate, "
                            "and be 0 otherwise")
    if not isinstance(entry["value_null"], bool) or not isinstance(entry["payload_included"], bool):
        raise BundleInvalid("entry.value_null and entry.payload_included must be true or false")
    digest = _hex32(entry["digest"], "entry.digest")
    stated_view = _hex32(entry["view_digest"], "entry.view_digest")
    _hex32(entry["link"], "entry.link")
    try:
        shown_time = _ms_iso(timestamp_ms)
    except OverflowError:
        shown_time = None
    if entry["kafka_time"] != shown_time:
        raise BundleInvalid("entry.kafka_time is not entry.kafka_timestamp_ms")
    body = fields_view_body(entry["fields"])
    if not hmac.compare_digest(view_digest(entry_view(timestamp_ms, body)), stated_view):
        raise BundleInvalid("entry.fields do not hash to entry.view_digest: the fields shown are "
                            "not the ones sealed")
    checks = ["fields hash to the sealed view digest"]
    if not entry["payload_included"]:
        if entry["payload"] is not None or entry["writer_schema"] is not None:
            raise BundleInvalid("entry.payload and entry.writer_schema must be null when the "
                                "payload is not included")
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
    else:
        outcome = classify(payload, schemas)
        if outcome.event_id is None:
            raise BundleInvalid(f"the entry is sealed as {entry['kind']} but its payload does not "
                                f"decode: {outcome.reject_reason}")
        expected = outcome.view_body
    if expected != body:
        shown, decoded = split_view(_LEN.pack(8) + bytes(8) + body), \
            split_view(_LEN.pack(8) + bytes(8) + expected)
        names = [name for (name, _), a, b in zip(FIELD_COLUMNS, (shown or [])[1:], (decoded or [])[1:],
                                                  strict=False) if a != b]
        raise BundleInvalid(f"entry.fields.{names[0] if names else 'schema_fingerprint'} is not "
                            "what the payload says")
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
    return {"size": checkpoint.size, "root": checkpoint.root_hash.hex(),
            "head_link": checkpoint.head_link.hex(),
            "time": checkpoint.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "signed_by": signers}


def _check_inclusion(bundle: dict[str, Any], verifiers: Sequence[VerifierKey]) -> ProofReport:
    _keys(bundle, {"format", "checkpoint", "entry", "leaf_hash", "inclusion_proof"}, "the bundle")
    checkpoint, signers = _open(bundle["checkpoint"], verifiers, "checkpoint")
    entry, checks = _check_entry(bundle["entry"])
    leaf = _entry_leaf(entry)
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
    fields = entry["fields"]
    return ProofReport(kind="inclusion", summary={
        "origin": checkpoint.origin, "seq": entry["seq"], "kafka_offset": entry["kafka_offset"],
        "entry_kind": entry["kind"], "event_id": fields["event_id"], "actor": fields["actor"],
        "action": fields["action"], "target": fields["target"], "occurred_at": fields["occurred_at"],
        "key_id": entry["key_id"], "payload_checked": entry["payload_included"],
        "checkpoint": _describe(checkpoint, signers), "checks": ["checkpoint signature", *checks]})


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
    return ProofReport(kind="consistency", summary={
        "origin": old.origin, "old": _describe(old, old_signers), "new": _describe(new, new_signers),
        "checks": ["checkpoint signatures", "same ledger", "consistency proof"]})

