"""A durable disk spool for audit events the broker has not acknowledged yet.

Layout: one directory per (topic, slot), mode 0700, holding

- ``lock``: an exclusive ``flock`` held for as long as a process uses the spool, so two
  processes never write or drain the same files (a second one takes the next *slot*);
- ``<20-digit number>.seg``: append-only segment files (mode 0600) in the format of
  :mod:`.segment`: CRC-framed records, each holding the exact encoded event and Kafka
  headers the trail produces — already redacted and masked, never the raw input;
- ``cursor``: the drain position, ``BALDURCU | segment(u64) | offset(u64) | crc32``,
  replaced atomically (write, fsync, rename, fsync of the directory).

Guarantees:

- :meth:`DiskSpool.append` returns only after the record and the file size are on disk
  (``fdatasync``; the directory too when it created a segment). Concurrent appends share
  one ``fdatasync`` (group commit). A failed ``fdatasync`` breaks the spool for good (the
  kernel may have dropped the dirty pages): later appends raise :class:`SpoolError`.
- A record torn by a crash during its write (header or body cut short, or a zero-filled
  tail) can only be the last one of the last segment: it is detected by the framing, logged
  and truncated away when the spool is opened. It was never acknowledged to a caller.
- A damaged *complete* record (CRC mismatch, bad magic) anywhere else is never skipped
  silently and never crashes the reader: the bytes are logged at ERROR with segment and
  offsets and copied to ``corrupt-<segment>-<offset>.bin``; the reader resynchronises on the
  next valid frame, so the records after the damage are still sent.
- The cursor moves only over records the broker acknowledged (the drainer commits it) and
  is persisted at most every few hundred milliseconds: after a crash, records acknowledged
  since the last persist are sent again (the ledger seals them as *duplicates*), never lost.
- Segments wholly behind the persisted cursor are deleted; a spool closed empty removes its
  files and directory.
- :meth:`DiskSpool.append` raises :class:`SpoolFull` when the undelivered records would
  exceed ``max_bytes`` (disk use stays below ``max_bytes`` plus one segment of drained
  records), and on ``ENOSPC``/``EDQUOT``; nothing is dropped to make room.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import struct
import threading
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from baldur_audit.schemas.errors import AuditError, ConfigError

from .segment import (
    SEGMENT_HEAD,
    Damage,
    Frame,
    Headers,
    RecordTooLarge,
    decode_body,
    encode_record,
    parse,
    segment_header,
    valid_segment_header,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_SEGMENT_BYTES = 16 << 20

_CURSOR = struct.Struct(">8sQQI")  # magic, segment, offset, crc32 of the first 24 bytes
_CURSOR_MAGIC = b"BALDURCU"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_READ_CHUNK = 1 << 20
_LOCK = "lock"
_CURSOR_FILE = "cursor"


class SpoolError(AuditError):
    """The spool could not store or read an event (I/O error, damaged directory)."""


class SpoolFull(SpoolError):
    """The spool reached its size bound (or the disk is full): the event was not accepted."""


class SpoolLocked(SpoolError):
    """Another process (or trail) holds this spool directory."""


class SpoolPosition(NamedTuple):
    """A byte position in the spool: segment number and offset in that segment."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled event: the exact bytes and headers to produce, and where it lies."""

    event_id: uuid.UUID
    value: bytes
    headers: Headers
    start: SpoolPosition
    end: SpoolPosition

    @property
    def size(self) -> int:
        return self.end.offset - self.start.offset


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or check an existing one; raises :class:`ConfigError`."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # not a directory: said below
    except OSError as exc:
        raise ConfigError(f"spool directory {path}: {exc.strerror or exc}") from None
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"spool directory {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"spool directory {path}: not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"spool directory {path} belongs to another user (uid {info.st_uid})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


