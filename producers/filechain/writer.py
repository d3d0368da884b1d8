"""Appending to a file chain: several processes of one host, one total order.

Every append takes an exclusive ``flock`` on ``<dir>/lock``, catches up with what other
processes appended since (reading only the new bytes), seals the record with the chain's
:class:`~baldur_audit.schemas.chain.Sealer` (offset = seq - 1, timestamp = this process's
clock in ms, never earlier than the previous record's), writes the frame with one
``write`` and, with ``sync="always"``, ``fdatasync``\\ s it before the lock is released and
:meth:`FileChainWriter.append` returns. With ``sync="group"`` a background thread syncs
every ``group_ms``: a power failure may lose the records of the last ``group_ms`` (plus
the time of one sync), a crash of the process alone loses nothing (the kernel holds them).

A crash while appending leaves a *torn* frame at the end of the newest segment; the next
writer to take the lock cuts it off with a WARNING. Under ``sync="always"`` a record is
acknowledged only after its fsync, so a torn frame is never an acknowledged record.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from baldur_audit.schemas.chain import ChainHead, EntryKind, Sealer, SigningKey, TopicRecord, genesis_link
from baldur_audit.schemas.codec import KNOWN_SCHEMAS

from .format import (
    PARTITION,
    FileChainError,
    FileRecord,
    SegmentHeader,
    decode_header,
    parse_frames,
    segment_first_seq,
    segment_name,
)

log = logging.getLogger(__name__)

SYNC_MODES = ("always", "group")
LOCK_FILE = "lock"
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_GROUP_MS = 5
LEDGER_ID_PREFIX = "baldur-audit-file:"


@dataclass(frozen=True, slots=True)
class Appended:
    """What one append sealed."""

    seq: int
    kind: EntryKind
    duplicate_of: int | None
    timestamp_ms: int
    link: bytes


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of ``directory`` as (first seq, path), oldest first."""
    found = []
    for name in os.listdir(directory):
        first = segment_first_seq(name)
        if first is not None:
            found.append((first, directory / name))
    return sorted(found)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    """The segment being appended to: its open file, header and end of the last good frame."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        data = os.pread(self.fd, 1 << 16, 0)
        try:
            self.header, self.start = decode_header(data)
        except FileChainError as exc:
            os.close(self.fd)
            raise FileChainError(f"{path.name}: {exc}") from None
        self.end = self.start

    def close(self) -> None:
        os.close(self.fd)


class FileChainWriter:
    """Appends sealed records to the file chain in ``directory`` (created if absent).

    Thread-safe; several processes may hold writers on one directory. Raises
    :class:`FileChainError` when the directory holds a damaged or foreign chain, or ``OSError``
    when it cannot be written.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        key: SigningKey,
        topic: str,
        sync: str = "always",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        group_ms: int = DEFAULT_GROUP_MS,
        retention_ms: int | None = None,
    ) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync: expected one of {', '.join(SYNC_MODES)}, found {sync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._topic = topic
        self._sync = sync
        self._segment_bytes = max(4096, int(segment_bytes))
        self._group_s = max(1, int(group_ms)) / 1000
        self._retention_ms = retention_ms
        self._mutex = threading.Lock()
        self._ids: dict[uuid.UUID, int] = {}
        self._timestamp_ms = 0
        self._closed = False
        self._dirty = False
        self.appended = 0
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked():
                self._segment = self._open_chain()
        except BaseException:
            os.close(self._lock_fd)
            raise
        head = self._head
        self._sealer = Sealer(
            key=key, head=ChainHead(head.seq, head.seq - 1, head.link), schemas=KNOWN_SCHEMAS
        )
        self._wake = threading.Event()
        self._syncer: threading.Thread | None = None
        if sync == "group":
            self._syncer = threading.Thread(target=self._sync_loop, name="baldur-filechain-sync", daemon=True)
            self._syncer.start()

    @property
    def ledger_id(self) -> str:
        return self._segment.header.ledger_id

    @property
    def head_seq(self) -> int:
        return self._head.seq

    def _locked(self) -> _FileLock:
        return _FileLock(self._lock_fd)

    def _open_chain(self) -> _Segment:
        """Read the chain under the lock: ids, head, timestamps; create it when empty."""
        segments = list_segments(self.directory)
        if not segments:
            ledger_id = LEDGER_ID_PREFIX + str(uuid.uuid4())
            genesis = genesis_link(self._key, ledger_id=ledger_id, topic=self._topic, partition=PARTITION)
            header = SegmentHeader(
                ledger_id=ledger_id,
                topic=self._topic,
                genesis_key_id=self._key.key_id,
                prev_seq=0,
                prev_link=genesis,
            )
            path = self._create_segment(header, first_seq=1)
            self._head = ChainHead(0, -1, genesis)
            return _Segment(path)
        segment: _Segment | None = None
        for index, (_, path) in enumerate(segments):
            if segment is not None:
                segment.close()
            segment = _Segment(path)
            self._head = ChainHead(
                segment.header.prev_seq, segment.header.prev_seq - 1, segment.header.prev_link
            )
            last = index == len(segments) - 1
            self._read_new(segment, cut=last, strict=last)
        assert segment is not None
        return segment

    def _create_segment(self, header: SegmentHeader, *, first_seq: int) -> Path:
        """Write a segment holding only its header, atomically (temporary file, rename)."""
        path = self.directory / segment_name(first_seq)
        temporary = self.directory / (path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, header.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
        _fsync_dir(self.directory)
        return path

    def _read_new(self, segment: _Segment, *, cut: bool, strict: bool) -> None:
        """Take in the frames appended to ``segment`` after its known end."""
        size = os.fstat(segment.fd).st_size
        if size < segment.end:
            raise FileChainError(
                f"{segment.path.name} is {size} bytes, shorter than its {segment.end} bytes of sealed records"
            )
        if size == segment.end:
            return
        data = os.pread(segment.fd, size - segment.end, segment.end)
        parsed = parse_frames(data, 0)
        for found in parsed.frames:
            record = found.record
            if record.seq != self._head.seq + 1:
                raise FileChainError(
                    f"{segment.path.name}: seq {record.seq} follows seq {self._head.seq}; run verify --file"
                )
            if record.kind == EntryKind.EVENT.code and record.event_id is not None:
                self._ids.setdefault(record.event_id, record.seq)
            self._timestamp_ms = max(self._timestamp_ms, record.timestamp_ms)
            self._head = ChainHead(record.seq, record.seq - 1, record.link)
        segment.end += parsed.end
        if parsed.damage is not None:
            message = (
                f"{segment.path.name}: the record after seq {self._head.seq} is damaged "
                f"({parsed.damage.reason}); run verify --file"
            )
            if strict:
                raise FileChainError(message)
            log.error("file chain %s: %s", self.directory, message)
        elif parsed.torn and cut:
            log.warning(
                "file chain %s: cutting a torn record of %d bytes after seq %d in %s (a crash mid-append)",
                self.directory,
                parsed.torn,
                self._head.seq,
                segment.path.name,
            )
            os.ftruncate(segment.fd, segment.end)
            os.fsync(segment.fd)

    def _catch_up(self) -> None:
        """Under the lock: read what other processes appended, following new segments."""
        while True:
            self._read_new(self._segment, cut=True, strict=True)
            following = self.directory / segment_name(self._head.seq + 1)
            if following == self._segment.path or not following.exists():
                return
            fresh = _Segment(following)
            if fresh.header.prev_seq != self._head.seq or fresh.header.prev_link != self._head.link:
                fresh.close()
                raise FileChainError(f"{following.name} does not continue seq {self._head.seq}")
            self._switch(fresh)

    def _switch(self, fresh: _Segment) -> None:
        old, self._segment = self._segment, fresh
        if self._dirty:
            os.fdatasync(old.fd)
        old.close()

    def append(self, value: bytes, *, now_ms: int | None = None) -> Appended:
        """Seal ``value`` (an event's exact single-object bytes) as the next record.

        Returns once the record is written (and, with ``sync="always"``, on disk). Raises
        :class:`FileChainError` (damaged chain, closed writer) or ``OSError``.
        """
        with self._mutex:
            if self._closed:
                raise FileChainError("the file chain writer is closed")
            with self._locked():
                self._catch_up()
                head = self._head
                timestamp_ms = max(
                    time.time_ns() // 1_000_000 if now_ms is None else now_ms, self._timestamp_ms
                )
                self._sealer.head = ChainHead(head.seq, head.seq - 1, head.link)
                (entry,) = self._sealer.seal_batch(
                    [TopicRecord(self._topic, PARTITION, head.seq, timestamp_ms, value)], self._first_seqs
                )
                record = FileRecord(
                    seq=entry.seq,
                    timestamp_ms=timestamp_ms,
                    kind=entry.kind.code,
                    duplicate_of=entry.duplicate_of or 0,
                    value_null=False,
                    event_id=entry.event_id,
                    link=entry.link,
                    key_id=entry.key_id,
                    value=value,
                )
                frame = record.encode()
                segment = self._segment
                written = os.pwrite(segment.fd, frame, segment.end)
                if written != len(frame):
                    os.ftruncate(segment.fd, segment.end)
                    raise FileChainError(
                        f"short write to {segment.path.name}: {written} of {len(frame)} bytes"
                    )
                if self._sync == "always":
                    os.fdatasync(segment.fd)
                else:
                    self._dirty = True
                segment.end += len(frame)
                self._head = ChainHead(entry.seq, entry.seq - 1, entry.link)
                self._timestamp_ms = timestamp_ms
                if entry.kind is EntryKind.EVENT and entry.event_id is not None:
                    self._ids[entry.event_id] = entry.seq
                self.appended += 1
                if segment.end >= self._segment_bytes:
                    self._roll()
            if self._dirty:
                self._wake.set()
        return Appended(entry.seq, entry.kind, entry.duplicate_of, timestamp_ms, entry.link)

    def _first_seqs(self, ids: Collection[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        return {event_id: self._ids[event_id] for event_id in ids if event_id in self._ids}

    def _roll(self) -> None:
        """Start the next segment (under the lock), then apply retention."""
        os.fdatasync(self._segment.fd)
        header = SegmentHeader(
            ledger_id=self._segment.header.ledger_id,
            topic=self._segment.header.topic,
            genesis_key_id=self._segment.header.genesis_key_id,
            prev_seq=self._head.seq,
            prev_link=self._head.link,
        )
        path = self._create_segment(header, first_seq=self._head.seq + 1)
        self._switch(_Segment(path))
        if self._retention_ms is not None:
            from .retention import drop_expired  # only when retention is configured

            drop_expired(
                self.directory,
                key=self._key,
                retention_ms=self._retention_ms,
                now_ms=time.time_ns() // 1_000_000,
            )

    def flush(self) -> None:
        """Put every record this writer appended on disk now."""
        with self._mutex:
            if not self._closed:
                os.fdatasync(self._segment.fd)
                self._dirty = False

    def _sync_loop(self) -> None:
        while True:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(self._group_s)
            self._wake.clear()
            with self._mutex:
                if self._closed:
                    return
                fd = os.dup(self._segment.fd)
                self._dirty = False
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Sync and close; appending afterwards raises :class:`FileChainError`."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                os.fdatasync(self._segment.fd)
            finally:
                self._segment.close()
                os.close(self._lock_fd)
        self._wake.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)


class _FileLock:
    """``flock(LOCK_EX)`` for the duration of a ``with`` block."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
