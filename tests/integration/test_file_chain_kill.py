"""Fault drill: processes appending to a file chain under ``sync=always`` are killed with
SIGKILL at random moments, 20 times; the chain then verifies intact and holds every record
whose append had returned (acknowledged) before the kill. Bounded: about 20 s."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from baldur_audit.consumers.verification.file_chain import verify_file_chain
from baldur_audit.producers.filechain import iter_records
from baldur_audit.schemas.chain import SigningKey

KEY = SigningKey.derive(bytes(range(32)))
KILLS = 20

APPENDER = """
import os, sys, uuid
from datetime import UTC, datetime
from baldur_audit.producers.filechain import FileChainWriter
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.codec import encode_event
from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7
chain = FileChainWriter(sys.argv[1], key=SigningKey.derive(bytes(range(32))), topic="t", sync="always",
                        segment_bytes=16384)
print("ready", flush=True)
i = 0
while True:
    event_id = uuid7(1_700_000_000_000 + i, os.urandom(10))
    value = encode_event(ChangeEvent(event_id=event_id, occurred_at=datetime.now(UTC),
        actor=Actor(id="drill", type="service"), action="update", target=f"k.{i}", source="api",
        after='{"pad":"' + "x" * (i % 500) + '"}'))
    done = chain.append(value)
    print(done.seq, event_id, flush=True)  # acknowledged: on disk
    i += 1
"""


def test_sigkill_mid_append_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(11)
    chain = tmp_path / "chain"
    acknowledged: dict[int, str] = {}
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(chain)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.02, 0.4))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert child.stdout is not None
        output = child.stdout.read()
        for line in output.split("\n")[:-1]:  # the last piece may be cut by the kill
            seq, event_id = line.split()
            acknowledged[int(seq)] = event_id
    assert len(acknowledged) > KILLS
    report = verify_file_chain(chain, {KEY.key_id: KEY})
    assert report.intact, report.report.first_break
    present = {found.record.seq: str(found.record.event_id) for found in iter_records(chain)}
    missing = {seq: eid for seq, eid in acknowledged.items() if present.get(seq) != eid}
    assert not missing
