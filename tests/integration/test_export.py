"""Exports on the real stack: `export` writes a seq range (or a time window) with a signed manifest,
and `check-export` accepts it offline — no database, no Kafka, no HMAC key — and refuses it after
any change (an entry's field, a leaf hash, the signature, the count, a dropped, added or moved
line), naming what failed; an unknown key cannot check it. Exports of events, duplicates and
rejected records, behind retention, and of a ledger changed after its checkpoint (refused)."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Ledger, make_event

pytestmark = pytest.mark.integration


def chain(ledger: Ledger) -> dict[str, Any]:
    done = ledger.cli("chain", "--until-idle", "1", "--session-timeout", "3", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def checkpoint(ledger: Ledger) -> None:
    done = ledger.cli("checkpoint")
    assert done.returncode == 0, done.stderr


def offline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`baldur-audit ARGS` with no database, no Kafka and no HMAC key in reach."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "BALDUR_STATE_DIR": str(cwd / "none"),
        "BALDUR_SQL_DSN": "postgresql://nobody@127.0.0.1:1/none",
        "BALDUR_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }
    return subprocess.run(
        [sys.executable, "-m", "baldur_audit.consumers", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def export(ledger: Ledger, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = ledger.cli("export", *args)
    assert done.returncode == expect, (done.stdout, done.stderr)
    return done


def sealed_mixed(ledger: Ledger) -> None:
    """20 events, a record that does not decode, a null record, a copy of the first event."""
    from baldur_audit.schemas.codec import encode_event

    events = [encode_event(make_event(i)) for i in range(20)]
    ledger.produce_raw([*events, b"not avro", None, events[0]])
    assert chain(ledger)["sealed"] == 23
    checkpoint(ledger)


def public_keys(ledger: Ledger, folder: Path) -> None:
    keys = ledger.cli("keys", "public")
    assert keys.returncode == 0 and "PRIVATE" not in keys.stdout
    (folder / "ledger.pub").write_text(keys.stdout)


def check(folder: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return offline("check-export", name, "--public-key", "ledger.pub", *extra, cwd=folder)


def mutated(source: Path, target: Path, name: str, change: Any) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    path = target / name
    path.write_bytes(change(path.read_bytes()))
    return target


def other_hex(position: int) -> Any:
    """Replace a hex digit by another one."""
    return lambda data: (
        data[:position] + (b"1" if data[position] == ord("0") else b"0") + data[position + 1 :]
    )


def other_base64(position: int) -> Any:
    """Replace a base64 letter by another one (a flipped bit may leave the alphabet, e.g. '+'
    becomes '*', and the checker would then name the encoding instead of the proof)."""
    return lambda data: (
        data[:position] + (b"B" if data[position] == ord("A") else b"A") + data[position + 1 :]
    )


def digest_of(data: bytes, fmt: str) -> bytes:
    """The first entry's digest, as the data file spells it."""
    if fmt == "ndjson":
        return str(json.loads(data.split(b"\n", 1)[0])["digest"]).encode()
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    return str(rows[0]["digest"]).encode()


