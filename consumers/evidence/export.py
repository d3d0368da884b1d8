"""Exports that are evidence: a contiguous seq range of the ledger written to a folder with a
signed manifest, checkable offline by ``export_check.check_export`` (docs/EXPORT-FORMAT.md).

The API (the CLI's ``export`` and the HTTP API call it)::

    from baldur_audit.consumers.checkpoint_keys import load_checkpoint_keys
    from baldur_audit.consumers.evidence.export import write_export

    keys = load_checkpoint_keys(settings, signing=False)  # a signer is needed: the manifest is signed
    with PostgresLedgerStore.connect(dsn) as store:
        manifest = write_export(store, keys, since=t0, until=t1, fmt="ndjson", out=Path("review"))
    manifest.as_dict()  # first_seq, last_seq, count, checkpoint size, files, seconds …

Select the range by seq (``first_seq``/``last_seq``) or by broker time (``since``/``until``,
mapped to the contiguous seq range from the first entry stamped at or after ``since`` to the
last stamped before ``until``); a missing end is the ledger's first entry, or the newest
checkpoint's size. Every entry of the range is exported, of every kind. :func:`plan_export`
resolves a selection without writing anything (e.g. to answer an API request with the range
first). Errors: :class:`ExportRefused` (cannot export that range: no checkpoint covers it,
retention deleted part of it, the folder is not empty), :class:`ExportMismatch` and
``ChainBreak`` (the ledger or its tree no longer matches its signed checkpoint: tampered),
``ConfigError`` (no checkpoint signing key), ``StoreUnavailable``, ``OSError``.

The folder is written beside ``out`` under a temporary name and renamed into place, so it
appears complete or not at all; files are mode 0644.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    UnverifiableCheckpoint,
    open_checkpoint,
)
from baldur_audit.schemas.errors import AuditError, ConfigError, SequenceGap, ValueMismatch
from baldur_audit.schemas.merkle import ProofError, range_proof, verify_range

from ..checkpoint_keys import CheckpointKeys
from ..postgres import Connection
from ..postgres import export as rows
from ..postgres.ledger import PostgresLedgerStore, ledger_end
from ..postgres.merkle import PostgresMerkleNodes, StoredCheckpoint, stored_checkpoint, tree_size
from ..postgres.retention import read_anchors
from ..postgres.rows import ms_to_datetime
from .bundle import entry_leaf
from .export_format import (
    CSV_HEADER,
    DATA_NAMES,
    ENCODERS,
    FORMATS,
    KINDS,
    MANIFEST_NAME,
    entry_row,
    leaf_document,
    manifest_document,
    sign_manifest,
)

FILE_MODE = 0o644
FOLDER_MODE = 0o755
_CHUNK = 1000  # rows per write, hash update and progress report


class ExportRefused(AuditError):
    """This export cannot be made (nothing was written): the message says why and what to do."""


class ExportMismatch(AuditError):
    """The ledger or its stored tree no longer matches the signed checkpoint the export is cut
    against (tampered): ``seq`` is the first entry found to differ, if one was."""

    def __init__(self, detail: str, seq: int | None = None) -> None:
        self.detail = detail
        self.seq = seq
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """The seq range a selection resolves to, and the checkpoint it is cut against.

    ``left_out`` counts the entries after the checkpoint that an open-ended selection leaves
    out (sealed, but not covered by a checkpoint yet).
    """

    first_seq: int
    last_seq: int
    checkpoint: StoredCheckpoint
    since: datetime | None = None
    until: datetime | None = None
    left_out: int = 0

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class ExportManifest:
    """A written export: where, its manifest document (as written, signature included) and
    how long it took."""

    path: Path
    document: dict[str, Any]
    left_out: int = 0
    seconds: float = 0.0

    @property
    def first_seq(self) -> int:
        return int(self.document["first_seq"])

    @property
    def last_seq(self) -> int:
        return int(self.document["last_seq"])

    @property
    def count(self) -> int:
        return int(self.document["count"])

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` summary (no leaf hashes, no signature)."""
        doc = self.document
        checkpoint = _checkpoint_of(doc["checkpoint"]["note"])
        return {
            "path": str(self.path),
            "format": doc["files"][0]["format"],
            "origin": doc["origin"],
            "first_seq": doc["first_seq"],
            "last_seq": doc["last_seq"],
            "count": doc["count"],
            "kinds": doc["kinds"],
            "pruned": doc["pruned"],
            "selection": doc["selection"],
            "checkpoint": {"size": checkpoint.size, "root": checkpoint.root_hash.hex()},
            "files": [{key: f[key] for key in ("name", "bytes", "sha256", "entries")} for f in doc["files"]]
            + [{"name": MANIFEST_NAME}],
            "signed_by": doc["signed_by"],
            "left_out": self.left_out,
            "seconds": round(self.seconds, 3),
            "entries_per_second": round(self.count / self.seconds) if self.seconds > 0 else None,
        }


