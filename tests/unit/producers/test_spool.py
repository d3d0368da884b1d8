"""The disk spool on its own: framing, torn tails, damage, cursor, size bound, locking,
slots, and a real ``kill -9`` during appends. The trail on top of it: test_trail.py.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from baldur_audit.producers.spool import DiskSpool, SpoolError, SpoolFull, SpoolLocked
from baldur_audit.producers.spool.disk import SpoolRecord
from baldur_audit.producers.spool.segment import FRAME_HEAD, encode_record
from baldur_audit.producers.spool.slots import default_spool_dir, open_slots
from baldur_audit.schemas.errors import ConfigError

TRACE = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]


def value(i: int) -> bytes:
    return f"encoded-event-{i:05d}-".encode() * 3


def fill(spool: DiskSpool, count: int, start: int = 0) -> list[uuid.UUID]:
    ids = []
    for i in range(start, start + count):
        event_id = uuid.UUID(int=i + 1)
        spool.append(event_id, value(i), TRACE if i % 2 else None)
        ids.append(event_id)
    return ids


def read_all(spool: DiskSpool) -> list[SpoolRecord]:
    records, _ = spool.read(spool.start(), max_records=1_000_000)
    return records


def drain(spool: DiskSpool, records: list[SpoolRecord]) -> None:
    """Acknowledge ``records`` (a prefix of what is pending) and persist."""
    spool.commit(records[-1].end, records=len(records), nbytes=sum(r.size for r in records))
    spool.persist()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_records_keep_their_bytes_headers_and_order(tmp_path: Path) -> None:
    spool = DiskSpool.open(tmp_path / "s", segment_bytes=2048)
    ids = fill(spool, 60)
    assert len(segments(tmp_path / "s")) > 1  # several segments, read across them in order
    records = read_all(spool)
    assert [r.event_id for r in records] == ids
    assert [r.value for r in records] == [value(i) for i in range(60)]
    assert records[0].headers is None and records[1].headers == TRACE
    assert spool.pending == 60
    assert spool.pending_bytes == sum(r.size for r in records)
    spool.close()


def test_reading_in_small_windows_continues_where_it_stopped(tmp_path: Path) -> None:
    spool = DiskSpool.open(tmp_path / "s", segment_bytes=1024)
    ids = fill(spool, 40)
    position, seen = spool.start(), []
    while True:
        records, position = spool.read(position, max_records=7)
        if not records:
            break
        seen.extend(r.event_id for r in records)
    assert seen == ids
    spool.close()


def test_directory_and_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        spool = DiskSpool.open(tmp_path / "a" / "s")
        fill(spool, 2)
        drain(spool, read_all(spool)[:1])
    finally:
        os.umask(old)
    directory = tmp_path / "a" / "s"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    spool.close()


def test_an_existing_directory_gets_private_and_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    DiskSpool.open(tmp_path / "open").close()
    assert not (tmp_path / "open").exists()  # closed empty: removed
    (tmp_path / "open").mkdir(mode=0o777)
    spool = DiskSpool.open(tmp_path / "open")
    assert stat.S_IMODE((tmp_path / "open").stat().st_mode) == 0o700
    spool.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        DiskSpool.open(tmp_path / "file")


def last_record_cut(directory: Path, keep: int) -> None:
    """Cut the last record of the last segment to its first ``keep`` bytes (a torn write)."""
    path = segments(directory)[-1]
    data = path.read_bytes()
    frame = encode_record(uuid.UUID(int=999), value(999), None)
    path.write_bytes(data + frame[:keep])


@pytest.mark.parametrize("keep", [1, 3, 7, FRAME_HEAD.size, FRAME_HEAD.size + 5, -1])
def test_a_torn_tail_is_ignored_and_appends_continue(
    tmp_path: Path, keep: int, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory)
    ids = fill(spool, 5)
    spool.close()
    frame_len = len(encode_record(uuid.UUID(int=999), value(999), None))
    last_record_cut(directory, keep if keep > 0 else frame_len - 1)
    caplog.set_level(logging.WARNING)
    spool = DiskSpool.open(directory)
    assert "torn write" in caplog.text and "ERROR" not in caplog.text
    assert spool.torn_bytes > 0 and spool.corrupt_bytes == 0
    assert [r.event_id for r in read_all(spool)] == ids
    more = fill(spool, 2, start=5)  # appends follow the last whole record
    spool.close()
    spool = DiskSpool.open(directory)
    assert [r.event_id for r in read_all(spool)] == ids + more
    spool.close()


def test_a_zero_filled_tail_is_a_torn_write(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory)
    ids = fill(spool, 3)
    spool.close()
    with open(segments(directory)[-1], "ab") as handle:
        handle.write(b"\0" * 4096)
    spool = DiskSpool.open(directory)
    assert spool.torn_bytes == 4096 and spool.corrupt_bytes == 0
    assert [r.event_id for r in read_all(spool)] == ids
    spool.close()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["body", "length", "magic"])
def test_a_damaged_record_is_reported_and_the_rest_is_kept(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory)
    ids = fill(spool, 10)
    victim = read_all(spool)[4]
    spool.close()
    offset = {
        "body": victim.start.offset + FRAME_HEAD.size + 20,
        "length": victim.start.offset + 4,
        "magic": victim.start.offset,
    }[where]
    flip(segments(directory)[0], offset)
    caplog.set_level(logging.ERROR)
    spool = DiskSpool.open(directory)
    (error,) = caplog.records
    assert "damaged" in error.getMessage()
    assert f"bytes {victim.start.offset}..{victim.end.offset}" in error.getMessage()
    assert spool.corrupt_bytes == victim.size
    assert [r.event_id for r in read_all(spool)] == ids[:4] + ids[5:]
    quarantined = list(directory.glob("corrupt-*.bin"))
    assert len(quarantined) == 1 and quarantined[0].stat().st_size == victim.size
    assert len(caplog.records) == 1  # reading again does not report again
    spool.close()


def test_damage_in_the_last_complete_record_is_an_error_not_a_torn_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory)
    ids = fill(spool, 3)
    victim = read_all(spool)[-1]
    spool.close()
    flip(segments(directory)[0], victim.end.offset - 1)
    caplog.set_level(logging.WARNING)
    spool = DiskSpool.open(directory)
    assert "damaged" in caplog.text and spool.corrupt_bytes == victim.size
    assert [r.event_id for r in read_all(spool)] == ids[:2]
    assert list(directory.glob("corrupt-*.bin"))
    spool.close()


def test_damage_found_while_draining_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory, segment_bytes=1 << 20)
    ids = fill(spool, 6)
    victim = read_all(spool)[2]
    flip(segments(directory)[0], victim.start.offset + FRAME_HEAD.size + 3)  # after opening
    caplog.set_level(logging.ERROR)
    assert [r.event_id for r in read_all(spool)] == ids[:2] + ids[3:]
    assert "damaged" in caplog.text
    spool.close()


def test_a_damaged_segment_header_quarantines_that_segment_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory, segment_bytes=1024)
    ids = fill(spool, 30)
    first = segments(directory)[0]
    in_first = [r.event_id for r in read_all(spool) if r.start.segment == 1]
    spool.close()
    flip(first, 2)
    caplog.set_level(logging.ERROR)
    spool = DiskSpool.open(directory, segment_bytes=1024)
    assert "damaged header" in caplog.text
    assert [r.event_id for r in read_all(spool)] == ids[len(in_first) :]
    spool.close()


def test_a_header_cut_by_a_crash_leaves_no_segment(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory, segment_bytes=1024)
    ids = fill(spool, 3)
    spool.close()
    (directory / f"{99:020d}.seg").write_bytes(b"BALDU")  # created, header not on disk
    spool = DiskSpool.open(directory)
    assert [r.event_id for r in read_all(spool)] == ids
    more = fill(spool, 1, start=3)
    assert [r.event_id for r in read_all(spool)] == ids + more
    spool.close()


def test_the_cursor_survives_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory, segment_bytes=1024)
    ids = fill(spool, 30)
    drain(spool, read_all(spool)[:12])
    assert spool.pending == 18
    spool.close()
    spool = DiskSpool.open(directory, segment_bytes=1024)
    assert spool.recovered == 18 and spool.pending == 18
    assert [r.event_id for r in read_all(spool)] == ids[12:]
    spool.close()


def test_a_committed_but_unpersisted_cursor_repeats_records_after_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory)
    ids = fill(spool, 10)
    records = read_all(spool)
    drain(spool, records[:3])
    spool.commit(records[6].end, records=4, nbytes=sum(r.size for r in records[3:7]))
    os.close(spool._lock_fd)  # a crash: no close(), no persist
    spool._lock_fd = -1
    spool = DiskSpool.open(directory)
    assert [r.event_id for r in read_all(spool)] == ids[3:]  # repeated, never lost
    spool.close()


def test_a_damaged_cursor_sends_everything_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory)
    ids = fill(spool, 8)
    drain(spool, read_all(spool)[:5])
    spool.close()
    flip(directory / "cursor", 12)
    spool = DiskSpool.open(directory)
    assert "cursor file is damaged" in caplog.text
    assert [r.event_id for r in read_all(spool)] == ids
    spool.close()


def test_drained_segments_are_deleted_and_an_empty_spool_removes_itself(tmp_path: Path) -> None:
    directory = tmp_path / "topic" / "0"
    spool = DiskSpool.open(directory, segment_bytes=1024)
    fill(spool, 40)
    before = segments(directory)
    records = read_all(spool)
    drain(spool, [r for r in records if r.start.segment < records[-1].start.segment])
    after = segments(directory)
    assert len(before) > 2 and after == before[-1:]
    drain(spool, read_all(spool))
    assert spool.pending == 0 and spool.pending_bytes == 0
    assert spool.close() == 0
    assert not directory.exists() and directory.parent.exists()  # its own folder only


def test_new_segments_never_go_behind_the_cursor(tmp_path: Path) -> None:
    """Regression: after every segment was drained and deleted, a new segment numbered at
    or below the cursor's would have been skipped by the next reader (lost records)."""
    directory = tmp_path / "s"
    spool = DiskSpool.open(directory, segment_bytes=1024)
    fill(spool, 30)
    drain(spool, read_all(spool))
    cursor = (directory / "cursor").read_bytes()
    os.close(spool._lock_fd)  # crash before close() removes the files
    spool._lock_fd = -1
    for path in segments(directory):
        path.unlink()  # a crash in the middle of deleting them
    (directory / "cursor").write_bytes(cursor)
    spool = DiskSpool.open(directory, segment_bytes=1024)
    ids = fill(spool, 3, start=30)
    spool.close()
    spool = DiskSpool.open(directory, segment_bytes=1024)
    assert [r.event_id for r in read_all(spool)] == ids
    spool.close()


