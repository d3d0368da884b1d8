"""``verify --file``: walk a local file chain (CHAIN.md §20) and recompute every link.

Same report as the ledger's ``verify`` (:class:`VerifyReport`: verdict kinds ``modified``,
``missing``, ``inserted``, ``reordered``, ``unverifiable``), with the classification of every
record recomputed from its bytes. A torn tail at the end of the newest segment (a crash while
appending) is not a break: it is reported in ``file.torn_bytes`` and cut by the next writer.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baldur_audit.producers.filechain.format import PARTITION, FileChainError, FileRecord, SegmentHeader
from baldur_audit.producers.filechain.reader import iter_records, scan_chain
from baldur_audit.producers.filechain.retention import FileAnchor, read_anchor
from baldur_audit.schemas.chain import (
    EntryKind,
    LedgerLinker,
    SigningKey,
    classify,
    genesis_link,
    payload_digest,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from baldur_audit.schemas.errors import DecodeError
from baldur_audit.schemas.view import entry_view, view_digest

from ..postgres.search import LogFilter
from .verify import Break, VerifyReport

Progress = Callable[[int], None]
KIND_LABELS = {kind.code: kind.label for kind in EntryKind}


@dataclass(frozen=True, slots=True)
class FileVerifyReport:
    """:class:`VerifyReport` plus what only a file chain has (segments, torn tail)."""

    report: VerifyReport
    directory: str
    segments: int
    torn_bytes: int
    ledger_id: str | None

    @property
    def intact(self) -> bool:
        return self.report.intact

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: the ledger's, with a ``file`` member."""
        doc = self.report.as_dict()
        doc["file"] = {
            "directory": self.directory,
            "ledger_id": self.ledger_id,
            "segments": self.segments,
            "torn_bytes": self.torn_bytes,
        }
        return doc


class _Stop(Exception):
    def __init__(self, brk: Break) -> None:
        self.brk = brk


class _Walk:
    """The state of one walk: previous seq/link/timestamp, event ids, counts."""

    def __init__(self, keys: Mapping[str, SigningKey], progress: Progress | None) -> None:
        self.keys = keys
        self.progress = progress
        self.linkers: dict[str, LedgerLinker] = {}
        self.seq = 0
        self.link = b""
        self.timestamp_ms = -(1 << 63)
        self.ids: dict[uuid.UUID, int] = {}
        self.kinds = {kind.label: 0 for kind in EntryKind}
        self.entries = 0
        self.anchor_check: FileAnchor | None = None  # an anchor the walk must still meet
        self.topic = ""

    def linker(self, key_id: str, seq: int) -> LedgerLinker:
        linker = self.linkers.get(key_id)
        if linker is None:
            key = self.keys.get(key_id)
            if key is None:
                raise _Stop(Break(seq, "unverifiable", f"key id {key_id} of seq {seq} is not configured"))
            linker = LedgerLinker(key, topic=self.topic, partition=PARTITION)
            self.linkers[key_id] = linker
        return linker

    def check(self, record: FileRecord) -> None:
        seq = self.seq + 1
        if record.seq > seq:
            raise _Stop(Break(seq, "missing", f"expected seq {seq}, found seq {record.seq}"))
        if record.seq < seq:
            raise _Stop(Break(record.seq, "inserted", f"seq {record.seq} appears again after seq {self.seq}"))
        linker = self.linker(record.key_id, seq)
        outcome = classify(None if record.value_null else record.value, KNOWN_SCHEMAS)
        if outcome.event_id is None:
            kind, duplicate_of = EntryKind.REJECTED, 0
        elif outcome.event_id in self.ids:
            kind, duplicate_of = EntryKind.DUPLICATE, self.ids[outcome.event_id]
        else:
            kind, duplicate_of = EntryKind.EVENT, 0
        view = entry_view(record.timestamp_ms, outcome.view_body)
        computed = linker.link(
            self.link,
            seq,
            seq - 1,
            record.timestamp_ms,
            record.kind,
            record.duplicate_of,
            record.value_null,
            payload_digest(None if record.value_null else record.value),
            view_digest(view),
        )
        if not hmac.compare_digest(computed, record.link):
            raise _Stop(
                Break(
                    seq,
                    "modified",
                    f"link mismatch at seq {seq}: expected {record.link.hex()[:16]}…, "
                    f"computed {computed.hex()[:16]}…",
                )
            )
        if (record.kind, record.duplicate_of) != (kind.code, duplicate_of):
            raise _Stop(
                Break(
                    seq,
                    "modified",
                    f"seq {seq} is sealed as {KIND_LABELS.get(record.kind, record.kind)} "
                    f"(duplicate_of {record.duplicate_of}) but its bytes make it {kind.label} "
                    f"(duplicate_of {duplicate_of})",
                )
            )
        if record.event_id != outcome.event_id:
            raise _Stop(Break(seq, "modified", f"seq {seq}: the stored event id is not the payload's"))
        if record.timestamp_ms < self.timestamp_ms:
            raise _Stop(Break(seq, "reordered", f"seq {seq}: timestamp goes back from the previous record"))
        if self.anchor_check is not None and self.anchor_check.seq == seq:
            if not hmac.compare_digest(self.anchor_check.link, record.link):
                raise _Stop(Break(seq, "modified", f"seq {seq}: the retention anchor holds another link"))
            self.anchor_check = None
        if kind is EntryKind.EVENT and outcome.event_id is not None:
            self.ids[outcome.event_id] = seq
        self.seq, self.link, self.timestamp_ms = seq, record.link, record.timestamp_ms
        self.kinds[kind.label] += 1
        self.entries += 1
        if self.progress is not None and self.entries % 10_000 == 0:
            self.progress(self.entries)


