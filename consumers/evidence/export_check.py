"""Checking an export offline (docs/EXPORT-FORMAT.md): no database, no Kafka, no HMAC key — only
the checkpoint verifier keys. Imports the pure core, ``bundle.py`` and ``export_format.py`` only.

:func:`check_export` proves that the folder holds every entry of the manifest's seq range and
nothing else, unaltered: the manifest is in its one canonical spelling and signed by a given key;
the checkpoint it names is signed by a given key; the manifest's leaf hashes are exactly the
leaves ``first_seq..last_seq`` of that checkpoint's tree (a range proof to the signed root); the
data file has the SHA-256, size and entry count the manifest says; every entry is spelled
canonically, in seq order with none missing or added, its visible columns hash to its sealed
view digest, a rejected entry's raw bytes to its digest, and its recomputed leaf hash is the
manifest's. It reports every failure found (one line each), not only the first.

The API (the CLI's ``check-export`` and the HTTP API call it)::

    result = check_export(Path("review"), verifiers)   # raises ExportUnreadable (exit 2)
    result.status      # "valid" | "invalid" | "unverifiable"
    result.failures    # ExportFailure(check, detail, file, line, seq); str() is one line
    result.as_dict()   # the --json shape
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    UnverifiableCheckpoint,
    VerifierKey,
    open_checkpoint,
    open_note,
)
from baldur_audit.schemas.errors import AuditError
from baldur_audit.schemas.merkle import MerkleError, ProofError, decode_hash, verify_range

from .bundle import note_key_ids, render
from .export_format import (
    DATA_NAMES,
    EXPORT_FORMAT,
    FILE_KEYS,
    KINDS,
    MANIFEST_KEYS,
    MANIFEST_NAME,
    Digest,
    FormatError,
    RowInvalid,
    check_row,
    csv_rows,
    ndjson_rows,
    signature_text,
    strict_json,
)

MAX_FAILURES = 50
_HEX32 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ExportUnreadable(AuditError):
    """The folder or its manifest cannot be read: nothing could be checked (exit 2)."""


@dataclass(frozen=True, slots=True)
class ExportFailure:
    """One check that failed: which (``check``), what was found (``detail``) and where."""

    check: str
    detail: str
    file: str | None = None
    line: int | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f" line {self.line}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where.strip()}: {self.check}: {self.detail}" if where else f"{self.check}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "detail": self.detail,
            "file": self.file,
            "line": self.line,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True)
class ExportCheck:
    """The verdict on an export: ``valid``, ``invalid`` (``failures`` says what failed) or
    ``unverifiable`` (it holds together, but no given key signed the manifest or its
    checkpoint: ``unverifiable`` says which)."""

    status: str
    failures: tuple[ExportFailure, ...] = ()
    more_failures: int = 0
    unverifiable: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    def lines(self) -> list[str]:
        """One line per failure (and one for the failures left out)."""
        found = [str(failure) for failure in self.failures]
        if self.more_failures:
            found.append(f"… and {self.more_failures} more failures")
        return found

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "valid": True if self.valid else False if self.status == "invalid" else None,
            "status": self.status,
            "failures": [failure.as_dict() for failure in self.failures],
            "more_failures": self.more_failures,
            "unverifiable": list(self.unverifiable),
            **self.summary,
        }


class _Failures:
    def __init__(self, limit: int) -> None:
        self.found: list[ExportFailure] = []
        self.more = 0
        self.limit = limit

    def add(self, check: str, detail: str, **where: Any) -> None:
        if len(self.found) < self.limit:
            self.found.append(ExportFailure(check, detail, **where))
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.found)


# --- the manifest --------------------------------------------------------------------------------


def _int(value: object, where: str, low: int = 0, high: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"{where} must be an integer in [{low}, {high}]")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where} must be text")
    return value


def _keys(document: object, expected: frozenset[str] | set[str], where: str) -> dict[str, Any]:
    if not isinstance(document, dict) or set(document) != set(expected):
        raise FormatError(f"{where} must hold exactly the keys {', '.join(sorted(expected))}")
    return document


@dataclass(slots=True)
class _Manifest:
    document: dict[str, Any]
    origin: str
    topic: str
    partition: int
    note: str
    first: int
    last: int
    count: int
    kinds: dict[str, int]
    pruned: int
    files: list[dict[str, Any]]
    leaves: list[bytes]
    proof: list[bytes]
    signature: str


def _read_manifest(document: object) -> _Manifest:
    doc = _keys(document, MANIFEST_KEYS, "manifest.json")
    if doc["format"] != EXPORT_FORMAT:
        raise FormatError(f"manifest.json format must be {EXPORT_FORMAT}")
    checkpoint = _keys(doc["checkpoint"], {"note", "key_ids"}, "checkpoint")
    kinds = _keys(doc["kinds"], set(KINDS), "kinds")
    selection = _keys(doc["selection"], {"since", "until"}, "selection")
    for name in ("since", "until"):
        if selection[name] is not None:
            _text(selection[name], f"selection.{name}")
    _text(doc["created_at"], "created_at")
    if not isinstance(checkpoint["key_ids"], list) or not all(
        isinstance(k, str) for k in checkpoint["key_ids"]
    ):
        raise FormatError("checkpoint.key_ids must be a list of key ids")
    files = doc["files"]
    if not isinstance(files, list) or not files:
        raise FormatError("files must be a non-empty list")
    names = set()
    for number, entry in enumerate(files):
        item = _keys(entry, FILE_KEYS, f"files[{number}]")
        name = _text(item["name"], f"files[{number}].name")
        if (
            item["format"] not in DATA_NAMES
            or not _NAME.fullmatch(name)
            or name == MANIFEST_NAME
            or name in names
        ):
            raise FormatError(f"files[{number}] must name a data file of format ndjson or csv, once")
        names.add(name)
        _int(item["bytes"], f"files[{number}].bytes")
        _int(item["entries"], f"files[{number}].entries")
        if not isinstance(item["sha256"], str) or not _HEX32.fullmatch(item["sha256"]):
            raise FormatError(f"files[{number}].sha256 must be 64 lowercase hex digits")
    for name in ("leaf_hashes", "range_proof", "signed_by"):
        if not isinstance(doc[name], list) or not all(isinstance(h, str) for h in doc[name]):
            raise FormatError(f"{name} must be a list of text")
    try:
        leaves = [decode_hash(text, f"leaf_hashes[{i}]") for i, text in enumerate(doc["leaf_hashes"])]
        proof = [decode_hash(text, f"range_proof[{i}]") for i, text in enumerate(doc["range_proof"])]
    except MerkleError as exc:
        raise FormatError(str(exc)) from None
    return _Manifest(
        document=doc,
        origin=_text(doc["origin"], "origin"),
        topic=_text(doc["topic"], "topic"),
        partition=_int(doc["partition"], "partition", -(2**31), 2**31 - 1),
        note=_text(checkpoint["note"], "checkpoint.note"),
        first=_int(doc["first_seq"], "first_seq", 1),
        last=_int(doc["last_seq"], "last_seq", 1),
        count=_int(doc["count"], "count", 1),
        kinds={kind: _int(kinds[kind], f"kinds.{kind}") for kind in KINDS},
        pruned=_int(doc["pruned"], "pruned"),
        files=files,
        leaves=leaves,
        proof=proof,
        signature=_text(doc["signature"], "signature"),
    )


def _describe(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "size": checkpoint.size,
        "root": checkpoint.root_hash.hex(),
        "head_link": checkpoint.head_link.hex(),
        "time": checkpoint.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def _signatures(
    manifest: _Manifest, verifiers: Sequence[VerifierKey], failures: _Failures, unverifiable: list[str]
) -> tuple[Checkpoint | None, dict[str, Any]]:
    """The manifest's and the checkpoint's signatures; the checkpoint (None if unreadable)."""
    labels = {key.name: key.label for key in verifiers}
    summary: dict[str, Any] = {"manifest_signed_by": [], "checkpoint": None}
    try:
        opened = open_note(manifest.signature, verifiers)
    except UnverifiableCheckpoint as exc:
        unverifiable.append(
            f"no given key signed the manifest (signatures by: {', '.join(exc.signatures) or 'none'})"
        )
    except CheckpointError as exc:
        failures.add("manifest signature", str(exc), file=MANIFEST_NAME)
    else:
        summary["manifest_signed_by"] = [labels.get(name, name) for name in opened.signers]
        if opened.text != signature_text(manifest.origin, manifest.document):
            failures.add(
                "manifest signature",
                "the signed text does not name this manifest's SHA-256 and origin: "
                "the manifest was changed after it was signed",
                file=MANIFEST_NAME,
            )
    if manifest.document["signed_by"] != note_key_ids(manifest.signature):
        failures.add("manifest signature", "signed_by does not name the signature's keys", file=MANIFEST_NAME)
    note = manifest.note
    checkpoint: Checkpoint | None = None
    try:
        checkpoint, signers = open_checkpoint(note, verifiers)
        summary["checkpoint"] = {**_describe(checkpoint), "signed_by": [labels.get(n, n) for n in signers]}
    except UnverifiableCheckpoint as exc:
        unverifiable.append(
            f"no given key signed the checkpoint (signatures by: {', '.join(exc.signatures) or 'none'})"
        )
        try:  # the rest can still be checked against the root it states
            checkpoint = Checkpoint.parse(note[: note.rfind("\n\n") + 1])
            summary["checkpoint"] = {**_describe(checkpoint), "signed_by": []}
        except CheckpointError:
            failures.add("checkpoint", "the checkpoint note does not hold a checkpoint", file=MANIFEST_NAME)
    except CheckpointError as exc:
        failures.add("checkpoint", str(exc), file=MANIFEST_NAME)
    if manifest.document["checkpoint"]["key_ids"] != note_key_ids(note):
        failures.add("checkpoint", "checkpoint.key_ids do not name the note's signatures", file=MANIFEST_NAME)
    if checkpoint is not None and checkpoint.origin != manifest.origin:
        failures.add(
            "checkpoint",
            f"the checkpoint is of the ledger {checkpoint.origin!r}, the manifest says {manifest.origin!r}",
            file=MANIFEST_NAME,
        )
    return checkpoint, summary


def _range(manifest: _Manifest, checkpoint: Checkpoint | None, failures: _Failures) -> None:
    """The range's arithmetic and its proof against the signed root."""
    m = manifest
    where = {"file": MANIFEST_NAME}
    if m.last < m.first or m.count != m.last - m.first + 1:
        failures.add("range", f"count {m.count} is not the size of seq {m.first}..{m.last}", **where)
    if len(m.leaves) != m.count:
        failures.add(
            "range", f"the manifest lists {len(m.leaves)} leaf hashes for {m.count} entries", **where
        )
    if sum(m.kinds.values()) != m.count or m.pruned > m.count:
        failures.add("range", f"the counts by kind do not add up to count {m.count}", **where)
    if sum(f["entries"] for f in m.files) != m.count:
        failures.add("range", f"the files' entries do not add up to count {m.count}", **where)
    if checkpoint is None:
        return
    if m.last > checkpoint.size:
        failures.add(
            "range", f"seq {m.last} is beyond the checkpoint, which covers {checkpoint.size} entries", **where
        )
        return
    try:
        verify_range(m.leaves, m.first - 1, checkpoint.size, m.proof, checkpoint.root_hash)
    except ProofError as exc:
        failures.add(
            "range proof",
            f"the leaf hashes are not entries {m.first}..{m.last} of the checkpoint's tree ({exc})",
            **where,
        )