def test_the_size_bound_refuses_rather_than_drops(tmp_path: Path) -> None:
    frame = len(encode_record(uuid.UUID(int=1), value(0), None))
    spool = DiskSpool.open(tmp_path / "s", max_bytes=1000)
    fill(spool, 5)
    spool.max_bytes = spool.pending_bytes + frame - 1  # room for less than one more
    with pytest.raises(SpoolFull, match="is full: 5 events"):
        spool.append(uuid.UUID(int=77), value(77), None)
    assert spool.pending == 5
    drain(spool, read_all(spool)[:2])
    fill(spool, 2, start=5)  # room again once delivered
    assert spool.pending == 5
    with pytest.raises(SpoolFull):
        spool.append(uuid.UUID(int=78), value(78), None)
    spool.close()


def test_a_failed_fdatasync_breaks_the_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = DiskSpool.open(tmp_path / "s")
    fill(spool, 1)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(SpoolError, match="fdatasync failed"):
        spool.append(uuid.UUID(int=50), value(50), None)
    monkeypatch.undo()
    with pytest.raises(SpoolError, match="unusable"):  # pages may be lost: never trust it again
        spool.append(uuid.UUID(int=51), value(51), None)
    spool.close()
    assert segments(tmp_path / "s")  # its records stay for the next holder


