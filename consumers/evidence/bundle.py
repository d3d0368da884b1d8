"""The evidence bundle formats: an inclusion bundle (one entry, its RFC 9162 inclusion proof
and the signed checkpoint) and a consistency bundle (two checkpoints and the proof that the
ledger only grew), built from their parts; one canonical JSON spelling (:func:`render`).

An entry shows its link fields, its visible columns (decoded from its view, and encoded back
exactly by :func:`fields_view_body`) and optionally its payload. ``check.py`` checks a
bundle offline; ``build.py`` builds one from the database. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from baldur_audit.schemas.chain import EntryKind, LinkInput
from baldur_audit.schemas.errors import AuditError, ValueMismatch
from baldur_audit.schemas.merkle import entry_leaf_hash, proof_to_json
from baldur_audit.schemas.view import (
    NULL,
    PG_EPOCH_US,
    VIEW_COLUMNS,
    bytes_field,
    split_view,
    text_field,
    view_digest,
)

INCLUSION_FORMAT = "baldur-audit/inclusion-bundle/v1"
CONSISTENCY_FORMAT = "baldur-audit/consistency-bundle/v1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
FIELD_COLUMNS = VIEW_COLUMNS[1:]  # the view after kafka_timestamp (which timestamp_ms gives)
ENTRY_KEYS = frozenset(
    {
        "seq",
        "topic",
        "partition",
        "kafka_offset",
        "kafka_timestamp_ms",
        "kafka_time",
        "kind",
        "duplicate_of",
        "value_null",
        "digest",
        "view_digest",
        "key_id",
        "link",
        "fields",
        "payload",
        "payload_included",
        "writer_schema",
    }
)
_ISO_US = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z")
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I64 = struct.Struct(">q")
_LEN = struct.Struct(">i")


class BundleInvalid(AuditError):
    """The bundle is not valid evidence: malformed, edited, or it does not verify."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


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
        year, month, day, hour, minute, second, micro = (int(g) for g in match.groups())
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
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
        raise BundleInvalid(
            "entry.fields must hold exactly the visible columns "
            + ", ".join(name for name, _ in FIELD_COLUMNS)
        )
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


def ms_iso(timestamp_ms: int) -> str:
    moment = _UNIX_EPOCH + timedelta(milliseconds=timestamp_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def note_key_ids(note: str) -> list[str]:
    """``name+keyhash`` of every signature line of a signed note, in order."""
    labels = []
    block = note[note.rfind("\n\n") + 2 :] if "\n\n" in note else ""
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


def fingerprint_of(view: bytes | None) -> bytes | None:
    values = split_view(view) if view is not None else None
    return None if values is None or values[-1] is None else values[-1]


def entry_document(
    *,
    seq: int,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    kind: str,
    duplicate_of: int,
    value_null: bool,
    digest: bytes,
    view: bytes | None,
    key_id: str,
    link: bytes,
    payload: bytes | None,
    include_payload: bool,
    writer_schema: str | None = None,
    sealed_view_digest: bytes | None = None,
) -> dict[str, Any]:
    """An entry as a bundle shows it: the link fields, the visible columns decoded from its
    ``view`` (the whole view, kafka_timestamp first) and, if included, the payload. A pruned
    entry has no view (``fields`` null): give its stored ``sealed_view_digest`` instead."""
    if view is None and sealed_view_digest is None:
        raise ValueError("an entry without its view needs its sealed view digest")
    return {
        "seq": seq,
        "topic": topic,
        "partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp_ms": timestamp_ms,
        "kafka_time": ms_iso(timestamp_ms),
        "kind": kind,
        "duplicate_of": duplicate_of,
        "value_null": value_null,
        "digest": digest.hex(),
        "view_digest": (view_digest(view) if view is not None else sealed_view_digest or b"").hex(),
        "key_id": key_id,
        "link": link.hex(),
        "fields": view_fields(view, seq) if view is not None else None,
        "payload": base64.b64encode(payload).decode("ascii")
        if include_payload and payload is not None
        else None,
        "payload_included": include_payload,
        "writer_schema": writer_schema if include_payload else None,
    }


def inclusion_bundle(
    entry: Mapping[str, Any], note: str, proof: Sequence[bytes], tree_size: int
) -> dict[str, Any]:
    """An inclusion bundle from its parts (the proof of leaf ``entry.seq - 1``)."""
    return {
        "format": INCLUSION_FORMAT,
        "checkpoint": _checkpoint_doc(note),
        "entry": dict(entry),
        "leaf_hash": base64.b64encode(entry_leaf(entry)).decode("ascii"),
        "inclusion_proof": {
            "leaf_index": entry["seq"] - 1,
            "tree_size": tree_size,
            "hashes": proof_to_json(proof),
        },
    }


def consistency_bundle(old_note: str, new_note: str, proof: Sequence[bytes]) -> dict[str, Any]:
    """A consistency bundle from its parts."""
    return {
        "format": CONSISTENCY_FORMAT,
        "old": _checkpoint_doc(old_note),
        "new": _checkpoint_doc(new_note),
        "proof": proof_to_json(proof),
    }


def entry_leaf(entry: Mapping[str, Any]) -> bytes:
    """The leaf hash (CHAIN.md §13) of an entry document (its values already checked)."""
    link_input = LinkInput(
        seq=entry["seq"],
        topic=entry["topic"],
        partition=entry["partition"],
        offset=entry["kafka_offset"],
        timestamp_ms=entry["kafka_timestamp_ms"],
        kind=EntryKind.from_label(entry["kind"]),
        duplicate_of=entry["duplicate_of"],
        value_null=entry["value_null"],
        digest=bytes.fromhex(entry["digest"]),
        view_digest=bytes.fromhex(entry["view_digest"]),
    )
    return entry_leaf_hash(link_input, key_id=entry["key_id"], link=bytes.fromhex(entry["link"]))
