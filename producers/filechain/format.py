"""The bytes of a file chain (CHAIN.md §20): segment headers, record frames, parsing.

A segment file starts with a header naming the chain (ledger id, topic, genesis key id) and
the entry before its first record (seq and link); records follow, each framed as
``u32 body length | u32 CRC-32(length field) | u32 CRC-32(body) | body``. Integers are
big-endian. Pure code: no I/O. The length has its own CRC so that a damaged length is never
mistaken for a frame that runs past the end of the file (a torn tail, which is cut).

Parsing a segment tells three endings apart: *clean* (the last frame ends at the end of the
data), *torn* (fewer than 12 bytes of a frame head, a frame whose checked length runs past the end
of the data, or nothing but zero bytes from a frame's start to the end: a crash while
appending, cut off by the next writer) and *corrupt* (a complete
frame whose CRC or fields are wrong: never cut, reported by verify as a break).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from baldur_audit.schemas.chain import LINK_BYTES
from baldur_audit.schemas.errors import AuditError

SEGMENT_MAGIC = b"BALDURFC"
FORMAT_VERSION = 1
RECORD_VERSION = 1
#: Partition the link covers (CHAIN.md §5: a v1 chain has one partition).
PARTITION = 0
#: The largest record body; a Kafka record value is at most about 1 MB by default.
MAX_BODY_BYTES = 16 << 20
SEGMENT_SUFFIX = ".bfc"
FRAME_HEAD = struct.Struct(">III")  # body length, crc32(length field), crc32(body)
_LENGTH = struct.Struct(">I")
_HEAD_FIXED = struct.Struct(">8sHQ32s")  # magic, version, prev seq, prev link
_BODY_FIXED = struct.Struct(">BQqBQB16s32sB")  # version seq ts kind dup null event_id link key_id_len
NIL_ID = bytes(16)


class FileChainError(AuditError):
    """A file chain cannot be opened or appended to (damaged, foreign or unreadable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentHeader:
    """What a segment starts with: whose chain it is and the entry just before it."""

    ledger_id: str
    topic: str
    genesis_key_id: str
    prev_seq: int  # the seq before this segment's first record (0 for the first segment)
    prev_link: bytes  # that entry's link (the genesis link when prev_seq is 0)

    def encode(self) -> bytes:
        """The header's bytes, ended by the CRC-32 of everything before it."""
        if len(self.prev_link) != LINK_BYTES:
            raise ValueError("prev_link must be 32 bytes")
        parts = [_HEAD_FIXED.pack(SEGMENT_MAGIC, FORMAT_VERSION, self.prev_seq, self.prev_link)]
        for text in (self.ledger_id, self.topic, self.genesis_key_id):
            raw = text.encode("utf-8")
            parts.append(struct.pack(">H", len(raw)) + raw)
        head = b"".join(parts)
        return head + struct.pack(">I", zlib.crc32(head))


def decode_header(data: bytes) -> tuple[SegmentHeader, int]:
    """The header at the start of ``data`` and its length; raises :class:`FileChainError`."""
    if len(data) < _HEAD_FIXED.size:
        raise FileChainError("segment header is cut short")
    magic, version, prev_seq, prev_link = _HEAD_FIXED.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise FileChainError("not a file chain segment (bad magic)")
    if version != FORMAT_VERSION:
        raise FileChainError(f"segment format version {version} is not supported (expected {FORMAT_VERSION})")
    pos = _HEAD_FIXED.size
    texts = []
    for _ in range(3):
        if pos + 2 > len(data):
            raise FileChainError("segment header is cut short")
        (size,) = struct.unpack_from(">H", data, pos)
        raw = data[pos + 2 : pos + 2 + size]
        if len(raw) != size:
            raise FileChainError("segment header is cut short")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise FileChainError("segment header holds invalid UTF-8") from None
        pos += 2 + size
    if pos + 4 > len(data):
        raise FileChainError("segment header is cut short")
    (crc,) = struct.unpack_from(">I", data, pos)
    if crc != zlib.crc32(data[:pos]):
        raise FileChainError("segment header CRC does not match")
    header = SegmentHeader(
        ledger_id=texts[0], topic=texts[1], genesis_key_id=texts[2], prev_seq=prev_seq, prev_link=prev_link
    )
    return header, pos + 4


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRecord:
    """One sealed record: the link inputs a file chain stores, and the exact value bytes.

    The offset the link covers is ``seq - 1`` (not stored); the digest and view are
    recomputed from ``value``."""

    seq: int
    timestamp_ms: int
    kind: int  # 1 event, 2 rejected, 3 duplicate (CHAIN.md §7)
    duplicate_of: int
    value_null: bool
    event_id: uuid.UUID | None
    link: bytes
    key_id: str
    value: bytes

    @property
    def offset(self) -> int:
        return self.seq - 1

    def encode(self) -> bytes:
        """The framed record: length, CRC-32 of the body, body."""
        raw_key = self.key_id.encode("ascii")
        body = (
            _BODY_FIXED.pack(
                RECORD_VERSION,
                self.seq,
                self.timestamp_ms,
                self.kind,
                self.duplicate_of,
                1 if self.value_null else 0,
                NIL_ID if self.event_id is None else self.event_id.bytes,
                self.link,
                len(raw_key),
            )
            + raw_key
            + self.value
        )
        if len(body) > MAX_BODY_BYTES:
            raise FileChainError(f"record of {len(body)} bytes is larger than {MAX_BODY_BYTES}")
        length = _LENGTH.pack(len(body))
        return length + _LENGTH.pack(zlib.crc32(length)) + _LENGTH.pack(zlib.crc32(body)) + body


def decode_body(body: bytes) -> FileRecord:
    """The record of a frame's body; raises ``ValueError`` when it is malformed."""
    if len(body) < _BODY_FIXED.size:
        raise ValueError("record body is too short")
    version, seq, timestamp_ms, kind, duplicate_of, null, raw_id, link, key_len = _BODY_FIXED.unpack_from(
        body
    )
    if version != RECORD_VERSION:
        raise ValueError(f"record version {version}")
    if null > 1:
        raise ValueError("value_null is neither 0 nor 1")
    start = _BODY_FIXED.size
    raw_key = body[start : start + key_len]
    if len(raw_key) != key_len:
        raise ValueError("key id is cut short")
    return FileRecord(
        seq=seq,
        timestamp_ms=timestamp_ms,
        kind=kind,
        duplicate_of=duplicate_of,
        value_null=bool(null),
        event_id=None if raw_id == NIL_ID else uuid.UUID(bytes=raw_id),
        link=link,
        key_id=raw_key.decode("ascii", errors="replace"),
        value=body[start + key_len :],
    )


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame found in a segment: where it starts and its record."""

    position: int
    record: FileRecord


@dataclass(frozen=True, slots=True)
class Damage:
    """A complete frame that is not what was written (bad CRC, malformed body)."""

    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedFrames:
    """The frames of a segment's data from some position, and how the data ended."""

    frames: list[Frame]
    end: int  # position after the last good frame
    torn: int  # bytes after ``end`` that are a torn tail (0: none)
    damage: Damage | None  # a complete frame that is wrong; nothing after it is read


def parse_frames(data: bytes | memoryview, start: int) -> ParsedFrames:
    """Read frames from ``start`` to the end of ``data``, stopping at the first that is torn
    or damaged (see the module docstring)."""
    frames: list[Frame] = []
    pos, size = start, len(data)
    view = memoryview(data)
    while pos < size:
        left = size - pos
        if left < FRAME_HEAD.size:
            return ParsedFrames(frames, pos, left, None)
        length, length_crc, crc = FRAME_HEAD.unpack_from(view, pos)
        if not any(view[pos:]):
            return ParsedFrames(frames, pos, left, None)  # zero-filled: the write never landed
        if zlib.crc32(view[pos : pos + 4]) != length_crc:
            return ParsedFrames(frames, pos, 0, Damage(pos, "frame length CRC does not match"))
        if length > MAX_BODY_BYTES:
            return ParsedFrames(frames, pos, 0, Damage(pos, f"frame length {length} is too large"))
        if FRAME_HEAD.size + length > left:
            return ParsedFrames(frames, pos, left, None)  # the data ends inside the frame
        body = bytes(view[pos + FRAME_HEAD.size : pos + FRAME_HEAD.size + length])
        if zlib.crc32(body) != crc:
            if not any(view[pos + FRAME_HEAD.size :]):
                return ParsedFrames(frames, pos, left, None)  # header landed, body did not
            return ParsedFrames(frames, pos, 0, Damage(pos, "frame CRC does not match"))
        try:
            record = decode_body(body)
        except ValueError as exc:
            return ParsedFrames(frames, pos, 0, Damage(pos, f"malformed record: {exc}"))
        frames.append(Frame(pos, record))
        pos += FRAME_HEAD.size + length
    return ParsedFrames(frames, pos, 0, None)


def segment_name(first_seq: int) -> str:
    """The file name of the segment whose first record is ``first_seq``."""
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def segment_first_seq(name: str) -> int | None:
    """The first seq a segment file name gives, or None for another file."""
    if not name.endswith(SEGMENT_SUFFIX) or len(name) != 20 + len(SEGMENT_SUFFIX):
        return None
    digits = name[:20]
    return int(digits) if digits.isdigit() else None