def _checkpoint_of(note: str) -> Checkpoint:
    """The checkpoint a stored note carries (its signatures are the auditor's to check)."""
    return Checkpoint.parse(note[: note.rfind("\n\n") + 1])


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


# --- the range -------------------------------------------------------------------------------


def plan_export(
    conn: Connection,
    *,
    first_seq: int | None = None,
    last_seq: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    size: int | None = None,
) -> ExportPlan:
    """The seq range a selection means, under the newest stored checkpoint (or the one of
    ``size`` leaves). Raises :class:`ExportRefused`, ``ValueError`` (both ends given twice)."""
    if first_seq is not None and since is not None:
        raise ValueError("give first_seq or since, not both")
    if last_seq is not None and until is not None:
        raise ValueError("give last_seq or until, not both")
    stored = stored_checkpoint(conn, size=size)
    if stored is None:
        raise ExportRefused(
            f"no checkpoint of size {size} is stored"
            if size is not None
            else "no checkpoint is stored yet: run `baldur-audit checkpoint` first"
        )
    covered = stored.tree_size
    end, anchor = ledger_end(conn)
    if first_seq is not None:
        first = first_seq
    elif since is not None:
        found = rows.first_seq_at_or_after(conn, since)
        if found is None:
            raise ExportRefused(f"no entry is stamped at or after {_iso(since)}")
        first = found
        anchors = read_anchors(conn) if anchor and found == anchor + 1 else []
        if anchors and ms_to_datetime(anchors[-1].timestamp_ms) >= since:
            raise ExportRefused(
                f"retention deleted the entries up to seq {anchor}, some of them stamped at or after "
                f"{_iso(since)}: an export of that window cannot be complete; start it after "
                f"{_iso(ms_to_datetime(anchors[-1].timestamp_ms))} or at seq {anchor + 1}"
            )
    else:
        first = anchor + 1
    if first < 1:
        raise ExportRefused(f"there is no seq {first}: seqs start at 1")
    if first > covered:
        raise ExportRefused(
            f"the range starts at seq {first}, but the {'' if size else 'newest '}checkpoint covers "
            f"{covered} entries: run `baldur-audit checkpoint` first"
        )
    if first <= anchor:
        raise ExportRefused(
            f"retention deleted the entries up to seq {anchor} (retention anchor): "
            f"an export can start at seq {anchor + 1}"
        )
    left_out = 0
    if last_seq is not None:
        last = last_seq
    elif until is not None:
        found = rows.last_seq_before(conn, until)
        if found is None or found < first:
            raise ExportRefused(f"no entry from seq {first} on is stamped before {_iso(until)}")
        last = found
    else:
        last = covered
        left_out = max(0, end - covered)
    if first > last:
        raise ExportRefused(f"the range seq {first}..{last} is empty")
    if last > covered:
        raise ExportRefused(
            f"the range ends at seq {last}, but the {'' if size else 'newest '}checkpoint covers "
            f"{covered} entries: run `baldur-audit checkpoint` first"
        )
    return ExportPlan(first, last, stored, since=since, until=until, left_out=left_out)


# --- writing -----------------------------------------------------------------------------------


