"""Fault: restart PostgreSQL (fast and immediate shutdown) while chaining.

The chainer retries with backoff, resumes from the head stored in PostgreSQL, and keeps
running: no loss, no duplicates, verify intact, replay consistent.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import (
    Chainers,
    EventStream,
    Services,
    Watch,
    check_ledger,
    record_result,
    rng,
    scaled,
    wait_for,
)
from tests.support.stack import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = scaled(2000, 40_000)
MODES = scaled(["fast", "immediate"], ["fast", "immediate"] * 3)


def test_postgres_restarts_while_chaining_lose_and_duplicate_nothing(
    led: Ledger, chainers: Chainers, services: Services
) -> None:
    r = rng("postgres-restart")
    started = time.monotonic()
    watch = Watch(led)
    chainer = chainers.start("--session-timeout", "3", "--batch-size", "500", "--json")
    outages: list[dict[str, object]] = []
    chunk = 100
    with EventStream(led, EVENTS, chunk=chunk, over=len(MODES) * scaled(6.0, 8.0)) as stream:
        for mode in MODES:
            seq = watch.head()[0]
            wait_for(lambda s=seq: watch.head()[0] > s, 60, "the chainer to be sealing")  # type: ignore[misc]
            time.sleep(r.uniform(0.0, 0.5))
            seq_before = watch.head()[0]
            down = r.uniform(1.0, scaled(2.0, 4.0))
            services.pg.stop(mode)
            time.sleep(down)
            services.pg.start()
            up_at = time.monotonic()
            wait_for(
                lambda s=seq_before: watch.head()[0] > s,
                120,  # type: ignore[misc]
                f"the chainer to resume after a {mode} shutdown",
            )
            assert chainer.alive(), f"the chainer exited after a {mode} shutdown: {chainer.stderr}"
            outages.append(
                {
                    "mode": mode,
                    "down_s": round(down, 1),
                    "resumed_after_up_s": round(time.monotonic() - up_at, 1),
                    "seq_at_shutdown": seq_before,
                }
            )
        stream.wait(600)
    wait_for(watch.caught_up, scaled(60, 300), "the chainer to seal every record")
    assert chainer.alive(), chainer.stderr
    assert chainer.stop() == 0, chainer.stderr
    stats = chainer.stats()
    watch.close()
    check = check_ledger(led, stream.acked)
    record_result(
        "PostgreSQL restart (fast, immediate) while chaining",
        runs=len(MODES),
        events=EVENTS,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"{stats['takeovers'] - 1} resumptions from the stored head, "
        f"{stats['store_retries']} reconnect retries",
        resumed_after_up_s_max=max(o["resumed_after_up_s"] for o in outages),  # type: ignore[type-var]
        outages=outages,
        chainer=stats,
    )
    assert not check.problems(), check.problems()
    assert check.kinds == {"event": EVENTS}
    # Each outage was noticed and recovered from by the same process.
    assert stats["takeovers"] >= 1 + len(MODES), stats