class DiskSpool:
    """One locked spool directory; see the module docstring for the format and guarantees.

    Appends may come from any thread; reading, committing and persisting the cursor are done
    by one drainer thread at a time.
    """

    def __init__(self, directory: Path, lock_fd: int, *, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock_fd = lock_fd
        self._pid = os.getpid()  # the flock is shared with a forked child: see _check_usable
        self._lock = threading.Lock()  # segment table, counters, the write fd
        self._sync_lock = threading.Lock()  # fdatasync; taken before _lock when both are held
        self._sizes: dict[int, int] = {}  # segment number -> bytes written (whole frames)
        self._fd: int | None = None  # append fd of the active (last) segment
        self._write_seq = 0
        self._durable_seq = 0
        self._pending = 0
        self._pending_bytes = 0
        self._cursor: SpoolPosition | None = None
        self._persisted: SpoolPosition | None = None
        self._floor = 0  # new segments get numbers above this (never behind the cursor)
        self._broken: str | None = None
        self._read_fds: dict[int, int] = {}
        self._damage_seen: set[tuple[int, int]] = set()
        self.corrupt_bytes = 0
        self.torn_bytes = 0
        self.recovered = 0

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> DiskSpool:
        """Lock and recover the spool in ``directory`` (created 0700 if missing).

        Raises :class:`SpoolLocked` when another holder has it, :class:`ConfigError` for an
        unusable directory, :class:`SpoolError` on an I/O error while recovering.
        """
        if max_bytes <= 0 or segment_bytes <= SEGMENT_HEAD.size:
            raise ConfigError("spool: max_bytes and segment_bytes must be positive")
        path = Path(directory)
        ensure_private_dir(path)
        lock_fd = cls._take_lock(path)
        spool = cls(path, lock_fd, max_bytes=max_bytes, segment_bytes=segment_bytes)
        try:
            spool._recover()
        except OSError as exc:
            spool._release()
            raise SpoolError(f"spool {path}: cannot recover: {exc.strerror or exc}") from None
        except BaseException:
            spool._release()
            raise
        return spool

    @staticmethod
    def _take_lock(path: Path) -> int:
        lock_path = path / _LOCK
        for _ in range(5):
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the directory was removed by a closing owner
                ensure_private_dir(path)
                continue
            except OSError as exc:
                raise ConfigError(f"spool {path}: cannot open the lock file: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpoolLocked(f"spool {path} is in use by another process or trail") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # we locked a lock file its owner had just removed: take the new one
        raise SpoolLocked(f"spool {path}: could not take the lock")

    def _recover(self) -> None:
        names = sorted(int(m.group(1)) for m in map(_SEGMENT_NAME.match, os.listdir(self.directory)) if m)
        cursor = self._read_cursor()
        removed = False
        if cursor is not None:
            self._floor = cursor.segment
            for number in [n for n in names if n < cursor.segment]:
                os.unlink(self._segment_path(number))  # drained; its deletion was interrupted
                removed = True
            names = [n for n in names if n >= cursor.segment]
        for index, number in enumerate(names):
            last = index == len(names) - 1
            start = SEGMENT_HEAD.size
            if cursor is not None and number == cursor.segment:
                start = max(start, cursor.offset)
            size = self._recover_segment(number, start, last)
            if size is None:
                removed = True
                continue
            self._sizes[number] = size
            if cursor is not None and number == cursor.segment and cursor.offset > size:
                logger.warning(
                    "spool %s: cursor at %d beyond the end of segment %d (%d bytes); resuming at its end",
                    self.directory,
                    cursor.offset,
                    number,
                    size,
                )
                cursor = SpoolPosition(number, size)
        if removed:
            _fsync_dir(self.directory)
        self._cursor = self._persisted = cursor
        if self._sizes:
            self._floor = max(self._floor, max(self._sizes))
            newest = max(self._sizes)
            if self._sizes[newest] < self.segment_bytes:
                self._fd = os.open(self._segment_path(newest), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.recovered = self._pending
        if self._pending:
            logger.warning(
                "spool %s: %d undelivered audit events (%d bytes) found; they will be sent",
                self.directory,
                self._pending,
                self._pending_bytes,
            )

    def _recover_segment(self, number: int, start: int, last: bool) -> int | None:
        """Validate one segment, count its undrained records; returns its size or None if
        the file was removed (a segment whose creation a crash interrupted)."""
        path = self._segment_path(number)
        data = path.read_bytes()
        if not valid_segment_header(data):
            if last and len(data) <= SEGMENT_HEAD.size:
                os.unlink(path)  # created but its header never reached the disk: no records
                return None
            self._quarantine(number, 0, data)
            logger.error(
                "spool %s: segment %d has a damaged header; its %d bytes were moved "
                "to quarantine and are NOT sent",
                self.directory,
                number,
                len(data),
            )
            os.unlink(path)
            return None
        items, _ = parse(data[start:], start, final=True)
        size = len(data)
        for item in items:
            if isinstance(item, Frame):
                self._pending += 1
                self._pending_bytes += item.end - item.start
                continue
            if last and item.end == len(data):
                if not item.torn:
                    self._report_damage(number, item.start, data[item.start : item.end])
                else:
                    self.torn_bytes += item.end - item.start
                    logger.warning(
                        "spool %s: ignored a torn write of %d bytes at the end of "
                        "segment %d (an append a crash interrupted)",
                        self.directory,
                        item.end - item.start,
                        number,
                    )
                with open(path, "r+b") as handle:  # appends must follow the last whole record
                    handle.truncate(item.start)
                    os.fsync(handle.fileno())
                size = item.start
            else:
                self._report_damage(number, item.start, data[item.start : item.end])
        return size

    def _report_damage(self, number: int, start: int, data: bytes) -> None:
        if (number, start) in self._damage_seen:
            return
        self._damage_seen.add((number, start))
        self.corrupt_bytes += len(data)
        where = self._quarantine(number, start, data)
        logger.error(
            "spool %s: segment %d bytes %d..%d are damaged (CRC or framing) and cannot "
            "be sent; copied to %s; the records after them are kept",
            self.directory,
            number,
            start,
            start + len(data),
            where,
        )

    def _quarantine(self, number: int, start: int, data: bytes) -> str:
        path = self.directory / f"corrupt-{number:020d}-{start}.bin"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            return f"nowhere ({exc.strerror})"
        return path.name

    def _read_cursor(self) -> SpoolPosition | None:
        try:
            raw = (self.directory / _CURSOR_FILE).read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) == _CURSOR.size:
            magic, segment, offset, crc = _CURSOR.unpack(raw)
            if magic == _CURSOR_MAGIC and crc == zlib.crc32(raw[:24]):
                return SpoolPosition(segment, offset)
        logger.warning(
            "spool %s: the cursor file is damaged; sending every record again "
            "(the ledger seals repeats as duplicates)",
            self.directory,
        )
        return None

    # -- state -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records not yet acknowledged (committed) by the drainer."""
        with self._lock:
            return self._pending

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"{number:020d}.seg"

    # -- appending -------------------------------------------------------------------------
    def append(self, event_id: uuid.UUID, value: bytes, headers: Headers = None) -> None:
        """Store one record durably (fsync'd before returning).

        Raises :class:`SpoolFull` at the size bound or on a full disk, :class:`SpoolError`
        on any other I/O error (the event was then not accepted).
        """
        try:
            frame = encode_record(event_id, value, headers)
        except RecordTooLarge as exc:
            raise SpoolError(str(exc)) from None
        while True:
            with self._lock:
                self._check_usable()
                if self._pending_bytes + len(frame) > self.max_bytes:
                    raise SpoolFull(
                        f"spool {self.directory} is full: {self._pending} events "
                        f"({self._pending_bytes} bytes) wait for kafka, the bound "
                        f"is {self.max_bytes} bytes"
                    )
                fd = self._fd
                if fd is not None and self._sizes[max(self._sizes)] < self.segment_bytes:
                    number = max(self._sizes)
                    size = self._sizes[number]
                    try:
                        _write_all(fd, frame)
                    except OSError as exc:
                        self._undo_write(fd, size)
                        raise self._io_error(exc, "write") from None
                    self._sizes[number] = size + len(frame)
                    self._pending += 1
                    self._pending_bytes += len(frame)
                    self._write_seq += 1
                    seq = self._write_seq
                    break
            self._rotate()
        self._sync(seq)

    def _undo_write(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)  # never leave a partial frame for later appends to follow
        except OSError:
            self._broken = "a failed write could not be undone"

    def _io_error(self, exc: OSError, what: str) -> SpoolError:
        detail = f"spool {self.directory}: {what} failed: {exc.strerror or exc}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return SpoolFull(detail)
        return SpoolError(detail)

    def _check_usable(self) -> None:
        if os.getpid() != self._pid:
            raise SpoolError(
                f"spool {self.directory} was opened by process {self._pid}: a "
                "forked process must create its own trail"
            )
        if self._broken is not None:
            raise SpoolError(f"spool {self.directory} is unusable: {self._broken}")
        if self._lock_fd < 0:
            raise SpoolError(f"spool {self.directory} is closed")

    def _rotate(self) -> None:
        """Start a new segment (the active one is full or there is none)."""
        with self._sync_lock, self._lock:
            self._check_usable()
            if self._fd is not None and self._sizes[max(self._sizes)] < self.segment_bytes:
                return  # another thread rotated meanwhile
            number = max([self._floor, *self._sizes]) + 1
            path = self._segment_path(number)
            head = segment_header()
            try:
                if self._fd is not None:
                    os.fdatasync(self._fd)  # earlier appends still waiting for their sync
                    os.close(self._fd)
                    self._fd = None
                    self._durable_seq = self._write_seq
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    _write_all(fd, head)
                    os.fsync(fd)
                    _fsync_dir(self.directory)
                except OSError:
                    os.close(fd)
                    os.unlink(path)
                    raise
            except OSError as exc:
                raise self._io_error(exc, f"creating segment {number}") from None
            self._fd = fd
            self._sizes[number] = len(head)
            self._floor = number

    def _sync(self, seq: int) -> None:
        with self._sync_lock:
            with self._lock:
                if self._durable_seq >= seq:
                    return  # another append's fdatasync covered this record
                self._check_usable()
                fd, target = self._fd, self._write_seq
            if fd is None:  # cannot happen: closing and rotating take _sync_lock first
                raise SpoolError(f"spool {self.directory}: no active segment to sync")
            try:
                os.fdatasync(fd)
            except OSError as exc:
                with self._lock:
                    self._broken = f"fdatasync failed ({exc.strerror})"
                raise self._io_error(exc, "fdatasync") from None
            with self._lock:
                self._durable_seq = max(self._durable_seq, target)

    # -- draining --------------------------------------------------------------------------
    def start(self) -> SpoolPosition:
        """Where reading starts: the cursor, or the beginning of the oldest segment."""
        with self._lock:
            if self._cursor is not None and (not self._sizes or self._cursor.segment >= min(self._sizes)):
                return self._cursor
            if self._sizes:
                return SpoolPosition(min(self._sizes), SEGMENT_HEAD.size)
            return SpoolPosition(self._floor + 1, SEGMENT_HEAD.size)

    def read(self, position: SpoolPosition, *, max_records: int) -> tuple[list[SpoolRecord], SpoolPosition]:
        """Up to ``max_records`` records from ``position`` in spool order, and the position
        after them. Damaged ranges are reported (once) and skipped. Raises
        :class:`SpoolError` on an I/O error."""
        records: list[SpoolRecord] = []
        try:
            while len(records) < max_records:
                with self._lock:
                    sizes = dict(self._sizes)
                numbers = sorted(n for n in sizes if n >= position.segment)
                if not numbers:
                    break
                if numbers[0] != position.segment:
                    position = SpoolPosition(numbers[0], SEGMENT_HEAD.size)
                end = sizes[position.segment]
                if position.offset >= end:
                    if position.segment == numbers[-1]:
                        break
                    position = SpoolPosition(numbers[1], SEGMENT_HEAD.size)
                    continue
                position = self._read_chunk(position, end, max_records, records)
        except OSError as exc:
            raise SpoolError(f"spool {self.directory}: read failed: {exc.strerror or exc}") from None
        return records, position

    def _read_chunk(
        self, position: SpoolPosition, end: int, room: int, out: list[SpoolRecord]
    ) -> SpoolPosition:
        number, offset = position
        fd = self._read_fds.get(number)
        if fd is None:
            fd = self._read_fds[number] = os.open(self._segment_path(number), os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(fd, min(end - offset, _READ_CHUNK), offset)
        items, _ = parse(data, offset, final=offset + len(data) >= end)
        if not items:  # a record longer than the chunk, or damage: parse to the segment's end
            data = os.pread(fd, end - offset, offset)
            items, _ = parse(data, offset, final=True)
        if not items:
            logger.error(
                "spool %s: segment %d is shorter than written (%d bytes expected); "
                "records after offset %d are lost",
                self.directory,
                number,
                end,
                offset,
            )
            return SpoolPosition(number, end)
        for item in items:
            chunk = data[item.start - offset : item.end - offset]
            if isinstance(item, Damage):
                self._report_damage(number, item.start, chunk)
                position = SpoolPosition(number, item.end)
                continue
            if len(out) >= room:
                break
            try:
                event_id, value, headers = decode_body(item.body)
            except (ValueError, UnicodeDecodeError, struct.error):
                self._report_damage(number, item.start, chunk)
                position = SpoolPosition(number, item.end)
                continue
            out.append(
                SpoolRecord(
                    event_id,
                    value,
                    headers,
                    SpoolPosition(number, item.start),
                    SpoolPosition(number, item.end),
                )
            )
            position = SpoolPosition(number, item.end)
        return position

    def commit(self, position: SpoolPosition, *, records: int, nbytes: int) -> None:
        """The broker acknowledged everything before ``position``: ``records`` records of
        ``nbytes`` bytes in all leave the pending count (persisted by :meth:`persist`)."""
        with self._lock:
            self._cursor = position
            self._pending = max(0, self._pending - records)
            self._pending_bytes = max(0, self._pending_bytes - nbytes)

    def persist(self) -> None:
        """Write the cursor (if it moved) and delete the segments wholly behind it.

        Raises :class:`SpoolError` on an I/O error (the old cursor then stays in force).
        """
        with self._lock:
            cursor = self._cursor
            if cursor is None or cursor == self._persisted:
                return
        raw = _CURSOR_MAGIC + struct.pack(">QQ", cursor.segment, cursor.offset)
        raw += struct.pack(">I", zlib.crc32(raw))
        temporary = self.directory / (_CURSOR_FILE + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, raw)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.directory / _CURSOR_FILE)
            _fsync_dir(self.directory)
        except OSError as exc:
            raise SpoolError(
                f"spool {self.directory}: cannot persist the cursor: {exc.strerror or exc}"
            ) from None
        with self._lock:
            self._persisted = cursor
            self._floor = max(self._floor, cursor.segment)
            behind = cursor.segment
            if cursor.offset >= self._sizes.get(cursor.segment, 0) and any(
                n > cursor.segment for n in self._sizes
            ):
                behind += 1  # the cursor's segment is read to its end and closed for appends
        self._delete_before(behind)

    def _delete_before(self, segment: int) -> None:
        with self._sync_lock, self._lock:
            drained = [n for n in self._sizes if n < segment]
            for number in drained:
                del self._sizes[number]
                fd = self._read_fds.pop(number, None)
                if fd is not None:
                    os.close(fd)
                try:
                    os.unlink(self._segment_path(number))
                except FileNotFoundError:
                    pass
        if drained:
            try:
                _fsync_dir(self.directory)
            except OSError as exc:
                logger.warning("spool %s: fsync of the directory failed: %s", self.directory, exc.strerror)

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> int:
        """Persist the cursor and release the lock; an empty spool removes its files.

        Returns how many records are left for the next holder. Never raises for I/O errors
        (they are logged: the records stay on disk).
        """
        if self._lock_fd < 0:
            return 0
        try:
            self.persist()
        except SpoolError as exc:
            logger.error("%s", exc)
        with self._sync_lock, self._lock:
            left = self._pending
            if self._fd is not None:
                try:
                    os.fdatasync(self._fd)  # appends still waiting for their own sync
                    self._durable_seq = self._write_seq
                except OSError as exc:
                    self._broken = f"fdatasync failed ({exc.strerror})"
                    logger.error("spool %s: %s", self.directory, self._broken)
                os.close(self._fd)
                self._fd = None
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            if left == 0 and self._broken is None:
                self._remove_files()
            self._release()
        if left == 0:
            try:
                self.directory.rmdir()  # only if empty: quarantined bytes or a new holder stay
            except OSError:
                pass
        return left

    def _remove_files(self) -> None:
        try:
            for number in list(self._sizes):
                self._segment_path(number).unlink(missing_ok=True)
            self._sizes.clear()
            (self.directory / _CURSOR_FILE).unlink(missing_ok=True)
            (self.directory / (_CURSOR_FILE + ".tmp")).unlink(missing_ok=True)
            (self.directory / _LOCK).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("spool %s: could not remove drained files: %s", self.directory, exc.strerror)

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
