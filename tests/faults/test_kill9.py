"""Fault: ``kill -9`` the chainer at random moments while events stream in.

Afterwards exactly one entry per topic record, verify intact, replay consistent, and every
acknowledged event sealed exactly once. Each kill lands either at a random moment after the
process started (start-up, group join, take-over) or shortly after it was seen sealing
(mid-batch, mid-COPY, between the database commit and the Kafka commit).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Chainers, EventStream, Watch, check_ledger, record_result, rng, scaled
from tests.support.stack import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = scaled(2000, 100_000)
KILLS = scaled(3, 20)
SESSION = "2"


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(led: Ledger, chainers: Chainers) -> None:
    r = rng("kill9")
    started = time.monotonic()
    watch = Watch(led)
    kills: list[dict[str, object]] = []
    # Pace the stream so that it spans the kills: about 6 s per kill cycle (start-up, the
    # dead member's session timeout, sealing).
    chunk = 100
    pause = KILLS * 6.0 / (EVENTS / chunk)
    with EventStream(led, EVENTS, chunk=chunk, pause=pause) as stream:
        for _ in range(KILLS):
            batch = r.choice(["100", "500", "2000"])
            proc = chainers.start("--session-timeout", SESSION, "--batch-size", batch)
            seq_at_start = watch.head()[0]
            if r.random() < 0.7:
                phase = "sealing"
                deadline = time.monotonic() + 30
                while (
                    watch.head()[0] == seq_at_start
                    and time.monotonic() < deadline
                    and proc.alive()
                    and not (stream.done_producing and watch.caught_up())
                ):
                    time.sleep(0.05)
                time.sleep(r.uniform(0.0, 1.0))
            else:
                phase = "any"
                time.sleep(r.uniform(0.2, 3.0))
            assert proc.alive(), f"chainer exited by itself (status {proc.proc.poll()}): {proc.stderr}"
            head_before = watch.head()[0]
            proc.kill9()
            kills.append(
                {
                    "phase": phase,
                    "batch": int(batch),
                    "seq_at_kill": head_before,
                    "sealed_by_it": head_before - seq_at_start,
                }
            )
        stream.wait(600)
    final = chainers.start("--session-timeout", SESSION, "--until-idle", "2", "--json")
    status = final.wait(timeout=scaled(120, 900))
    assert status == 0, final.stderr
    watch.close()
    check = check_ledger(led, stream.acked)
    mid_batch = sum(1 for kill in kills if kill["sealed_by_it"])
    record_result(
        "kill -9 chainer while streaming",
        runs=KILLS,
        events=EVENTS,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"{KILLS} kills, {mid_batch} while it was sealing",
        delivery_failures=len(stream.failed),
        final_chainer=final.stats(),
        kills=kills,
    )
    assert not check.problems(), check.problems()
    assert check.kinds == {"event": EVENTS}