def test_a_full_disk_is_spool_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = DiskSpool.open(tmp_path / "s")
    fill(spool, 1)
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        if len(data) > 20:
            real_write(fd, bytes(data[:20]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(SpoolFull, match="No space left"):
        spool.append(uuid.UUID(int=60), value(60), None)
    monkeypatch.undo()
    more = fill(spool, 1, start=1)  # the partial frame was undone
    assert [r.event_id for r in read_all(spool)] == [uuid.UUID(int=1), *more]
    spool.close()


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    spool = DiskSpool.open(tmp_path / "s")
    with pytest.raises(SpoolLocked):
        DiskSpool.open(tmp_path / "s")
    spool.close()
    DiskSpool.open(tmp_path / "s").close()


def test_slots_and_adoption_of_an_orphaned_spool(tmp_path: Path) -> None:
    root = tmp_path / "topic"
    first, _ = open_slots(tmp_path, "topic")
    second, _ = open_slots(tmp_path, "topic")
    third, adopted = open_slots(tmp_path, "topic")
    assert [s.directory.name for s in (first, second, third)] == ["0", "1", "2"]
    assert adopted == []
    ids = fill(third, 4)
    third.close()  # its process ends with records left: slot 2 is an orphan
    second.close()  # ends empty: slot 1 is free and removed
    fourth, adopted = open_slots(tmp_path, "topic")
    assert fourth.directory.name == "1"
    assert [s.directory.name for s in adopted] == ["2"]
    assert [r.event_id for r in read_all(adopted[0])] == ids
    drain(adopted[0], read_all(adopted[0]))
    for spool in (first, fourth, *adopted):
        spool.close()
    assert not root.exists() or list(root.iterdir()) == []
    with pytest.raises(ConfigError, match="spool folder name"):
        open_slots(tmp_path, "../escape")


def test_a_live_holders_slot_is_not_adopted(tmp_path: Path) -> None:
    first, _ = open_slots(tmp_path, "t")
    fill(first, 2)
    second, adopted = open_slots(tmp_path, "t")
    assert second.directory.name == "1" and adopted == []
    first.close()
    second.close()


def test_default_directory() -> None:
    assert default_spool_dir({"BALDUR_AUDIT_SPOOL_DIR": "/x/s"}) == Path("/x/s")
    assert default_spool_dir({"BALDUR_STATE_DIR": "/st"}) == Path("/st/spool")
    assert default_spool_dir({"XDG_STATE_HOME": "/xdg"}) == Path("/xdg/baldur-audit/spool")


def test_concurrent_appends_and_reads(tmp_path: Path) -> None:
    spool = DiskSpool.open(tmp_path / "s", segment_bytes=4096)
    errors: list[BaseException] = []

    def writer(base: int) -> None:
        try:
            for i in range(100):
                spool.append(uuid.UUID(int=base + i + 1), value(base + i), None)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    seen: list[uuid.UUID] = []
    position = spool.start()
    while any(t.is_alive() for t in threads) or len(seen) < 400:
        records, position = spool.read(position, max_records=50)
        seen.extend(r.event_id for r in records)
        if records:
            spool.commit(records[-1].end, records=len(records), nbytes=sum(r.size for r in records))
            spool.persist()
        elif not any(t.is_alive() for t in threads):
            break
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(seen) == sorted(uuid.UUID(int=n * 1000 + i + 1) for n in range(4) for i in range(100))
    for n in range(4):  # each writer's records in its own order
        mine = [e for e in seen if (e.int - 1) // 1000 == n]
        assert mine == sorted(mine)
    assert spool.pending == 0
    spool.close()


KILL_CHILD = """
import sys, uuid
from pathlib import Path
from baldur_audit.producers.spool import DiskSpool
spool = DiskSpool.open(Path(sys.argv[1]), segment_bytes=8192)
i = 0
while True:
    spool.append(uuid.UUID(int=i + 1), b"payload-%d" % i * 20, None)
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_kill_9_during_appends_loses_no_acknowledged_record(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        acknowledged = -1
        deadline = time.monotonic() + 30
        while acknowledged < 400 and time.monotonic() < deadline:
            acknowledged = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        for line in child.stdout:  # lines written before the kill
            acknowledged = int(line)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert acknowledged >= 400
    spool = DiskSpool.open(directory, segment_bytes=8192)
    ids = [r.event_id.int - 1 for r in read_all(spool)]
    assert ids[: acknowledged + 1] == list(range(acknowledged + 1))
    assert len(ids) <= acknowledged + 2  # at most the one append the kill interrupted
    spool.close()


def test_a_forked_child_cannot_write_its_parents_spool(tmp_path: Path) -> None:
    """The flock is shared with a forked child: without this check both would append to
    (and drain) the same files."""
    spool = DiskSpool.open(tmp_path / "s")
    fill(spool, 1)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only when the append is refused
        try:
            spool.append(uuid.UUID(int=9), value(9), None)
            code = 1
        except SpoolError:
            code = 0
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.event_id for r in read_all(spool)] == [uuid.UUID(int=1)]
    spool.close()
