"""Reading a file chain without writing to it: segments, records, anchor and status.

Used by ``verify``/``log``/``status``/``ship --file`` on the ledger side. Never takes the
writers' lock and never cuts anything: a torn tail is reported, not repaired.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .format import FileChainError, Frame, ParsedFrames, SegmentHeader, decode_header, parse_frames
from .retention import ANCHOR_FILE, FileAnchor, read_anchor
from .writer import list_segments


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """One segment as read: its name's first seq, header, frames and how it ended."""

    path: Path
    first_seq: int
    header: SegmentHeader | None  # None when the header itself is unreadable
    header_error: str | None
    parsed: ParsedFrames
    size: int


def scan_segment(path: Path, first_seq: int) -> SegmentScan:
    """Read and parse one segment file; raises ``OSError`` when it cannot be read."""
    data = path.read_bytes()
    try:
        header, start = decode_header(data)
    except FileChainError as exc:
        return SegmentScan(path, first_seq, None, str(exc), ParsedFrames([], 0, 0, None), len(data))
    return SegmentScan(path, first_seq, header, None, parse_frames(data, start), len(data))


def scan_chain(directory: Path) -> Iterator[SegmentScan]:
    """Every segment of the chain in ``directory``, oldest first (one in memory at a time).

    Raises :class:`FileChainError` when ``directory`` is not a file chain.
    """
    if not directory.is_dir():
        raise FileChainError(f"{directory} is not a directory")
    segments = list_segments(directory)
    if not segments and not (directory / ANCHOR_FILE).exists():
        raise FileChainError(f"{directory} holds no file chain (no segment files)")
    for first_seq, path in segments:
        yield scan_segment(path, first_seq)


def iter_records(directory: Path) -> Iterator[Frame]:
    """The good frames of the chain in order (stops at a segment's damage or torn tail)."""
    for scan in scan_chain(directory):
        yield from scan.parsed.frames


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """What ``status --file`` shows."""

    directory: str
    ledger_id: str | None
    topic: str | None
    segments: int
    bytes: int
    first_seq: int | None
    head_seq: int
    last_append_ms: int | None
    torn_bytes: int
    anchor: FileAnchor | None

    def as_dict(self) -> dict[str, object]:
        return {
            "directory": self.directory,
            "ledger_id": self.ledger_id,
            "topic": self.topic,
            "segments": self.segments,
            "bytes": self.bytes,
            "first_seq": self.first_seq,
            "head_seq": self.head_seq,
            "last_append_ms": self.last_append_ms,
            "torn_bytes": self.torn_bytes,
            "anchor": None if self.anchor is None else self.anchor.as_dict(),
        }


def chain_status(directory: Path) -> ChainStatus:
    """Head, segments, size and last append time; raises :class:`FileChainError`/``OSError``.

    Reads the headers of all segments and the records of the newest one only."""
    if not directory.is_dir():
        raise FileChainError(f"{directory} is not a directory")
    segments = list_segments(directory)
    anchor = read_anchor(directory)
    if not segments:
        raise FileChainError(f"{directory} holds no file chain (no segment files)")
    total = sum(os.path.getsize(path) for _, path in segments)
    last = scan_segment(segments[-1][1], segments[-1][0])
    if last.header is None:
        raise FileChainError(f"{last.path.name}: {last.header_error}")
    frames = last.parsed.frames
    head_seq = frames[-1].record.seq if frames else last.header.prev_seq
    last_ms = frames[-1].record.timestamp_ms if frames else None
    return ChainStatus(
        directory=str(directory),
        ledger_id=last.header.ledger_id,
        topic=last.header.topic,
        segments=len(segments),
        bytes=total,
        first_seq=segments[0][0],
        head_seq=head_seq,
        last_append_ms=last_ms,
        torn_bytes=last.parsed.torn,
        anchor=anchor,
    )
