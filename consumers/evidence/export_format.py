"""The export format (docs/EXPORT-FORMAT.md): the entry columns, their NDJSON and CSV spellings
written and read back strictly, what makes one exported entry valid (:func:`check_row`), and the
manifest and its signed text. Shared by the writer (``export.py``) and the offline checker
(``export_check.py``). Pure (the readers read the file objects they are given); imports the
core and ``bundle.py`` only.

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
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from baldur_audit.schemas.checkpoint import CheckpointSigner, sign_note
from baldur_audit.schemas.codec import is_schema_record, read_fingerprint
from baldur_audit.schemas.errors import DecodeError
from baldur_audit.schemas.merkle import proof_to_json
from baldur_audit.schemas.view import VIEW_COLUMNS, entry_view, rejected_view_body, view_digest

from .bundle import BundleInvalid, entry_leaf, fields_view_body, ms_iso, note_key_ids, render, view_fields

EXPORT_FORMAT = "baldur-audit/export/v1"
#: The first line of the signed note over the manifest (domain separation from checkpoints).
SIGNATURE_TAG = "baldur-audit/export-manifest/v1"
MANIFEST_NAME = "manifest.json"
FORMATS = ("ndjson", "csv")
DATA_NAMES = {"ndjson": "entries.ndjson", "csv": "entries.csv"}
KINDS = ("event", "duplicate", "rejected", "schema")
#: Kinds whose entries show their raw record bytes: they have no columns of their own to show.
PAYLOAD_KINDS = ("rejected", "schema")

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
_HEX32 = re.compile(r"[0-9a-f]{64}")

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
    ``payload`` is given for rejected and schema entries only (their raw record bytes). Raises
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
    if type(value) is str:  # the common case first
        return '"' + value.replace('"', '""') + '"'
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


# --- reading the spellings back ----------------------------------------------------------------


class FormatError(ValueError):
    """Text that is not what the export format says."""


def strict_json(text: str) -> Any:
    """JSON without repeated keys or NaN/Infinity; raises :class:`FormatError`."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise FormatError(f"it repeats the key {key!r}")
            result[key] = value
        return result

    def constant(token: str) -> Any:
        raise FormatError(f"it holds {token}, which is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"it is not JSON ({str(exc).split(':')[0]})") from None


class Digest:
    """SHA-256 and size of what was read."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def ndjson_rows(handle: BinaryIO, digest: Digest) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Read an NDJSON data file: (line number, row or what is wrong with the line) per line,
    each row with exactly :data:`COLUMNS` and spelled as :func:`ndjson_line` spells it; every
    byte read goes to ``digest``."""
    for number, line in enumerate(handle, start=1):
        digest.update(line)
        if not line.endswith(b"\n"):
            yield number, "the last line does not end with a newline"
            continue
        try:
            parsed = strict_json(line.decode("utf-8"))
        except (UnicodeDecodeError, FormatError) as exc:
            yield number, f"not a JSON line: {exc}" if isinstance(exc, FormatError) else "not UTF-8"
            continue
        if not isinstance(parsed, dict) or list(parsed) != list(COLUMNS):
            yield number, "the line must hold exactly the export's columns, in order"
            continue
        if ndjson_line(parsed) != line:
            yield number, "the line is not in its canonical form (edited or reformatted)"
            continue
        yield number, parsed


def csv_rows(handle: BinaryIO, digest: Digest) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """As :func:`ndjson_rows` for CSV: the header, then one record per entry (a quoted cell
    may hold line breaks, so a record is the lines up to balanced quotes)."""
    header = handle.readline()
    digest.update(header)
    if header != CSV_HEADER:
        yield 1, "the first line is not the export's CSV header"
        return
    number, start, pending = 1, 2, b""
    for line in handle:
        digest.update(line)
        number += 1
        pending += line
        if pending.count(b'"') % 2 and line.endswith(b"\n"):
            continue  # inside a quoted cell
        record, pending, first_line = pending, b"", start
        start = number + 1
        if not record.endswith(b"\r\n"):
            yield first_line, "the record does not end with CRLF"
            continue
        try:
            cells = csv_cells(record[:-2].decode("utf-8"))
        except UnicodeDecodeError:
            yield first_line, "not UTF-8"
            continue
        if cells is None or len(cells) != len(COLUMNS):
            yield first_line, f"the record must hold the export's {len(COLUMNS)} cells"
            continue
        row = dict(zip(COLUMNS, cells, strict=True))
        if csv_line(row) != record:
            yield first_line, "the record is not in its canonical form (edited or reformatted)"
            continue
        yield first_line, row
    if pending:
        yield start, "the file ends inside a quoted cell"


# --- checking an entry ------------------------------------------------------------------------


class RowInvalid(ValueError):
    """An exported entry that fails a check: which (``check``) and what was found."""

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(detail)


def _row_int(row: dict[str, Any], name: str, low: int, high: int) -> int:
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RowInvalid("entry", f"{name} must be an integer in [{low}, {high}]")
    return value


def _row_hex(row: dict[str, Any], name: str) -> bytes:
    value = row[name]
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise RowInvalid("entry", f"{name} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


def check_row(row: dict[str, Any], *, topic: str, partition: int) -> bytes:
    """Check one exported entry on its own and return its leaf hash: the values' types and
    ranges, its visible columns against its sealed view digest, a rejected entry's payload
    against its digest and columns. Raises :class:`RowInvalid`."""
    seq = _row_int(row, "seq", 1, 2**63 - 1)
    kind = row["kind"]
    if kind not in KINDS:
        raise RowInvalid("entry", "kind must be event, duplicate, rejected or schema")
    duplicate_of = _row_int(row, "duplicate_of", 0, seq - 1)
    if (kind == "duplicate") != (duplicate_of > 0):
        raise RowInvalid(
            "entry", "duplicate_of must name an earlier entry for a duplicate, and be 0 otherwise"
        )
    _row_int(row, "kafka_offset", 0, 2**63 - 1)
    timestamp_ms = _row_int(row, "kafka_timestamp_ms", -(2**53), 2**53)
    try:
        shown = ms_iso(timestamp_ms)
    except OverflowError:
        shown = None
    if row["kafka_timestamp"] != shown:
        raise RowInvalid("entry", "kafka_timestamp is not kafka_timestamp_ms")
    if not isinstance(row["pruned"], bool) or not isinstance(row["value_null"], bool):
        raise RowInvalid("entry", "pruned and value_null must be true or false")
    digest = _row_hex(row, "digest")
    sealed_view = _row_hex(row, "view_digest")
    _row_hex(row, "link")
    if not isinstance(row["key_id"], str) or not row["key_id"]:
        raise RowInvalid("entry", "key_id must be text")
    encoded = row["payload"]
    if row["pruned"]:
        if encoded is not None or any(row[name] is not None for name in FIELD_NAMES):
            raise RowInvalid("entry", "a pruned entry has no visible columns and no payload")
    else:
        try:
            body = fields_view_body({name: row[name] for name in FIELD_NAMES})
        except BundleInvalid as exc:
            raise RowInvalid("entry", exc.detail.replace("entry.fields.", "")) from None
        if not hmac.compare_digest(view_digest(entry_view(timestamp_ms, body)), sealed_view):
            raise RowInvalid(
                "view digest",
                "the visible columns do not hash to view_digest: the columns shown are not the ones sealed",
            )
        if kind in PAYLOAD_KINDS and not row["value_null"]:
            _check_payload(encoded, digest, body, kind)
        elif encoded is not None:
            raise RowInvalid("entry", "only a rejected or schema entry shows its payload")
    return entry_leaf(leaf_document(row, topic=topic, partition=partition))


def _check_payload(encoded: object, digest: bytes, body: bytes, kind: str) -> None:
    if not isinstance(encoded, str):
        raise RowInvalid("payload", f"a {kind} entry must show its payload (base64)")
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RowInvalid("payload", "payload is not base64") from None
    if base64.b64encode(payload).decode("ascii") != encoded:
        raise RowInvalid("payload", "payload is not canonical base64")
    if not hmac.compare_digest(hashlib.sha256(payload).digest(), digest):
        raise RowInvalid("payload", "the payload does not hash to digest: it is not the record sealed")
    try:
        fingerprint: bytes | None = read_fingerprint(payload) if payload else None
    except DecodeError:
        fingerprint = None
    if kind == "schema" and not is_schema_record(payload):
        raise RowInvalid("payload", "a schema entry's payload is not a schema record")
    if is_schema_record(payload) and rejected_view_body(payload[2:10]) == body:
        return  # a schema record (accepted or refused) shows its header's fingerprint (CHAIN.md §19)
    if rejected_view_body(fingerprint) != body:
        raise RowInvalid("payload", f"the columns of the {kind} entry are not what its payload says")


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