# --- the entries ---------------------------------------------------------------------------------


def _entries(folder: Path, manifest: _Manifest, failures: _Failures) -> str | None:
    """Every data file: its size and SHA-256, then each entry, in seq order. Returns the
    last entry's link as shown."""
    expected = manifest.first
    kinds = dict.fromkeys(KINDS, 0)
    pruned = 0
    rows_seen = 0
    unpruned_seen: int | None = None
    last_link: str | None = None
    for item in manifest.files:
        name = item["name"]
        path = folder / name
        digest = Digest()
        in_file = 0
        reader = csv_rows if item["format"] == "csv" else ndjson_rows
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            failures.add("file", "the manifest lists it but the folder does not hold it", file=name)
            continue
        except OSError as exc:
            raise ExportUnreadable(f"cannot read {path}: {exc.strerror}") from None
        with handle:
            for line, parsed in reader(handle, digest):
                if isinstance(parsed, str):
                    failures.add("format", parsed, file=name, line=line)
                    continue
                seq = parsed["seq"] if isinstance(parsed["seq"], int) else None
                where = {"file": name, "line": line, "seq": seq}
                rows_seen += 1
                in_file += 1
                if seq is not None and seq != expected:
                    failures.add(
                        "order",
                        f"seq {seq} where seq {expected} was expected: an entry was dropped, added or moved",
                        **where,
                    )
                    expected = seq
                expected += 1
                try:
                    leaf = check_row(parsed, topic=manifest.topic, partition=manifest.partition)
                except RowInvalid as exc:
                    failures.add(exc.check, exc.detail, **where)
                    continue
                assert seq is not None  # check_row checked it
                if manifest.first <= seq <= manifest.last and seq - manifest.first < len(manifest.leaves):
                    if not hmac.compare_digest(leaf, manifest.leaves[seq - manifest.first]):
                        failures.add(
                            "leaf hash",
                            "the entry's leaf hash is not the one the manifest lists: the entry was changed",
                            **where,
                        )
                else:
                    failures.add(
                        "range", f"seq {seq} is outside the range {manifest.first}..{manifest.last}", **where
                    )
                kinds[parsed["kind"]] += 1
                if parsed["pruned"]:
                    pruned += 1
                    if unpruned_seen is not None:
                        failures.add(
                            "pruned",
                            f"pruned, after seq {unpruned_seen}, which is not: retention prunes a prefix",
                            **where,
                        )
                else:
                    unpruned_seen = seq if unpruned_seen is None else unpruned_seen
                last_link = parsed["link"]
        if digest.size != item["bytes"] or digest.hexdigest() != item["sha256"]:
            failures.add(
                "file digest",
                f"{digest.size} bytes with SHA-256 {digest.hexdigest()[:16]}…, the manifest says "
                f"{item['bytes']} "
                f"bytes with {item['sha256'][:16]}…: the file was changed",
                file=name,
            )
        if in_file != item["entries"]:
            failures.add(
                "count", f"it holds {in_file} entries, the manifest says {item['entries']}", file=name
            )
    if rows_seen != manifest.count and sum(f["entries"] for f in manifest.files) == manifest.count:
        failures.add("count", f"the files hold {rows_seen} entries, the manifest says {manifest.count}")
    if kinds != manifest.kinds or pruned != manifest.pruned:
        failures.add(
            "count",
            f"the entries are {kinds} with {pruned} pruned, the manifest says {manifest.kinds} "
            f"with {manifest.pruned} pruned",
            file=MANIFEST_NAME,
        )
    return last_link