def verify_file_chain(
    directory: Path, keys: Mapping[str, SigningKey], *, progress: Progress | None = None
) -> FileVerifyReport:
    """Verify the file chain in ``directory`` with ``keys`` (key id → key).

    Returns the report (intact or the first break). Raises :class:`FileChainError` when
    ``directory`` holds no file chain, ``OSError`` when it cannot be read.
    """
    started = time.monotonic()
    walk = _Walk(keys, progress)
    brk: Break | None = None
    segments = 0
    torn = 0
    ledger_id: str | None = None
    retention: dict[str, Any] | None = None
    first_genesis_key: str | None = None
    try:
        anchor = read_anchor(directory)
        for scan in scan_chain(directory):
            segments += 1
            if scan.header is None:
                raise _Stop(Break(walk.seq + 1, "modified", f"{scan.path.name}: {scan.header_error}"))
            header = scan.header
            if segments == 1:
                ledger_id = header.ledger_id
                walk.topic = header.topic
                _start(walk, header.prev_seq, header.prev_link, header, anchor)
                if anchor is not None:
                    retention = {"anchor": anchor.as_dict(), "pruned": 0}
            else:
                if (header.ledger_id, header.topic, header.genesis_key_id) != (
                    ledger_id,
                    walk.topic,
                    first_genesis_key,
                ):
                    raise _Stop(Break(walk.seq + 1, "modified", f"{scan.path.name} belongs to another chain"))
                if header.prev_seq > walk.seq:
                    raise _Stop(
                        Break(walk.seq + 1, "missing", f"{scan.path.name} starts after seq {header.prev_seq}")
                    )
                if header.prev_seq < walk.seq or not hmac.compare_digest(header.prev_link, walk.link):
                    raise _Stop(
                        Break(walk.seq + 1, "modified", f"{scan.path.name} does not continue seq {walk.seq}")
                    )
            if segments == 1:
                first_genesis_key = header.genesis_key_id
            if scan.first_seq != header.prev_seq + 1:
                raise _Stop(
                    Break(header.prev_seq + 1, "modified", f"{scan.path.name} is named for another seq")
                )
            for found in scan.parsed.frames:
                walk.check(found.record)
            if scan.parsed.damage is not None:
                raise _Stop(
                    Break(
                        walk.seq + 1,
                        "modified",
                        f"record after seq {walk.seq} in {scan.path.name}: {scan.parsed.damage.reason}",
                    )
                )
            torn = scan.parsed.torn  # only the newest segment's counts: a writer cuts it
        if walk.anchor_check is not None:
            raise _Stop(
                Break(walk.anchor_check.seq, "missing", "the retention anchor's seq is beyond the chain")
            )
    except _Stop as stop:
        brk = stop.brk
    return FileVerifyReport(
        report=VerifyReport(
            entries=walk.entries,
            head={"seq": walk.seq, "offset": walk.seq - 1, "link": walk.link.hex()},
            first_break=brk,
            seconds=time.monotonic() - started,
            kinds=walk.kinds,
            retention=retention,
        ),
        directory=str(directory),
        segments=segments,
        torn_bytes=torn,
        ledger_id=ledger_id,
    )