def _prepare(out: Path, *, force: bool) -> Path:
    """The staging folder beside ``out``; refuses an ``out`` that is a file, or a folder with
    something in it unless ``force``."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ExportRefused(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not force:
            raise ExportRefused(f"{out} is not empty: choose another --out, or --force to replace it")
    parent = out.parent
    if not parent.is_dir():
        raise ExportRefused(f"the folder {parent} does not exist")
    staging = parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(mode=FOLDER_MODE)
    os.chmod(staging, FOLDER_MODE)
    return staging


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished staging folder to ``out`` (replacing an empty one, or with --force
    a full one, which is moved aside first and then removed)."""
    old: Path | None = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.replaced-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        else:
            out.rmdir()
    os.rename(staging, out)
    _fsync_folder(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        os.fchmod(handle.fileno(), FILE_MODE)


@dataclass(slots=True)
class _Written:
    name: str
    size: int
    sha256: str
    leaves: list[bytes]
    kinds: dict[str, int]
    pruned: int
    last_link: bytes


def _write_entries(
    conn: Connection,
    plan: ExportPlan,
    *,
    fmt: str,
    folder: Path,
    topic: str,
    partition: int,
    progress: Callable[[int], None] | None,
) -> _Written:
    """Stream the range's rows into the data file; their leaf hashes, counts and digest."""
    name = DATA_NAMES[fmt]
    encode = ENCODERS[fmt]
    digest = hashlib.sha256()
    leaves: list[bytes] = []
    kinds = dict.fromkeys(KINDS, 0)
    pruned = 0
    size = 0
    expected = plan.first_seq
    link = b""
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
        chunk: list[bytes] = [CSV_HEADER] if fmt == "csv" else []
        for row in rows.iter_export_rows(conn, plan.first_seq, plan.last_seq):
            seq = int(row[rows.SEQ])
            if seq != expected:
                raise SequenceGap(
                    expected, seq, f"entry {expected} is missing although the checkpoint covers it"
                )
            timestamp_ms = row[rows.TIMESTAMP_MS]
            if not isinstance(timestamp_ms, int):
                raise ValueMismatch(seq, "column kafka_timestamp is not a finite time")
            view = row[rows.VIEW]
            payload = row[rows.PAYLOAD]
            entry_digest = bytes(row[rows.DIGEST])
            if payload is not None and hashlib.sha256(payload).digest() != entry_digest:
                raise ValueMismatch(seq, "the payload does not hash to the sealed digest")
            kind = str(row[rows.KIND])
            entry = entry_row(
                seq=seq,
                kind=kind,
                duplicate_of=int(row[rows.DUPLICATE_OF]),
                offset=int(row[rows.KAFKA_OFFSET]),
                timestamp_ms=timestamp_ms,
                view=bytes(view) if view is not None else None,
                sealed_view_digest=hashlib.sha256(view).digest()
                if view is not None
                else bytes(row[rows.STORED_VIEW_DIGEST]),
                value_null=bool(row[rows.VALUE_NULL]),
                digest=entry_digest,
                key_id=str(row[rows.KEY_ID]),
                link=bytes(row[rows.LINK]),
                payload=bytes(payload) if payload is not None else None,
            )
            leaves.append(entry_leaf(leaf_document(entry, topic=topic, partition=partition)))
            kinds[kind] = kinds.get(kind, 0) + 1
            pruned += view is None
            link = bytes(row[rows.LINK])
            chunk.append(encode(entry))
            expected += 1
            if len(chunk) >= _CHUNK:
                size += _flush(handle, digest, chunk)
                if progress is not None:
                    progress(_CHUNK)
        size += _flush(handle, digest, chunk)
        if expected <= plan.last_seq:
            raise SequenceGap(
                expected, None, f"entry {expected} is missing although the checkpoint covers it"
            )
        handle.flush()
        os.fsync(handle.fileno())
    if progress is not None:
        progress(len(leaves) % _CHUNK)
    return _Written(name, size, digest.hexdigest(), leaves, kinds, pruned, link)


def _flush(handle: Any, digest: Any, chunk: list[bytes]) -> int:
    data = b"".join(chunk)
    chunk.clear()
    handle.write(data)
    digest.update(data)
    return len(data)


def _first_stored_difference(conn: Connection, plan: ExportPlan, leaves: list[bytes]) -> int | None:
    """The first seq whose leaf differs from the stored tree's leaf (level 0), if any."""
    stored = PostgresMerkleNodes(conn).get_many(
        [(0, seq - 1) for seq in range(plan.first_seq, plan.last_seq + 1)]
    )
    for offset, leaf in enumerate(leaves):
        seq = plan.first_seq + offset
        if stored.get((0, seq - 1)) != leaf:
            return seq
    return None


def _checked_proof(
    conn: Connection, plan: ExportPlan, written: _Written, keys: CheckpointKeys
) -> list[bytes]:
    """The range proof of the written leaves, checked against the signed root."""
    note = plan.checkpoint.note
    if keys.verifiers:
        try:
            open_checkpoint(note, keys.verifiers)
        except UnverifiableCheckpoint:
            pass  # signed by a key this side does not hold: the auditor's key decides
        except CheckpointError as exc:
            raise ExportMismatch(
                f"the stored checkpoint of size {plan.checkpoint.tree_size} is invalid: {exc}"
            ) from None
    checkpoint = _checkpoint_of(note)
    if tree_size(conn) < checkpoint.size:
        raise ExportMismatch(f"the stored merkle tree does not reach the checkpoint's size {checkpoint.size}")
    proof = range_proof(PostgresMerkleNodes(conn), plan.first_seq - 1, plan.last_seq, checkpoint.size)
    try:
        verify_range(written.leaves, plan.first_seq - 1, checkpoint.size, proof, checkpoint.root_hash)
    except ProofError as exc:
        seq = _first_stored_difference(conn, plan, written.leaves)
        if seq is not None:
            raise ExportMismatch(
                f"entry {seq} is not what the checkpoint of size {checkpoint.size} covers: "
                "the ledger was changed after it was checkpointed (run `baldur-audit verify`)",
                seq,
            ) from None
        raise ExportMismatch(
            f"the entries do not lead to the root of the checkpoint of size {checkpoint.size} ({exc}): "
            "the stored merkle tree was changed"
        ) from None
    if plan.last_seq == checkpoint.size and written.last_link != checkpoint.head_link:
        raise ExportMismatch(
            f"entry {plan.last_seq} does not have the head link of the checkpoint of its size", plan.last_seq
        )
    return proof


def write_export(
    store: PostgresLedgerStore,
    keys: CheckpointKeys,
    *,
    out: Path,
    fmt: str = "ndjson",
    first_seq: int | None = None,
    last_seq: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    size: int | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    plan_ready: Callable[[ExportPlan], None] | None = None,
    now: datetime | None = None,
) -> ExportManifest:
    """Write the export of a selection (see the module docstring) into the folder ``out``:
    the data file in ``fmt`` (``ndjson`` or ``csv``) and ``manifest.json`` signed by every
    signer of ``keys``. ``progress`` is called with the number of entries written since its
    last call; ``plan_ready`` with the resolved range before the first entry is read.

    Raises :class:`ExportRefused`, :class:`ExportMismatch`, ``ChainBreak``, ``ConfigError``
    (no signer), ``ValueError`` (bad ``fmt`` or selection), ``StoreUnavailable``, ``OSError``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (expected {' or '.join(FORMATS)})")
    started = time.perf_counter()
    meta = store.read_meta()
    staging = _prepare(out, force=force)
    try:
        with store.snapshot() as conn:
            plan = plan_export(
                conn, first_seq=first_seq, last_seq=last_seq, since=since, until=until, size=size
            )
            if not keys.signers:
                raise ConfigError(
                    "the export manifest is signed with the checkpoint key, and none is configured "
                    "(BALDUR_SECRETS_CHECKPOINT_KEY)"
                )
            if plan_ready is not None:
                plan_ready(plan)
            written = _write_entries(
                conn,
                plan,
                fmt=fmt,
                folder=staging,
                topic=meta.topic,
                partition=meta.partition,
                progress=progress,
            )
            proof = _checked_proof(conn, plan, written, keys)
        document = manifest_document(
            note=plan.checkpoint.note,
            origin=_checkpoint_of(plan.checkpoint.note).origin,
            topic=meta.topic,
            partition=meta.partition,
            first_seq=plan.first_seq,
            files=[
                {
                    "name": written.name,
                    "format": fmt,
                    "bytes": written.size,
                    "sha256": written.sha256,
                    "entries": plan.count,
                }
            ],
            leaves=written.leaves,
            proof=proof,
            kinds=written.kinds,
            pruned=written.pruned,
            since=_iso(since),
            until=_iso(until),
            created_at=_iso(now or datetime.now(UTC)) or "",
        )
        _write_file(staging / MANIFEST_NAME, sign_manifest(document, keys.signers).encode("ascii"))
        _fsync_folder(staging)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportManifest(out, document, left_out=plan.left_out, seconds=time.perf_counter() - started)
