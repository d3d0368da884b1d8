"""Fault: stop and restart the Kafka broker while producing and chaining.

The producer (idempotent) queues and retries, the chainer's consumer reconnects and rejoins
its group: no loss, no duplicates in the ledger's view, verify intact, replay consistent.
Full scale alternates an orderly stop (SIGTERM) with a crash (SIGKILL).
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
STOPS = scaled(["stop"], ["stop", "kill", "stop", "kill"])


def test_broker_restarts_while_producing_and_chaining_lose_and_duplicate_nothing(
    led: Ledger, chainers: Chainers, services: Services
) -> None:
    r = rng("broker-restart")
    started = time.monotonic()
    watch = Watch(led)
    chainer = chainers.start("--session-timeout", "3", "--batch-size", "500", "--json")
    outages: list[dict[str, object]] = []
    chunk = 100
    with EventStream(led, EVENTS, chunk=chunk, over=len(STOPS) * scaled(8.0, 12.0)) as stream:
        for how in STOPS:
            seq = watch.head()[0]
            wait_for(lambda s=seq: watch.head()[0] > s, 60, "the chainer to be sealing")  # type: ignore[misc]
            time.sleep(r.uniform(0.0, 0.5))
            seq_before = watch.head()[0]
            sent_before = stream.sent
            down = r.uniform(1.0, scaled(2.0, 4.0))
            services.kafka.stop() if how == "stop" else services.kafka.kill()
            time.sleep(down)
            services.kafka.start()
            up_at = time.monotonic()
            wait_for(
                lambda s=seq_before: watch.head()[0] > s,
                180,  # type: ignore[misc]
                f"the chainer to resume after a broker {how}",
            )
            assert chainer.alive(), f"the chainer exited after a broker {how}: {chainer.stderr}"
            outages.append(
                {
                    "how": how,
                    "down_s": round(down, 1),
                    "produced_while_down": stream.sent - sent_before,
                    "resumed_after_up_s": round(time.monotonic() - up_at, 1),
                    "seq_at_stop": seq_before,
                }
            )
        stream.wait(600)
    wait_for(watch.caught_up, scaled(90, 300), "the chainer to seal every record")
    assert chainer.alive(), chainer.stderr
    assert chainer.stop() == 0, chainer.stderr
    stats = chainer.stats()
    watch.close()
    check = check_ledger(led, stream.acked)
    record_result(
        "Kafka broker restart while producing and chaining",
        runs=len(STOPS),
        events=EVENTS,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"{len(stream.failed)} delivery failures reported to the producer",
        resumed_after_up_s_max=max(o["resumed_after_up_s"] for o in outages),  # type: ignore[type-var]
        outages=outages,
        chainer=stats,
    )
    assert not check.problems(), check.problems()
    assert not stream.failed, list(stream.failed.values())[:3]
    assert check.kinds == {"event": EVENTS}