def _start(
    walk: _Walk, prev_seq: int, prev_link: bytes, header: SegmentHeader, anchor: FileAnchor | None
) -> None:
    """Where the walk starts: genesis, or the retention anchor (checking its MAC)."""
    if anchor is not None:
        if anchor.ledger_id != header.ledger_id:
            raise _Stop(Break(anchor.seq, "modified", "the retention anchor names another chain"))
        key = walk.keys.get(anchor.key_id)
        if key is None:
            raise _Stop(
                Break(
                    anchor.seq, "unverifiable", f"retention anchor key id {anchor.key_id} is not configured"
                )
            )
        if not anchor.holds(key):
            raise _Stop(
                Break(anchor.seq, "modified", f"retention anchor at seq {anchor.seq} is not what was signed")
            )
        if prev_seq > anchor.seq:
            raise _Stop(
                Break(anchor.seq + 1, "missing", f"records after the anchor at seq {anchor.seq} are missing")
            )
        if prev_seq < anchor.seq:
            walk.anchor_check = anchor  # dropped segments are still there: the walk must meet it
    elif prev_seq != 0:
        raise _Stop(Break(1, "missing", f"the chain starts after seq {prev_seq} without a retention anchor"))
    if prev_seq == 0:
        key = walk.keys.get(header.genesis_key_id)
        if key is None:
            raise _Stop(Break(1, "unverifiable", f"genesis key id {header.genesis_key_id} is not configured"))
        expected = genesis_link(key, ledger_id=header.ledger_id, topic=header.topic, partition=PARTITION)
        if not hmac.compare_digest(expected, prev_link):
            raise _Stop(Break(1, "modified", "the genesis link does not match the chain's identity"))
    elif anchor is not None and prev_seq == anchor.seq and not hmac.compare_digest(prev_link, anchor.link):
        raise _Stop(
            Break(anchor.seq + 1, "modified", "the first segment does not continue the retention anchor")
        )
    walk.seq, walk.link = prev_seq, prev_link
    if anchor is not None and prev_seq == anchor.seq:
        walk.timestamp_ms = anchor.timestamp_ms


def file_log(directory: Path, query: LogFilter) -> tuple[list[dict[str, Any]], int]:
    """``log --file``: the records of a file chain that match ``query`` (the ledger's filter),
    as rows shaped like the ledger's, and how many match in all. Newest ``query.limit``
    first-to-last, or the first ``limit`` after ``query.after_seq``.

    Reads without verifying. Raises :class:`FileChainError` or ``OSError``.
    """
    matches: list[dict[str, Any]] = []
    matched = 0
    for found in iter_records(directory):
        record = found.record
        if query.after_seq is not None and record.seq <= query.after_seq:
            continue
        label = KIND_LABELS.get(record.kind, str(record.kind))
        if label not in query.kinds:
            continue
        row = _row(record, label)
        if not _matches(row, query):
            continue
        matched += 1
        matches.append(row)
        if query.after_seq is None and len(matches) > query.limit:
            matches.pop(0)
        elif query.after_seq is not None and len(matches) > query.limit:
            matches.pop()
    return matches, matched


def _row(record: FileRecord, label: str) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
    row: dict[str, Any] = {
        "seq": record.seq,
        "kafka_offset": record.offset,
        "kafka_timestamp": stamp,
        "kind": label,
        "duplicate_of": record.duplicate_of or None,
        "reject_reason": None,
        "event_id": record.event_id,
    }
    fields = dict.fromkeys(
        ("occurred_at", "actor", "actor_type", "action", "target", "before", "after", "reason")
        + ("source", "trace_id", "client_ip", "attributes")
    )
    try:
        event = decode_event(record.value, KNOWN_SCHEMAS)
    except DecodeError as exc:
        row["reject_reason"] = exc.reason
    else:
        fields.update(
            occurred_at=event.occurred_at,
            actor=event.actor.id,
            actor_type=event.actor.type,
            action=event.action,
            target=event.target,
            before=_json_value(event.before),
            after=_json_value(event.after),
            reason=event.reason,
            source=event.source,
            trace_id=event.trace_id,
            client_ip=event.client_ip,
            attributes=dict(event.attributes),
        )
    row.update(fields)
    return row


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _matches(row: dict[str, Any], query: LogFilter) -> bool:
    for name, pattern in (("target", query.target), ("actor", query.actor)):
        if pattern is not None and not fnmatch.fnmatchcase(row[name] or "", pattern):
            return False
    if query.action is not None and row["action"] != query.action:
        return False
    if query.trace_id is not None and row["trace_id"] != query.trace_id:
        return False
    stamp = row["kafka_timestamp"]
    if query.since is not None and stamp < query.since:
        return False
    return query.until is None or stamp < query.until


__all__ = ["FileChainError", "FileVerifyReport", "file_log", "verify_file_chain"]