def check_export(
    folder: Path, verifiers: Sequence[VerifierKey], *, max_failures: int = MAX_FAILURES
) -> ExportCheck:
    """Check the export in ``folder`` with only checkpoint verifier keys (see the module
    docstring); at most ``max_failures`` failures are described, the rest counted.

    Raises :class:`ExportUnreadable` (no such folder, no manifest, unreadable files).
    """
    try:
        if not folder.is_dir():
            raise ExportUnreadable(f"{folder} is not a folder")
        data = (folder / MANIFEST_NAME).read_bytes()
        listed = sorted(os.listdir(folder))
    except FileNotFoundError:
        raise ExportUnreadable(f"{folder} holds no {MANIFEST_NAME}: it is not an export") from None
    except OSError as exc:
        raise ExportUnreadable(f"cannot read {folder}: {exc.strerror}") from None
    failures = _Failures(max_failures)
    unverifiable: list[str] = []
    try:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise FormatError("it is not ASCII JSON") from None
        document = strict_json(text)
        if not isinstance(document, dict):
            raise FormatError("it is not a JSON object")
        if render(document) != text:
            failures.add(
                "manifest",
                "not in its canonical form: it was edited or reformatted after the export wrote it",
                file=MANIFEST_NAME,
            )
        manifest = _read_manifest(document)
    except FormatError as exc:
        failures.add("manifest", str(exc), file=MANIFEST_NAME)
        return ExportCheck("invalid", tuple(failures.found), failures.more)
    except UnicodeEncodeError:
        failures.add("manifest", "it holds text that is not valid Unicode", file=MANIFEST_NAME)
        return ExportCheck("invalid", tuple(failures.found), failures.more)
    checkpoint, summary = _signatures(manifest, verifiers, failures, unverifiable)
    _range(manifest, checkpoint, failures)
    expected = {MANIFEST_NAME, *(item["name"] for item in manifest.files)}
    for name in listed:
        if name not in expected:
            failures.add("file", "the folder holds it but the manifest does not list it", file=name)
    last_link = _entries(folder, manifest, failures)
    if (
        checkpoint is not None
        and manifest.last == checkpoint.size
        and last_link != checkpoint.head_link.hex()
    ):
        failures.add(
            "checkpoint", f"entry {manifest.last} does not have the checkpoint's head link", seq=manifest.last
        )
    status = "invalid" if failures else "unverifiable" if unverifiable else "valid"
    return ExportCheck(
        status,
        tuple(failures.found),
        failures.more,
        tuple(unverifiable),
        {
            "origin": manifest.origin,
            "first_seq": manifest.first,
            "last_seq": manifest.last,
            "count": manifest.count,
            "kinds": manifest.kinds,
            "pruned": manifest.pruned,
            "files": [
                {key: item[key] for key in ("name", "format", "bytes", "sha256", "entries")}
                for item in manifest.files
            ],
            "selection": manifest.document["selection"],
            "created_at": manifest.document["created_at"],
            **summary,
        },
    )
