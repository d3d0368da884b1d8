"""Retention of a file chain: whole segments whose every record is older than the retention
period are dropped behind a retention *anchor* (CHAIN.md §17's message, §20.5's file).

The anchor names the last dropped record (seq, offset, timestamp, link) and is MACed with
the chain key, so ``verify --file`` starts after it. It is written (temporary file, fsync,
rename, fsync of the folder) before any segment is removed; a crash in between leaves an
anchor whose record is still present, which verification accepts when the walk meets it.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from baldur_audit.schemas.chain import SigningKey, anchor_message

from .format import FileChainError, decode_header, parse_frames, segment_first_seq

log = logging.getLogger(__name__)

ANCHOR_FILE = "anchor.json"
ANCHOR_FORMAT = "baldur-audit/file-anchor/v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileAnchor:
    """The last record dropped by retention, MACed so that verification can start after it."""

    ledger_id: str
    key_id: str
    seq: int
    timestamp_ms: int
    link: bytes
    signature: bytes

    @property
    def offset(self) -> int:
        return self.seq - 1

    def message(self) -> bytes:
        return anchor_message(
            ledger_id=self.ledger_id,
            key_id=self.key_id,
            seq=self.seq,
            offset=self.offset,
            timestamp_ms=self.timestamp_ms,
            link=self.link,
        )

    def holds(self, key: SigningKey) -> bool:
        """True when the signature is this anchor's MAC under ``key``."""
        expected = hmac.new(key.secret, self.message(), "sha256").digest()
        return key.key_id == self.key_id and hmac.compare_digest(expected, self.signature)

    def as_dict(self) -> dict[str, object]:
        return {
            "format": ANCHOR_FORMAT,
            "ledger_id": self.ledger_id,
            "key_id": self.key_id,
            "seq": self.seq,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "link": self.link.hex(),
            "signature": self.signature.hex(),
        }


def sign_anchor(key: SigningKey, *, ledger_id: str, seq: int, timestamp_ms: int, link: bytes) -> FileAnchor:
    """An anchor at ``seq`` MACed with ``key``."""
    unsigned = FileAnchor(
        ledger_id=ledger_id, key_id=key.key_id, seq=seq, timestamp_ms=timestamp_ms, link=link, signature=b""
    )
    signature = hmac.new(key.secret, unsigned.message(), "sha256").digest()
    return FileAnchor(
        ledger_id=ledger_id,
        key_id=key.key_id,
        seq=seq,
        timestamp_ms=timestamp_ms,
        link=link,
        signature=signature,
    )


def read_anchor(directory: Path) -> FileAnchor | None:
    """The anchor of the chain in ``directory``, None without one; raises
    :class:`FileChainError` when the file is malformed."""
    path = directory / ANCHOR_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
        if doc.get("format") != ANCHOR_FORMAT:
            raise ValueError("format")
        anchor = FileAnchor(
            ledger_id=str(doc["ledger_id"]),
            key_id=str(doc["key_id"]),
            seq=int(doc["seq"]),
            timestamp_ms=int(doc["timestamp_ms"]),
            link=bytes.fromhex(doc["link"]),
            signature=bytes.fromhex(doc["signature"]),
        )
        if doc.get("offset") != anchor.offset:
            raise ValueError("offset")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FileChainError(f"{path} is not a valid retention anchor") from None
    return anchor


def write_anchor(directory: Path, anchor: FileAnchor) -> None:
    """Replace the anchor file atomically and durably."""
    path = directory / ANCHOR_FILE
    temporary = directory / (ANCHOR_FILE + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(anchor.as_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def drop_expired(directory: Path, *, key: SigningKey, retention_ms: int, now_ms: int) -> int:
    """Drop the oldest segments whose every record is older than ``retention_ms`` (never the
    newest segment), behind an anchor; returns how many were dropped.

    The caller holds the writers' lock. Raises ``OSError``.
    """
    names = sorted(
        (first, directory / name)
        for name in os.listdir(directory)
        if (first := segment_first_seq(name)) is not None
    )
    cutoff = now_ms - retention_ms
    expired: list[Path] = []
    last = None
    for _, path in names[:-1]:
        data = path.read_bytes()
        try:
            header, start = decode_header(data)
        except FileChainError:
            break
        parsed = parse_frames(data, start)
        if parsed.damage is not None or parsed.torn or not parsed.frames:
            break
        newest = parsed.frames[-1].record
        if newest.timestamp_ms >= cutoff:
            break
        expired.append(path)
        last = (header, newest)
    if last is None:
        return 0
    header, newest = last
    write_anchor(
        directory,
        sign_anchor(
            key,
            ledger_id=header.ledger_id,
            seq=newest.seq,
            timestamp_ms=newest.timestamp_ms,
            link=newest.link,
        ),
    )
    for path in expired:
        path.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    log.info("file chain %s: dropped %d expired segments up to seq %d", directory, len(expired), newest.seq)
    return len(expired)
