"""Fault: poison records written by a foreign client (kcat, Debian's package).

Garbage bytes, truncated Avro, an unknown schema fingerprint, an empty value, a null value,
a 900 KB value and junk headers each become a rejected entry, interleaved with a stream of
valid events; the chainer never stalls, verify stays intact, replay is consistent and
``baldur-audit log --rejected`` lists every one of them. Junk headers on a valid event
change nothing: the headers are not part of the ledger.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from baldur_audit.schemas.codec import MAGIC, encode_event
from tests.faults.conftest import (
    Chainers,
    EventStream,
    Watch,
    check_ledger,
    record_result,
    rng,
    scaled,
    wait_for,
)
from tests.support.stack import Ledger, make_event

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = scaled(500, 20_000)
ROUNDS = scaled(1, 10)
JUNK_HEADERS = [
    b"traceparent=not-a-traceparent",
    b"x-null-value",
    b"x-empty=",
    b"x-binary=" + bytes(b for b in range(1, 256) if b != ord("=")),
    b"x-big=" + b"A" * 60_000,
    b"x-dup=1",
    b"x-dup=2",
]


def require_kcat() -> str:
    found = shutil.which("kcat") or shutil.which("kafkacat")
    if found is None:
        message = "kcat not installed (deploy/run-faults.sh installs it: apt-get install kcat)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def kcat_produce(
    kcat: str, ledger: Ledger, value: bytes | None, workdir: Path, headers: Sequence[bytes] = ()
) -> None:
    """Write ``value`` as ONE record with kcat: a file argument is one message; kcat skips an
    empty file or line, so an empty or null value is sent as ``key:`` with ``-K:`` (``-Z``
    turns the empty value into NULL), the usual kcat idiom for tombstones."""
    cmd: list[str | bytes] = [
        kcat,
        "-P",
        "-q",
        "-b",
        ledger.bootstrap,
        "-t",
        ledger.topic,
        "-p",
        "0",
        "-X",
        "message.max.bytes=2000000",
    ]
    for header in headers:
        cmd += [b"-H", header]
    stdin = None
    if value:
        path = workdir / f"record-{uuid.uuid4().hex[:8]}.bin"
        path.write_bytes(value)
        cmd.append(str(path))
    else:
        cmd += ["-K:"] + (["-Z"] if value is None else [])
        stdin = b"poison:\n"
    done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def poison_set(round_no: int) -> list[dict[str, object]]:
    """The poison records of one round: name, payload (None = null), headers, expected reason."""
    good = encode_event(make_event(1_000_000 + round_no))
    garbage = os.urandom(200)
    if garbage[:2] == MAGIC:
        garbage = b"\x00" + garbage
    return [
        {"name": "garbage bytes", "value": garbage},
        {"name": "truncated avro", "value": good[: len(good) // 2]},
        {"name": "unknown fingerprint", "value": MAGIC + os.urandom(8) + good[10:]},
        {"name": "empty value", "value": b""},
        {"name": "null value", "value": None},
        {"name": "900 KB value", "value": MAGIC + good[2:10] + os.urandom(900 * 1024)},
        {"name": "junk headers", "value": b"\xff\xfe junk " + os.urandom(32), "headers": JUNK_HEADERS},
    ]


def test_poison_records_from_kcat_become_rejected_entries(
    led: Ledger, chainers: Chainers, tmp_path: Path
) -> None:
    kcat = require_kcat()
    r = rng("poison")
    started = time.monotonic()
    watch = Watch(led)
    chainer = chainers.start("--session-timeout", "2", "--batch-size", "500", "--json")
    poisons: list[dict[str, object]] = []
    valid_with_junk = []
    with EventStream(led, EVENTS, chunk=200, pause=scaled(0.05, 0.02)) as stream:
        for round_no in range(ROUNDS):
            for poison in poison_set(round_no):
                kcat_produce(
                    kcat,
                    led,
                    poison["value"],
                    tmp_path,  # type: ignore[arg-type]
                    headers=poison.get("headers", ()),
                )  # type: ignore[arg-type]
                poisons.append(poison)
                time.sleep(r.uniform(0.0, 0.2))
            # A valid event with junk headers is still an event.
            event = make_event(2_000_000 + round_no)
            kcat_produce(kcat, led, encode_event(event), tmp_path, headers=JUNK_HEADERS)
            valid_with_junk.append(event.event_id)
        stream.wait(300)
    last_written = time.monotonic()
    wait_for(watch.caught_up, scaled(60, 300), "the chainer to seal every record")
    catch_up_s = time.monotonic() - last_written
    assert chainer.alive(), chainer.stderr
    assert chainer.stop() == 0, chainer.stderr
    stats = chainer.stats()
    watch.close()

    check = check_ledger(led, stream.acked | set(valid_with_junk))
    with led.app() as conn:
        rows = conn.execute(
            "SELECT kafka_offset, payload, reject_reason FROM audit_entries"
            " WHERE kind = 'rejected' ORDER BY seq"
        ).fetchall()
    payloads = [None if row[1] is None else bytes(row[1]) for row in rows]
    located = [poison["name"] for poison in poisons if poison["value"] in payloads]
    listed = led.cli("log", "--rejected", "--json", "--limit", "100000")
    listed_offsets = [json.loads(line)["kafka_offset"] for line in listed.stdout.splitlines()]
    human = led.cli("log", "--rejected", "--limit", "100000")
    record_result(
        "poison records (kcat)",
        runs=ROUNDS,
        events=EVENTS,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"{len(rows)} rejected of {len(poisons)} poison records, "
        f"{len(listed_offsets)} listed by log --rejected",
        catch_up_after_last_record_s=round(catch_up_s, 1),
        chainer=stats,
        reasons=sorted({re.sub(r"\b[0-9a-f]{16}\b", "<fp>", str(row[2])) for row in rows}),
    )
    assert not check.problems(), check.problems()
    assert check.kinds == {"event": EVENTS + ROUNDS, "rejected": len(poisons)}
    assert stats["rejected"] == len(poisons)
    assert sorted(located) == sorted(poison["name"] for poison in poisons)
    assert all(row[2] for row in rows), "every rejected entry carries a reason"
    assert listed.returncode == 0 and sorted(listed_offsets) == [row[0] for row in rows]
    assert human.returncode == 0 and human.stdout.count("REJECTED") == len(poisons)
