"""The file chain's container: framing, torn tails (cut with a warning, never tampering),
damaged records (located at their seq), several processes appending, retention anchors."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from baldur_audit.consumers.verification.file_chain import verify_file_chain
from baldur_audit.producers.filechain import FileChainError, FileChainWriter, read_anchor
from baldur_audit.producers.filechain.format import FileRecord, SegmentHeader, decode_header, parse_frames
from baldur_audit.producers.filechain.reader import scan_segment
from baldur_audit.producers.filechain.writer import list_segments
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.codec import encode_event
from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

KEY = SigningKey.derive(bytes(range(32)))
KEYS = {KEY.key_id: KEY}
TOPIC = "baldur.audit.events"


def event_bytes(i: int) -> bytes:
    return encode_event(
        ChangeEvent(
            event_id=uuid7(1_700_000_000_000 + i, os.urandom(10)),
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            actor=Actor(id=f"user-{i % 7}", type="user"),
            action="update",
            target=f"svc.key.{i}",
            source="api",
            after=f'{{"n":{i}}}',
        )
    )


def writer(directory: Path, **options: object) -> FileChainWriter:
    return FileChainWriter(directory, key=KEY, topic=TOPIC, **options)  # type: ignore[arg-type]


def only_segment(directory: Path) -> Path:
    ((_, path),) = list_segments(directory)
    return path


def test_header_and_record_round_trip() -> None:
    header = SegmentHeader(
        ledger_id="l", topic="t", genesis_key_id=KEY.key_id, prev_seq=7, prev_link=b"\x01" * 32
    )
    data = header.encode()
    assert decode_header(data + b"rest") == (header, len(data))
    record = FileRecord(
        seq=8,
        timestamp_ms=1,
        kind=1,
        duplicate_of=0,
        value_null=False,
        event_id=None,
        link=b"\x02" * 32,
        key_id=KEY.key_id,
        value=b"v",
    )
    parsed = parse_frames(record.encode(), 0)
    assert [f.record for f in parsed.frames] == [record] and parsed.torn == 0 and parsed.damage is None
    with pytest.raises(FileChainError, match="CRC"):
        decode_header(data[:-1] + bytes([data[-1] ^ 1]))


def test_sealed_records_verify_and_a_repeated_event_id_is_a_duplicate(tmp_path: Path) -> None:
    chain = writer(tmp_path)
    value = event_bytes(1)
    assert chain.append(value).kind.label == "event"
    assert chain.append(event_bytes(2)).seq == 2
    again = chain.append(value)
    assert again.kind.label == "duplicate" and again.duplicate_of == 1
    chain.close()
    report = verify_file_chain(tmp_path, KEYS)
    assert report.intact and report.report.kinds["duplicate"] == 1 and report.report.entries == 3
    other = SigningKey.derive(b"another key of at least 32 bytes....")
    unknown = verify_file_chain(tmp_path, {other.key_id: other}).report.first_break
    assert unknown is not None and (unknown.seq, unknown.kind) == (1, "unverifiable")


def test_a_torn_tail_at_every_byte_of_the_last_record_is_cut_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "source"
    chain = writer(source)
    for i in range(3):
        chain.append(event_bytes(i))
    chain.close()
    segment = only_segment(source)
    full = segment.read_bytes()
    frames = scan_segment(segment, 1).parsed.frames
    last_start = frames[-1].position
    for keep in range(1, len(full) - last_start):
        copy = tmp_path / f"cut-{keep}"
        shutil.copytree(source, copy)
        only_segment(copy).write_bytes(full[: last_start + keep])
        report = verify_file_chain(copy, KEYS)
        assert report.intact, (keep, report.report.first_break)
        assert report.report.entries == 2 and report.torn_bytes == keep
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="baldur_audit.producers.filechain"):
            reopened = writer(copy)
        assert any("torn record" in r.getMessage() for r in caplog.records), keep
        assert os.path.getsize(only_segment(copy)) == last_start
        assert reopened.append(event_bytes(99)).seq == 3
        reopened.close()
        assert verify_file_chain(copy, KEYS).report.entries == 3
        shutil.rmtree(copy)


def test_a_zero_filled_tail_is_torn_not_tampering(tmp_path: Path) -> None:
    chain = writer(tmp_path)
    chain.append(event_bytes(1))
    chain.close()
    with open(only_segment(tmp_path), "ab") as handle:
        handle.write(bytes(300))
    report = verify_file_chain(tmp_path, KEYS)
    assert report.intact and report.torn_bytes == 300


def test_a_flipped_byte_anywhere_in_a_middle_record_is_a_break_at_its_seq(tmp_path: Path) -> None:
    source = tmp_path / "source"
    chain = writer(source)
    for i in range(5):
        chain.append(event_bytes(i))
    chain.close()
    segment = only_segment(source)
    full = segment.read_bytes()
    frames = scan_segment(segment, 1).parsed.frames
    start, end = frames[2].position, frames[3].position  # seq 3
    for position in range(start, end):
        damaged = bytearray(full)
        damaged[position] ^= 0x40
        segment.write_bytes(bytes(damaged))
        report = verify_file_chain(source, KEYS)
        brk = report.report.first_break
        assert brk is not None and brk.seq == 3 and brk.kind == "modified", (position - start, brk)
    segment.write_bytes(full)
    with pytest.raises(FileChainError):  # a writer never cuts or appends after a damaged record
        damaged = bytearray(full)
        damaged[frames[4].position + 20] ^= 1
        segment.write_bytes(bytes(damaged))
        writer(source)


def test_segments_roll_over_and_verify_across_them(tmp_path: Path) -> None:
    chain = writer(tmp_path, segment_bytes=4096)
    for i in range(80):
        chain.append(event_bytes(i))
    chain.close()
    assert len(list_segments(tmp_path)) > 3
    report = verify_file_chain(tmp_path, KEYS)
    assert report.intact and report.report.entries == 80
    (_, second), (_, third) = list_segments(tmp_path)[1:3]
    second.unlink()
    brk = verify_file_chain(tmp_path, KEYS).report.first_break
    assert brk is not None and brk.kind == "missing"


def test_group_sync_records_are_all_there_after_close(tmp_path: Path) -> None:
    chain = writer(tmp_path, sync="group", group_ms=2)
    for i in range(200):
        chain.append(event_bytes(i))
    chain.close()
    assert verify_file_chain(tmp_path, KEYS).report.entries == 200


def _append_many(directory: str, worker: int, count: int) -> None:
    chain = FileChainWriter(directory, key=KEY, topic=TOPIC, sync="group", segment_bytes=8192)
    for i in range(count):
        chain.append(event_bytes(worker * 100_000 + i))
    chain.close()


def test_four_processes_appending_at_once_make_one_total_order(tmp_path: Path) -> None:
    writer(tmp_path).close()  # the chain exists before the race
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w, 150)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    report = verify_file_chain(tmp_path, KEYS)
    assert report.intact, report.report.first_break
    assert report.report.entries == 600 and report.report.kinds["event"] == 600


def test_retention_drops_whole_expired_segments_behind_an_anchor(tmp_path: Path) -> None:
    chain = writer(tmp_path, segment_bytes=4096, retention_ms=60_000)
    old = int(time.time() * 1000) - 3_600_000
    for i in range(60):
        chain.append(event_bytes(i), now_ms=old)  # an hour ago: past the retention period
    for i in range(60, 120):
        chain.append(event_bytes(i))  # each rollover drops the expired segments
    chain.close()
    anchor = read_anchor(tmp_path)
    assert anchor is not None and anchor.seq >= 40
    assert list_segments(tmp_path)[0][0] == anchor.seq + 1
    report = verify_file_chain(tmp_path, KEYS)
    assert report.intact, report.report.first_break
    assert report.report.head["seq"] == 120 and report.report.entries == 120 - anchor.seq
    assert report.report.retention is not None
    # A forged anchor (another link) is a break at the anchor's seq.
    text = (tmp_path / "anchor.json").read_text()
    (tmp_path / "anchor.json").write_text(text.replace(anchor.link.hex(), "00" * 32))
    brk = verify_file_chain(tmp_path, KEYS).report.first_break
    assert brk is not None and brk.seq == anchor.seq and brk.kind == "modified"
