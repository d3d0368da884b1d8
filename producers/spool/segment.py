"""The bytes of a spool segment file: header, record framing, parsing with resynchronisation.

A segment starts with a 16-byte header: ``BALDURSP``, the format version (u32) and the
CRC32 of those 12 bytes. Records follow, each framed as
``magic(4) | length(u32) | crc32(length field + body)(u32) | body`` with
``body = version(u8) | event id(16) | header count(u16) |
(name length(u16) name value length(u32) value)* | value``. All integers are big-endian.

The magic lets a reader find the next record after damaged bytes; the CRC tells a whole
record from a damaged or cut-short one. Pure code: no I/O.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from typing import NamedTuple

from baldur_audit.schemas.errors import AuditError

#: The largest record body (encoded event plus headers); Kafka's own default limit is 1 MB.
MAX_BODY_BYTES = 16 << 20
SEGMENT_HEAD = struct.Struct(">8sII")  # magic, version, crc32 of the first 12 bytes
SEGMENT_MAGIC = b"BALDURSP"
FRAME_HEAD = struct.Struct(">4sII")  # magic, body length, crc32(length field + body)
FRAME_MAGIC = b"\xb5\x9a\x1d\x5c"
VERSION = 1
_BODY_HEAD = struct.Struct(">B16sH")  # body version, event id, header count

Headers = list[tuple[str, bytes]] | None


class RecordTooLarge(AuditError):
    """An event (with its headers) is larger than a spool record may be."""


def segment_header() -> bytes:
    """The 16 bytes a segment file starts with."""
    head = SEGMENT_MAGIC + struct.pack(">I", VERSION)
    return head + struct.pack(">I", zlib.crc32(head))


def valid_segment_header(data: bytes) -> bool:
    if len(data) < SEGMENT_HEAD.size:
        return False
    magic, version, crc = SEGMENT_HEAD.unpack_from(data, 0)
    return magic == SEGMENT_MAGIC and version == VERSION and crc == zlib.crc32(data[:12])


def encode_record(event_id: uuid.UUID, value: bytes, headers: Headers) -> bytes:
    """The framed bytes of one record; raises :class:`RecordTooLarge`."""
    parts = [_BODY_HEAD.pack(VERSION, event_id.bytes, len(headers or ()))]
    for name, header_value in headers or ():
        raw_name = name.encode("utf-8")
        parts.append(struct.pack(">H", len(raw_name)) + raw_name)
        parts.append(struct.pack(">I", len(header_value)) + bytes(header_value))
    parts.append(value)
    body = b"".join(parts)
    if len(body) > MAX_BODY_BYTES:
        raise RecordTooLarge(
            f"event {event_id} is too large for the spool: {len(body)} bytes, at most {MAX_BODY_BYTES}"
        )
    length = struct.pack(">I", len(body))
    return FRAME_MAGIC + length + struct.pack(">I", zlib.crc32(length + body)) + body


def decode_body(body: bytes) -> tuple[uuid.UUID, bytes, Headers]:
    version, raw_id, count = _BODY_HEAD.unpack_from(body, 0)
    if version != VERSION:
        raise ValueError(f"record version {version}")
    pos = _BODY_HEAD.size
    headers: list[tuple[str, bytes]] = []
    for _ in range(count):
        (name_len,) = struct.unpack_from(">H", body, pos)
        name = body[pos + 2 : pos + 2 + name_len].decode("utf-8")
        pos += 2 + name_len
        (value_len,) = struct.unpack_from(">I", body, pos)
        headers.append((name, body[pos + 4 : pos + 4 + value_len]))
        pos += 4 + value_len
    if pos > len(body):
        raise ValueError("headers run past the record")
    return uuid.UUID(bytes=raw_id), body[pos:], headers or None


class Frame(NamedTuple):
    start: int
    end: int
    body: bytes


class Damage(NamedTuple):
    start: int
    end: int
    torn: bool  # a cut-short write at the end of the data (not a damaged complete record)


def valid_frame_at(buf: bytes, pos: int) -> int:
    """The end of the valid frame starting at ``pos`` in ``buf``, or -1."""
    if len(buf) - pos < FRAME_HEAD.size:
        return -1
    magic, length, crc = FRAME_HEAD.unpack_from(buf, pos)
    end = pos + FRAME_HEAD.size + length
    if magic != FRAME_MAGIC or length > MAX_BODY_BYTES or end > len(buf):
        return -1
    body_crc = zlib.crc32(buf[pos + FRAME_HEAD.size : end], zlib.crc32(buf[pos + 4 : pos + 8]))
    return end if body_crc == crc else -1


def parse(buf: bytes, base: int, final: bool) -> tuple[list[Frame | Damage], int]:
    """Frames and damaged ranges in ``buf`` (which starts at file offset ``base``).

    With ``final`` false the buffer may end mid-frame: parsing stops before that frame (the
    caller reads on from there) or before damage (the caller re-reads to the segment's end
    with ``final`` true, so the resynchronisation sees everything). Returns the items and how
    many bytes were consumed.
    """
    items: list[Frame | Damage] = []
    pos = 0
    while pos < len(buf):
        end = valid_frame_at(buf, pos)
        if end >= 0:
            items.append(Frame(base + pos, base + end, buf[pos + FRAME_HEAD.size : end]))
            pos = end
            continue
        if not final:
            rest = len(buf) - pos
            if rest < FRAME_HEAD.size:
                break
            magic, length, _ = FRAME_HEAD.unpack_from(buf, pos)
            if magic == FRAME_MAGIC and pos + FRAME_HEAD.size + length > len(buf):
                break  # a frame that continues past this chunk
            break  # damage: resynchronise on the whole rest of the segment
        nxt = buf.find(FRAME_MAGIC, pos + 1)
        while nxt >= 0 and valid_frame_at(buf, nxt) < 0:
            nxt = buf.find(FRAME_MAGIC, nxt + 1)
        if nxt >= 0:
            items.append(Damage(base + pos, base + nxt, torn=False))
            pos = nxt
            continue
        tail = buf[pos:]
        torn = not tail.strip(b"\0")
        if len(tail) >= 4 and tail[:4] == FRAME_MAGIC:
            if len(tail) < FRAME_HEAD.size:
                torn = True
            else:
                (length,) = struct.unpack_from(">I", tail, 4)
                torn = torn or FRAME_HEAD.size + length > len(tail)
        elif len(tail) < 4 and FRAME_MAGIC.startswith(tail):
            torn = True
        items.append(Damage(base + pos, base + len(buf), torn=torn))
        pos = len(buf)
    return items, pos
