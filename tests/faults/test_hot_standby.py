"""Fault: the active chainer of a hot-standby pair is killed or stopped.

Two chainers run in one group. ``kill -9`` of the active one: the standby takes over within
a bounded time (measured: from the kill to the first record the standby seals). ``SIGSTOP``
of the active one until the other has taken over, then ``SIGCONT``: the stale one's write
fails, it exits with status 3 and a one-line message, and the chain has no fork.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import time

import pytest

from tests.faults.conftest import (
    ChainerProc,
    Chainers,
    EventStream,
    Watch,
    check_ledger,
    full_only,
    record_result,
    rng,
    scaled,
    wait_for,
)
from tests.support.stack import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SESSION = 3.0
#: Kafka notices the dead member after the session timeout; the rebalance, the epoch bump and
#: the first batch must follow within this much more.
TAKEOVER_BOUND = SESSION + 12.0
#: A writer stalled inside its transaction is ended by the server after at most 20 s (statement
#: timeout of a COPY waiting for data; 10 s idle in transaction), then the take-over proceeds.
STALLED_BOUND = 30.0 + TAKEOVER_BOUND  # 20 s, with 10 s to spare on a loaded machine
KILLS = scaled(1, 5)
PAUSES = scaled(1, 5)


def start(chainers: Chainers) -> ChainerProc:
    return chainers.start("--session-timeout", str(SESSION), "--batch-size", "200")


def active(ledger: Ledger, procs: list[ChainerProc]) -> ChainerProc | None:
    """The chainer Kafka assigned the partition to (its ``--client-id``, or by default a client
    id that ends in its pid) -- once the group is stable with every live chainer of ``procs``
    in it: before that, a joining chainer can still be handed the partition."""
    group = ledger.cli_json("status")["group"]
    alive = [proc for proc in procs if proc.alive()]
    if group["state"] != "stable" or len(group["members"]) != len(alive):
        return None
    for member in group["members"]:
        if member["assignment"]:
            client_id = member["client_id"]
            return next(
                (
                    proc
                    for proc in alive
                    if (
                        proc.client_id == client_id
                        if proc.client_id is not None
                        else client_id.rsplit("-", 1)[1] == str(proc.pid)
                    )
                ),
                None,
            )
    return None


def standby_log(procs: list[ChainerProc], stale: ChainerProc) -> str:
    return " | ".join(proc.stderr[-800:] for proc in procs if proc is not stale)


def sealing(watch: Watch, timeout: float = 60) -> int:
    """Produce a few records (the paced stream may be over) and wait until the head moves past
    them; returns the new seq."""
    seq = watch.head()[0]
    watch.ledger.produce_events(5, start=20_000_000 + seq)
    return wait_for(lambda: watch.head()[0] > seq and watch.head()[0], timeout, "sealing progress")


def test_a_standby_that_joins_never_stops_the_active_chainer(led: Ledger, chainers: Chainers) -> None:
    """Regression (seen in CI): when a standby joined and Kafka's range assignor handed *it* the
    partition (members are ordered by member id, which starts with the client id), the chainer
    that had held it took the orderly hand-over for being fenced and exited 3, leaving no
    standby. Only a lost session means "fenced while away"; a hand-over means "stand by"."""
    watch = Watch(led)
    first = chainers.start("--session-timeout", str(SESSION), "--client-id", "baldur-chainer-z-first")
    led.produce_events(50)
    wait_for(watch.caught_up, 60, "the first 50 sealed")
    assert wait_for(lambda: active(led, [first]), 60, "the first chainer active") is first
    _, _, epoch = watch.head()
    second = chainers.start("--session-timeout", str(SESSION), "--client-id", "baldur-chainer-a-second")
    wait_for(lambda: watch.head()[2] > epoch, 90, "the joining chainer to be handed the head")
    assert wait_for(lambda: active(led, [first, second]), 30, "an active chainer") is second
    led.produce_events(50, start=50)
    wait_for(lambda: watch.head()[0] == 100, 60, "the second chainer to seal 50 more")
    time.sleep(2.0)  # the first one would have exited at its next poll
    assert first.alive(), f"the chainer that handed over exited: {first.stderr[-800:]}"
    # ... and it is a working standby.
    _, _, epoch = watch.head()
    second.kill9()
    wait_for(lambda: watch.head()[2] > epoch, TAKEOVER_BOUND + 30, "the first chainer to take over again")
    led.produce_events(10, start=100)
    wait_for(lambda: watch.head()[0] == 110, 60, "all 110 sealed")
    assert first.stop() == 0, first.stderr[-800:]
    watch.close()
    assert check_ledger(led).problems() == []


def test_standby_takes_over_after_kill_9_within_a_bounded_time(led: Ledger, chainers: Chainers) -> None:
    r = rng("standby-kill")
    started = time.monotonic()
    watch = Watch(led)
    procs = [start(chainers), start(chainers)]
    takeovers: list[float] = []
    sealed_after: list[float] = []
    events = KILLS * scaled(2000, 4000)
    chunk = 50
    with EventStream(led, events, chunk=chunk, over=KILLS * scaled(10.0, 14.0)) as stream:
        for _ in range(KILLS):
            victim = wait_for(lambda p=procs: active(led, p), 60, "an active chainer")
            sealing(watch)
            time.sleep(r.uniform(0.0, 1.0))
            seq, _, epoch = watch.head()
            victim.kill9()
            killed_at = time.monotonic()
            # Taken over = the standby bumped the fencing epoch; then it must also seal.
            try:
                wait_for(lambda e=epoch: watch.head()[2] > e, 90, "the standby to take over")  # type: ignore[misc]
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the others' logs: {standby_log(procs, victim)}") from None
            takeovers.append(time.monotonic() - killed_at)
            led.produce_events(10, start=10_000_000 + len(takeovers) * 10)
            wait_for(lambda s=seq: watch.head()[0] > s, 60, "the standby to seal")  # type: ignore[misc]
            sealed_after.append(time.monotonic() - killed_at)
            procs = [proc for proc in procs if proc.alive()] + [start(chainers)]
        stream.wait(300)
    wait_for(watch.caught_up, 120, "every record sealed")
    # A chainer still importing has no SIGTERM handler yet: stop them once both joined the group.
    wait_for(
        lambda: len(led.cli_json("status")["group"]["members"]) == len(procs),
        60,
        "both chainers in the group",
    )
    for proc in procs:
        assert proc.alive(), proc.stderr
        assert proc.stop() == 0, proc.stderr
    watch.close()
    check = check_ledger(led, stream.acked)
    record_result(
        "hot standby: kill -9 of the active chainer",
        runs=KILLS,
        events=events + 10 * KILLS,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"takeover max {max(takeovers):.1f} s",
        session_timeout_s=SESSION,
        takeover_s=[round(t, 1) for t in takeovers],
        takeover_s_median=round(statistics.median(takeovers), 1),
        takeover_s_max=round(max(takeovers), 1),
        first_seal_after_kill_s=[round(t, 1) for t in sealed_after],
    )
    assert not check.problems(), check.problems()
    assert max(sealed_after) <= TAKEOVER_BOUND, (takeovers, sealed_after)


@full_only
def test_paused_active_chainer_is_fenced_when_it_wakes_and_the_chain_does_not_fork(
    led: Ledger, chainers: Chainers
) -> None:
    r = rng("standby-pause")
    started = time.monotonic()
    watch = Watch(led)
    procs = [start(chainers), start(chainers)]
    rounds: list[dict[str, object]] = []
    extra = 0
    events = PAUSES * scaled(2000, 4000)
    chunk = 50
    with EventStream(led, events, chunk=chunk, over=PAUSES * scaled(12.0, 20.0)) as stream:
        for _ in range(PAUSES):
            stale = wait_for(lambda p=procs: active(led, p), 60, "an active chainer")
            sealing(watch)
            time.sleep(r.uniform(0.0, 1.0))
            _, _, epoch = watch.head()
            stale.signal(signal.SIGSTOP)
            paused_at = time.monotonic()
            found: dict[str, object] = {"takeover_s": None, "stale_exit": None}
            rounds.append(found)
            try:
                wait_for(
                    lambda e=epoch: watch.head()[2] > e,
                    STALLED_BOUND + 10,  # type: ignore[misc]
                    "the standby to take the head over from the paused chainer",
                )
                found["takeover_s"] = round(time.monotonic() - paused_at, 1)
                seq = watch.head()[0]
                # Something to seal even if the paced stream has already ended.
                led.produce_events(10, start=10_000_000 + len(rounds) * 10)
                extra += 10
                wait_for(lambda s=seq: watch.head()[0] > s, 60, "the new active chainer to seal")
            finally:
                time.sleep(1.0)
                stale.signal(signal.SIGCONT)
                try:
                    found["stale_exit"] = stale.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    found["stale_state"] = "still running 20 s after SIGCONT"
                    found["stale_is_active"] = active(led, procs) is stale
                lines = stale.stderr.strip().splitlines()
                found["stale_message"] = lines[-1] if lines else ""
                found["stale_log"] = lines[-8:]
            procs = [proc for proc in procs if proc.alive()] + [start(chainers)]
        stream.wait(300)
    wait_for(watch.caught_up, 120, "every record sealed")
    watch.close()
    check = check_ledger(led, stream.acked)
    fenced = sum(1 for x in rounds if x["stale_exit"] == 3)
    record_result(
        "hot standby: SIGSTOP/SIGCONT of the active chainer",
        runs=len(rounds),
        events=events + extra,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"{fenced} of {len(rounds)} stale chainers fenced (exit 3)",
        ok=not check.problems() and fenced == len(rounds) == PAUSES,
        rounds=rounds,
    )
    assert not check.problems(), check.problems()
    for found in rounds:
        assert found["takeover_s"] is not None, found
        assert found["stale_exit"] == 3, found
        assert "another chainer took over" in str(found["stale_message"])
        assert not any("Traceback" in line for line in found["stale_log"])  # type: ignore[attr-defined]
    procs = [proc for proc in procs if proc.alive()]
    wait_for(
        lambda: len(led.cli_json("status")["group"]["members"]) == len(procs),
        60,
        "the running chainers in the group",
    )
    for proc in procs:
        assert proc.stop() == 0, proc.stderr


def test_woken_stale_chainer_exits_3_even_when_it_had_nothing_to_write(
    led: Ledger, chainers: Chainers
) -> None:
    """Deterministic: paused while caught up (nothing fetched), the standby takes over and seals
    more, then SIGCONT: the stale one notices it was fenced and exits 3. (Regression: it used to
    see its expired session first and rejoin the group silently; fixed in 61967a3.)"""
    watch = Watch(led)
    procs = [start(chainers), start(chainers)]
    led.produce_events(50)
    wait_for(watch.caught_up, 60, "the first 50 sealed")
    stale = wait_for(lambda: active(led, procs), 60, "an active chainer")
    _, _, epoch = watch.head()
    stale.signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: watch.head()[2] > epoch,
            TAKEOVER_BOUND + 30,
            f"the standby to take over; its log: {standby_log(procs, stale)}",
        )
        led.produce_events(50, start=50)
        wait_for(lambda: watch.head()[0] == 100, 60, "the standby to seal 50 more")
    finally:
        stale.signal(signal.SIGCONT)
    led.produce_events(10, start=100)
    try:
        status = stale.wait(timeout=15)
    except subprocess.TimeoutExpired:
        status = None
    wait_for(lambda: watch.head()[0] == 110, 60, "all 110 sealed")
    watch.close()
    assert check_ledger(led).problems() == []
    assert status == 3, f"the stale chainer is still running: {stale.stderr[-3000:]}"
    assert "another chainer took over" in stale.stderr


def pause_inside_a_transaction(led: Ledger, proc: ChainerProc, within: float = 60.0) -> bool:
    """SIGSTOP ``proc`` while its database session is inside a batch transaction (holding the
    head row's lock); True once that happened, False if it was never caught there ``within``
    seconds (a fast machine spends little time per batch: the stream must keep batches coming)."""
    deadline = time.monotonic() + within
    with led.admin() as admin:
        while time.monotonic() < deadline:
            busy = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'baldur-audit' AND xact_start IS NOT NULL"
                " AND query LIKE 'COPY audit_entries%'"
            ).fetchone()
            if busy is None:
                time.sleep(0.002)
                continue
            proc.signal(signal.SIGSTOP)
            still = admin.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s AND xact_start IS NOT NULL", (busy[0],)
            ).fetchone()
            if still is not None:
                return True
            proc.signal(signal.SIGCONT)
    return False


def test_standby_takes_over_from_a_chainer_paused_inside_its_transaction(
    led: Ledger, chainers: Chainers
) -> None:
    """Regression: a chainer paused (or cut off) inside its batch transaction held the head
    row's lock and the standby's take-over waited for it without limit. Writer sessions now end
    when stalled (idle in transaction 10 s, statement 20 s): bounded by STALLED_BOUND."""
    watch = Watch(led)
    procs = [
        chainers.start("--session-timeout", str(SESSION), "--batch-size", "5000"),
        chainers.start("--session-timeout", str(SESSION), "--batch-size", "5000"),
    ]
    led.produce_events(100)
    wait_for(watch.caught_up, 60, "the first 100 sealed")
    stale = wait_for(lambda: active(led, procs), 60, "an active chainer")
    _, _, epoch = watch.head()
    # Paced, so that batches keep coming while we try to catch one in its transaction.
    with EventStream(led, scaled(6000, 40_000), chunk=200, over=scaled(30.0, 60.0)) as stream:
        assert pause_inside_a_transaction(led, stale), "never caught the chainer inside a batch"
        paused_at = time.monotonic()
        try:
            took_over = True
            try:
                wait_for(
                    lambda: watch.head()[2] > epoch,
                    STALLED_BOUND,
                    "the standby to take over from the chainer paused mid-transaction",
                )
            except AssertionError:
                took_over = False
            waited = time.monotonic() - paused_at
        finally:
            stale.signal(signal.SIGCONT)
        stream.wait(300)
    wait_for(watch.caught_up, 180, "every record sealed")
    watch.close()
    check = check_ledger(led, stream.acked)
    record_result(
        "hot standby: SIGSTOP inside the batch transaction",
        runs=1,
        events=stream.count + 100,
        check=check,
        wall_s=waited,
        ok=took_over and not check.problems(),
        detected=f"standby {'took over' if took_over else 'did NOT take over'} within "
        f"{waited:.1f} s (bound {STALLED_BOUND:.0f} s)",
    )
    assert not check.problems(), check.problems()
    assert took_over, (
        f"failover stalled for {waited:.0f} s behind the paused chainer's row lock; "
        f"the standby's log: {standby_log(procs, stale)}"
    )