def flip(position: int) -> Any:
    return lambda data: data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_an_export_checks_offline_and_every_change_is_refused(
    ledger: Ledger, tmp_path: Path, fmt: str
) -> None:
    sealed_mixed(ledger)
    public_keys(ledger, tmp_path)
    done = export(ledger, "--first-seq", "2", "--format", fmt, "--out", str(tmp_path / "review"), "--json")
    summary = json.loads(done.stdout)
    assert (summary["first_seq"], summary["last_seq"], summary["count"]) == (2, 23, 22)
    assert summary["kinds"] == {"event": 19, "duplicate": 1, "rejected": 2, "schema": 0}
    assert summary["checkpoint"]["size"] == 23
    data_name = f"entries.{fmt}"
    review = tmp_path / "review"
    assert sorted(os.listdir(review)) == [data_name, "manifest.json"]
    assert {stat.S_IMODE((review / name).stat().st_mode) for name in os.listdir(review)} == {0o644}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".review")]  # no staging left

    valid = check(tmp_path, "review")
    assert valid.returncode == 0, (valid.stdout, valid.stderr)
    assert valid.stdout.startswith(
        "valid: entries 2..23 of the ledger baldur-audit/baldur-audit:" + ledger.topic
    ), valid.stdout
    assert "(22 entries: 19 events, 1 duplicates, 2 rejected) are complete and unaltered" in valid.stdout

    data = (review / data_name).read_bytes()
    manifest = (review / "manifest.json").read_bytes()
    text = manifest.decode("ascii")
    leaf = text.index('"leaf_hashes"') + 40
    ending = b"\r\n" if fmt == "csv" else b"\n"
    head = len(data.split(ending, 1)[0]) + len(ending) if fmt == "csv" else 0
    records = [r + ending for r in data[head:].split(ending)[:-1]]
    cases: dict[str, tuple[str, Any, str]] = {
        "an entry's actor": (data_name, flip(data.index(b"alice") + 2), "view digest"),
        "an entry's digest": (data_name, other_hex(data.index(digest_of(data, fmt)) + 5), "leaf hash"),
        "a leaf hash in the manifest": ("manifest.json", other_base64(leaf), "range proof"),
        "the signature": ("manifest.json", other_base64(text.index("\\u2014") + 60), "manifest signature"),
        "the count": (
            "manifest.json",
            lambda b: b.replace(b'"count": 22', b'"count": 21'),
            "manifest signature",
        ),
        "a dropped line": (data_name, lambda b: b[:head] + b"".join(records[:4] + records[5:]), "order"),
        "an added line": (data_name, lambda b: b[:head] + b"".join(records[:5] + records[4:]), "order"),
        "two lines swapped": (
            data_name,
            lambda b: b[:head] + b"".join(records[:4] + [records[5], records[4]] + records[6:]),
            "order",
        ),
    }
    for case, (name, change, named) in cases.items():
        mutated(review, tmp_path / "changed", name, change)
        done = check(tmp_path, "changed")
        lines = done.stdout.splitlines()
        assert done.returncode == 1 and lines and all(line.startswith("INVALID: ") for line in lines), (
            case,
            done.stdout,
            done.stderr,
        )
        assert any(f": {named}: " in line for line in lines), (case, lines)
        assert "Traceback" not in done.stderr
    as_json = json.loads(check(tmp_path, "changed", "--json").stdout)
    assert as_json["valid"] is False and {f["check"] for f in as_json["failures"]} >= {"order", "file digest"}

    from baldur_audit.schemas.checkpoint import CheckpointSigner

    (tmp_path / "stranger.pub").write_text(
        CheckpointSigner.from_seed("stranger", bytes(32)).verifier_key() + "\n"
    )
    done = offline("check-export", "review", "--public-key", "stranger.pub", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout.startswith("UNVERIFIABLE: no given key signed"), done.stdout
    done = offline("check-export", "nowhere", "--public-key", "ledger.pub", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("baldur-audit: "), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_an_export_by_time_is_the_contiguous_range_between_broker_timestamps(
    ledger: Ledger, tmp_path: Path
) -> None:
    for batch in range(3):
        ledger.produce_events(10, start=10 * batch)
        time.sleep(0.05)  # three batches with distinct broker timestamps (LogAppendTime)
    chain(ledger)
    checkpoint(ledger)
    with ledger.app() as conn:
        stamps = dict(conn.execute("SELECT seq, kafka_timestamp FROM audit_entries").fetchall())
    since, until = stamps[11], stamps[21]
    first = min(seq for seq, at in stamps.items() if at >= since)
    last = max(seq for seq, at in stamps.items() if at < until)
    assert 1 < first <= 11 and 11 <= last < 21
    out = tmp_path / "window"
    summary = json.loads(
        export(
            ledger, "--since", since.isoformat(), "--until", until.isoformat(), "--out", str(out), "--json"
        ).stdout
    )
    assert (summary["first_seq"], summary["last_seq"]) == (first, last)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"]["since"].startswith(since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    public_keys(ledger, tmp_path)
    assert check(tmp_path, "window").returncode == 0

    # Entries sealed after the newest checkpoint: an open-ended export stops at the checkpoint and
    # says what it left out; a window that reaches them is refused until a checkpoint covers them.
    ledger.produce_events(5, start=30)
    chain(ledger)
    done = export(ledger, "--since", since.isoformat(), "--out", str(tmp_path / "open"))
    assert "exported entries" in done.stdout and "..30 " in done.stdout, done.stdout
    assert "5 newer entries are not covered by a checkpoint yet" in done.stderr
    done = export(ledger, "--until", "now", "--out", str(tmp_path / "closed"), expect=2)
    assert "covers 30 entries: run `baldur-audit checkpoint` first" in done.stderr
    assert not (tmp_path / "closed").exists()
    checkpoint(ledger)
    summary = json.loads(export(ledger, "--until", "now", "--out", str(tmp_path / "closed"), "--json").stdout)
    assert (summary["first_seq"], summary["last_seq"]) == (1, 35)


def test_what_export_refuses(ledger: Ledger, tmp_path: Path) -> None:
    ledger.produce_events(5)
    chain(ledger)
    done = export(ledger, "--out", str(tmp_path / "x"), expect=2)
    assert "no checkpoint is stored yet: run `baldur-audit checkpoint` first" in done.stderr
    checkpoint(ledger)
    for args, message in (
        (("--first-seq", "2", "--since", "1h"), "give --since or --first-seq, not both"),
        (("--last-seq", "9"), "the range ends at seq 9, but the newest checkpoint covers 5 entries"),
        (("--first-seq", "4", "--last-seq", "3"), "the range seq 4..3 is empty"),
        (("--since", "2999-01-01T00:00:00Z"), "no entry is stamped at or after 2999-01-01"),
        (("--size", "4"), "no checkpoint of size 4 is stored"),
        (("--format", "parquet"), "Invalid value for '--format'"),
    ):
        done = export(ledger, *args, "--out", str(tmp_path / "x"), expect=2)
        assert message in done.stderr and len(done.stderr.splitlines()) == 1, (args, done.stderr)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("keep?")
    done = export(ledger, "--out", str(tmp_path / "full"), expect=2)
    assert "is not empty: choose another --out, or --force to replace it" in done.stderr
    assert (tmp_path / "full" / "old.txt").exists()
    export(ledger, "--out", str(tmp_path / "full"), "--force")
    assert sorted(os.listdir(tmp_path / "full")) == ["entries.ndjson", "manifest.json"]
    (tmp_path / "file").write_text("")
    assert "is a file" in export(ledger, "--out", str(tmp_path / "file"), expect=2).stderr
    (tmp_path / "empty").mkdir()
    export(ledger, "--out", str(tmp_path / "empty"))  # an empty folder is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "full", ledger.state_dir.name]


def test_a_ledger_changed_after_its_checkpoint_is_not_exported(ledger: Ledger, tmp_path: Path) -> None:
    ledger.produce_events(12)
    chain(ledger)
    checkpoint(ledger)
    with ledger.admin() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 7")
    done = export(ledger, "--out", str(tmp_path / "x"), expect=1)
    assert "entry 7 is not what the checkpoint of size 12 covers" in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()
    assert export(ledger, "--last-seq", "6", "--out", str(tmp_path / "y")).returncode == 0  # before it: fine
    with ledger.admin() as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq = 3")
    done = export(ledger, "--last-seq", "6", "--out", str(tmp_path / "z"), expect=1)
    assert "missing at seq 3" in done.stderr, done.stderr


def test_exports_behind_retention(ledger: Ledger, tmp_path: Path) -> None:
    """Pruned entries are exported with their sealed digests only; entries deleted behind a
    retention anchor cannot be, so a range or window reaching them is refused."""
    gap_s = 10.0
    ledger.produce_events(4, actor="alice")
    time.sleep(gap_s)
    ledger.produce_events(3, actor="bob", start=4)
    chain(ledger)
    checkpoint(ledger)
    with ledger.app() as conn:
        old_end, first_stamp = conn.execute(
            "SELECT max(kafka_timestamp) FILTER (WHERE seq <= 4), min(kafka_timestamp) FROM audit_entries"
        ).fetchone()

    def period() -> str:
        return f"{math.floor((datetime.now(UTC) - old_end).total_seconds())}s"

    assert ledger.cli_json("prune", "--older-than", period())["changed"] == 4
    public_keys(ledger, tmp_path)
    for fmt in ("ndjson", "csv"):
        summary = json.loads(
            export(ledger, "--format", fmt, "--out", str(tmp_path / f"p-{fmt}"), "--json").stdout
        )
        assert (summary["first_seq"], summary["last_seq"], summary["pruned"]) == (1, 7, 4)
        done = check(tmp_path, f"p-{fmt}")
        assert done.returncode == 0 and "4 pruned" in done.stdout, done.stdout
    rows = [json.loads(line) for line in (tmp_path / "p-ndjson" / "entries.ndjson").read_text().splitlines()]
    assert [row["pruned"] for row in rows] == [True] * 4 + [False] * 3
    assert all(row["actor"] is None for row in rows[:4]) and rows[4]["actor"] == "bob"

    assert ledger.cli_json("prune", "--older-than", period(), "--mode", "entries")["anchor"]["seq"] == 4
    done = export(ledger, "--first-seq", "2", "--out", str(tmp_path / "x"), expect=2)
    assert "retention deleted the entries up to seq 4" in done.stderr and "start at seq 5" in done.stderr
    done = export(ledger, "--since", first_stamp.isoformat(), "--out", str(tmp_path / "x"), expect=2)
    assert "an export of that window cannot be complete" in done.stderr, done.stderr
    summary = json.loads(export(ledger, "--out", str(tmp_path / "after"), "--json").stdout)
    assert (summary["first_seq"], summary["last_seq"], summary["pruned"]) == (5, 7, 0)
    assert check(tmp_path, "after").returncode == 0


def test_an_export_with_a_schema_record_checks_offline(ledger: Ledger, tmp_path: Path) -> None:
    """A schema entry shows its record (the writer schema), which the checker holds to its digest."""
    from baldur_audit.schemas.codec import encode_schema_record
    from tests.integration.test_schema_evolution import events
    from tests.unit.schemas.test_schema_records import with_ticket

    writer = with_ticket()
    ledger.produce_raw([encode_schema_record(writer), *events(writer, 3, ticket="OPS-7")])
    assert chain(ledger)["sealed"] == 4
    checkpoint(ledger)
    public_keys(ledger, tmp_path)
    done = export(ledger, "--first-seq", "1", "--out", str(tmp_path / "review"), "--json")
    assert json.loads(done.stdout)["kinds"] == {"event": 3, "duplicate": 0, "rejected": 0, "schema": 1}
    checked = check(tmp_path, "review")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    data = (tmp_path / "review" / "entries.ndjson").read_bytes()
    first = json.loads(data.split(b"\n", 1)[0])
    assert first["kind"] == "schema" and first["payload"]
    changed = dict(first, kind="rejected")
    tampered = mutated(
        tmp_path / "review",
        tmp_path / "tampered",
        "entries.ndjson",
        lambda text: text.replace(
            data.split(b"\n", 1)[0], json.dumps(changed, separators=(",", ":")).encode(), 1
        ),
    )
    refused = check(tmp_path, tampered.name)
    assert refused.returncode == 1, refused.stdout + refused.stderr
