"""The export format (docs/EXPORT-FORMAT.md): the entry columns, their NDJSON and CSV spellings,
and the manifest's names and signed text. Shared by the writer (``export.py``) and the offline
checker (``export_check.py``). Pure: no I/O; imports the core and ``bundle.py`` only.

An export is a folder: one data file of entries (``entries.ndjson`` or ``entries.csv``) and
``manifest.json``, which names the signed checkpoint the export was cut against, the seq range,
the SHA-256 of the data file, each entry's Merkle leaf hash and the range proof of those leaves;
the manifest is signed with the checkpoint key as a C2SP signed note over its SHA-256.

Every row holds what its leaf hash needs (CHAIN.md §13, derived exactly as an inclusion bundle
derives it: :func:`bundle.entry_leaf`) and the visible columns, which hash to the sealed view
digest (:func:`bundle.fields_view_body`); the topic and partition are in the manifest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from baldur_audit.schemas.checkpoint import CheckpointSigner, sign_note
from baldur_audit.schemas.merkle import proof_to_json
from baldur_audit.schemas.view import VIEW_COLUMNS

from .bundle import ms_iso, note_key_ids, render, view_fields

EXPORT_FORMAT = "baldur-audit/export/v1"
#: The first line of the signed note over the manifest (domain separation from checkpoints).
SIGNATURE_TAG = "baldur-audit/export-manifest/v1"
MANIFEST_NAME = "manifest.json"
FORMATS = ("ndjson", "csv")
DATA_NAMES = {"ndjson": "entries.ndjson", "csv": "entries.csv"}
KINDS = ("event", "duplicate", "rejected")

#: The visible columns of an entry's view after kafka_timestamp, as bundles show them.
FIELD_NAMES = tuple(name for name, _ in VIEW_COLUMNS[1:])
#: The columns of an exported entry, in file order (NDJSON key order, CSV column order).
COLUMNS = (
    "seq",
    "kind",
    "duplicate_of",
    "kafka_offset",
    "kafka_timestamp_ms",
    "kafka_timestamp",
    *FIELD_NAMES,
    "pruned",
    "value_null",
    "digest",
    "view_digest",
    "key_id",
    "link",
    "payload",
)
MANIFEST_KEYS = frozenset(
    {
        "format",
        "origin",
        "topic",
        "partition",
        "checkpoint",
        "first_seq",
        "last_seq",
        "count",
        "kinds",
        "pruned",
        "selection",
        "files",
        "leaf_hashes",
        "range_proof",
        "created_at",
        "signed_by",
        "signature",
    }
)
FILE_KEYS = frozenset({"name", "format", "bytes", "sha256", "entries"})
CSV_HEADER = (",".join(COLUMNS) + "\r\n").encode("ascii")

_NDJSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def entry_row(
    *,
    seq: int,
    kind: str,
    duplicate_of: int,
    offset: int,
    timestamp_ms: int,
    view: bytes | None,
    sealed_view_digest: bytes,
    value_null: bool,
    digest: bytes,
    key_id: str,
    link: bytes,
    payload: bytes | None,
) -> dict[str, Any]:
    """An exported entry: its link fields and, unless it was pruned (``view`` None), the
    visible columns decoded from its ``view`` exactly as an inclusion bundle shows them.

    ``sealed_view_digest`` is the view digest the leaf covers: SHA-256 of ``view`` as the
    database computes it from the stored columns, or the stored digest of a pruned entry.
    ``payload`` is given for rejected entries only (their raw record bytes). Raises
    ValueMismatch if ``view`` is not well framed.
    """
    fields = view_fields(view, seq) if view is not None else dict.fromkeys(FIELD_NAMES)
    return {
        "seq": seq,
        "kind": kind,
        "duplicate_of": duplicate_of,
        "kafka_offset": offset,
        "kafka_timestamp_ms": timestamp_ms,
        "kafka_timestamp": ms_iso(timestamp_ms),
        **fields,
        "pruned": view is None,
        "value_null": value_null,
        "digest": digest.hex(),
        "view_digest": sealed_view_digest.hex(),
        "key_id": key_id,
        "link": link.hex(),
        "payload": base64.b64encode(payload).decode("ascii") if payload is not None else None,
    }


def leaf_document(row: Mapping[str, Any], *, topic: str, partition: int) -> dict[str, Any]:
    """The row as :func:`bundle.entry_leaf` reads an entry (the manifest gives topic and partition)."""
    return {**row, "topic": topic, "partition": partition}


# --- the two spellings ------------------------------------------------------------------------


def ndjson_line(row: Mapping[str, Any]) -> bytes:
    """One entry as one line of JSON: keys in :data:`COLUMNS` order, no spaces, UTF-8."""
    return (_NDJSON.encode(row) + "\n").encode("utf-8")


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


def csv_line(row: Mapping[str, Any]) -> bytes:
    """One entry as one CSV record (RFC 4180, CRLF): text always quoted, NULL an empty
    unquoted cell (so ``""`` is the empty text, as PostgreSQL's CSV has it), integers and
    ``true``/``false`` unquoted. A quoted cell may span lines."""
    return (",".join(map(_csv_cell, row.values())) + "\r\n").encode("utf-8")


ENCODERS = {"ndjson": ndjson_line, "csv": csv_line}

_CSV_CELLS = re.compile(r'(")([^"]*(?:""[^"]*)*)",|()([^,"]*),')
_CSV_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def csv_cells(record: str) -> list[object] | None:
    """The typed cells of one CSV record (without its CRLF): quoted → text, empty → None,
    ``true``/``false`` → bool, a decimal → int; None if the record is not spelled that way.
    The caller compares :func:`csv_line` of the result with the record to refuse any other
    spelling."""
    cells: list[object] = []
    for quote, quoted, _, plain in _CSV_CELLS.findall(record + ","):
        if quote:
            cells.append(quoted.replace('""', '"'))
        elif plain == "":
            cells.append(None)
        elif plain in ("true", "false"):
            cells.append(plain == "true")
        elif _CSV_INT.fullmatch(plain):
            cells.append(int(plain))
        else:
            return None
    return cells


# --- the manifest's signature ---------------------------------------------------------------------


def signed_bytes(manifest: Mapping[str, Any]) -> bytes:
    """What the signature covers: the canonical JSON (``bundle.render``) of the manifest
    without its ``signature`` key."""
    return render({key: value for key, value in manifest.items() if key != "signature"}).encode("ascii")


def signature_text(origin: str, manifest: Mapping[str, Any]) -> str:
    """The text of the signed note over a manifest: the tag, the origin and the SHA-256 of
    :func:`signed_bytes`, one per line."""
    return f"{SIGNATURE_TAG}\n{origin}\nsha256 {hashlib.sha256(signed_bytes(manifest)).hexdigest()}\n"


def manifest_document(
    *,
    note: str,
    origin: str,
    topic: str,
    partition: int,
    first_seq: int,
    files: list[dict[str, Any]],
    leaves: Sequence[bytes],
    proof: Sequence[bytes],
    kinds: Mapping[str, int],
    pruned: int,
    since: str | None,
    until: str | None,
    created_at: str,
) -> dict[str, Any]:
    """A manifest from its parts, without its signature (:func:`sign_manifest` adds it).
    ``files`` are ``{"name", "format", "bytes", "sha256", "entries"}`` in entry order."""
    return {
        "format": EXPORT_FORMAT,
        "origin": origin,
        "topic": topic,
        "partition": partition,
        "checkpoint": {"note": note, "key_ids": note_key_ids(note)},
        "first_seq": first_seq,
        "last_seq": first_seq + len(leaves) - 1,
        "count": len(leaves),
        "kinds": {kind: kinds.get(kind, 0) for kind in KINDS},
        "pruned": pruned,
        "selection": {"since": since, "until": until},
        "files": files,
        "leaf_hashes": proof_to_json(leaves),
        "range_proof": proof_to_json(proof),
        "created_at": created_at,
    }


def sign_manifest(document: dict[str, Any], signers: Sequence[CheckpointSigner]) -> str:
    """Sign the manifest with every signer (a C2SP signed note over :func:`signature_text`;
    ``signed_by`` names the signers' key ids first, so it is signed too) and return its
    canonical text, the bytes of ``manifest.json``."""
    document["signed_by"] = [signer.verifier().label for signer in signers]
    document["signature"] = sign_note(signature_text(document["origin"], document), signers)
    return render(document)
