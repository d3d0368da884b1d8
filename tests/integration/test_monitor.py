"""The scheduled verifier, ``baldur-audit monitor``, on the real stack: incremental rounds (only
the entries sealed since the last round, from the state file) agree with a full verify and
find an edit among the new entries at its seq; an edit behind the last verified seq is what
only the periodic full round finds; a rewritten history or an inconsistent stored tree fails
the checkpoint step; incremental rounds work across a key rotation and check the
forward-secure epoch rule; ``--once`` exits with verify's codes; a running monitor is scraped
over HTTP, sees a tamper within a bounded wait, survives an unreachable database and stops
promptly on SIGTERM."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.scrape import free_port, get, scrape, wait_for
from tests.support.stack import ADMIN_DSN, TEST_KEY, Ledger, with_dbname

pytestmark = pytest.mark.integration

KEY_B = "hex:" + "b7" * 32


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def witnessed(ledger: Ledger) -> Iterator[Ledger]:
    """The ledger, checkpointing every 10 entries."""
    ledger.env["BALDUR_CHECKPOINT_EVERY"] = "10"
    yield ledger


def chain(ledger: Ledger, env: dict[str, str] | None = None) -> None:
    done = ledger.cli(
        "chain", "--until-idle", "1", "--session-timeout", "3", "--batch-size", "10", extra_env=env
    )
    assert done.returncode == 0, done.stderr


def monitor_once(
    ledger: Ledger, state: Path, *extra: str, expect: int = 0, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One round of ``monitor --once --json``; its JSON line."""
    done = ledger.cli("monitor", "--once", "--json", "--state", str(state), *extra, extra_env=env)
    assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return dict(json.loads(lines[0]))


def verify(ledger: Ledger, *extra: str, expect: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = ledger.cli("verify", "--json", *extra, extra_env=env)
    assert done.returncode == expect, (done.stdout, done.stderr)
    return dict(json.loads(done.stdout))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Monitors a test starts; stopped by PID afterwards (SIGTERM, then SIGKILL)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def start_monitor(
    ledger: Ledger, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baldur_audit.consumers",
            "monitor",
            "--every",
            "1s",
            "--metrics-address",
            f"127.0.0.1:{port}",
            "--no-witness",
            *extra,
        ],
        env={**ledger.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str], timeout: float = 20) -> tuple[str, str]:
    """SIGTERM, then the process's output; it must end with status 0 within ``timeout``."""
    os.kill(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, stderr)
    return stdout, stderr


def forge_from(ledger: Ledger, first_seq: int, key_text: str) -> None:
    """A database superuser holding the chain key ``key_text`` changes entry ``first_seq`` and
    re-links it and every entry after it: a chain that links perfectly."""
    from baldur_audit.consumers.chain_keys import parse_key
    from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
    from baldur_audit.schemas.chain import EntryKind, LedgerLinker, SigningKey

    key = SigningKey.derive(parse_key(key_text))
    with ledger.admin() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = %s", (first_seq,))
    with PostgresLedgerStore.connect(ledger.dsn) as store, store.snapshot() as snap:
        meta = store.read_meta()
        rows = list(store.iter_sealed_rows(snap, from_seq=first_seq - 1))
    linker = LedgerLinker(key, topic=meta.topic, partition=meta.partition)
    prev = bytes(rows[0][8])
    with ledger.admin() as conn:
        for row in rows[1:]:
            seq, offset, kind, duplicate_of, value_null, _, digest, _, _, view_sha, timestamp_ms = row[:11]
            prev = linker.link(
                prev,
                seq,
                offset,
                timestamp_ms,
                EntryKind.from_label(kind).code,
                duplicate_of,
                value_null,
                bytes(digest),
                bytes(view_sha),
            )
            conn.execute(
                "UPDATE audit_entries SET key_id = %s, link = %s, view_digest = %s WHERE seq = %s",
                (key.key_id, prev, bytes(view_sha), seq),
            )
        conn.execute("UPDATE chain_head SET last_link = %s WHERE id = 1", (prev,))


# -- incremental rounds ----------------------------------------------------------------------------


def test_an_incremental_round_walks_only_the_new_entries_and_agrees_with_a_full_verify(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led, state = witnessed, tmp_path / "monitor.json"
    led.produce_events(30)
    chain(led)
    first = monitor_once(led, state)
    assert (first["mode"], first["result"], first["walked"], first["entries"]) == ("full", "intact", 30, 30)
    assert first["checkpoints"]["status"] == "accepted" and first["checkpoints"]["newest_size"] == 30
    assert first["witness"]["status"] == "matched"
    saved = json.loads(state.read_text())
    assert saved["verified"]["seq"] == 30 and saved["full_at"] is not None and saved["open_break"] is None

    led.produce_events(25, start=30)
    chain(led)  # checkpoints at 40, 50 (and 55 when the chainer stops)
    rnd = monitor_once(led, state)
    assert (rnd["mode"], rnd["result"], rnd["exit_code"]) == ("incremental", "intact", 0)
    assert (rnd["walked"], rnd["from_seq"]) == (25, 31)
    newest = rnd["checkpoints"]["newest_size"]
    assert rnd["checkpoints"] == {**rnd["checkpoints"], "status": "proved", "accepted_size": 30}
    assert newest >= 50 and rnd["leaves_checked"] == newest - 30  # the new entries the tree holds
    full = verify(led)
    for field in ("intact", "entries", "head", "first_break"):
        assert rnd[field] == full[field], field
    assert rnd["witness"]["status"] == full["witness"]["status"] == "matched"
    assert json.loads(state.read_text())["verified"]["seq"] == 55

    again = monitor_once(led, state)  # nothing new: nothing to walk, still intact
    assert (again["mode"], again["walked"], again["result"]) == ("incremental", 0, "intact")
    forced = monitor_once(led, state, "--full-every", "0s")
    assert (forced["mode"], forced["walked"], forced["entries"], forced["result"]) == (
        "full",
        55,
        55,
        "intact",
    )


def test_an_edit_among_the_new_entries_is_found_by_the_incremental_round_at_its_seq(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led, state = witnessed, tmp_path / "monitor.json"
    led.produce_events(20)
    chain(led)
    monitor_once(led, state)
    led.produce_events(20, start=20)
    chain(led)
    with led.admin() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 33")
    rnd = monitor_once(led, state, expect=1)
    assert (rnd["mode"], rnd["result"]) == ("incremental", "tampered")
    assert rnd["first_break"]["seq"] == 33 and rnd["first_break"]["kind"] == "modified"
    assert "actor" in rnd["first_break"]["detail"]
    saved = json.loads(state.read_text())
    assert saved["verified"]["seq"] == 20 and saved["open_break"]["seq"] == 33
    # a round after a break is full (a break is never forgotten by walking past it)
    after = monitor_once(led, state, expect=1)
    assert (after["mode"], after["first_break"]["seq"]) == ("full", 33)


def test_an_edit_behind_the_last_verified_seq_is_missed_by_incremental_and_found_by_the_next_full_round(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The limit of incremental verification, documented: an edit of an entry the last round
    already verified, which leaves its stored link (and the stored tree) as they were, is
    never read again by an incremental round — it reports intact. The periodic full round
    (``--full-every``) walks the whole ledger and finds it at its seq."""
    led, state = ledger, tmp_path / "monitor.json"
    led.produce_events(30)
    chain(led)
    monitor_once(led, state, "--no-witness")
    with led.admin() as conn:
        conn.execute("UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 5")
    led.produce_events(5, start=30)
    chain(led)
    missed = monitor_once(led, state, "--no-witness")
    assert (missed["mode"], missed["result"], missed["walked"]) == ("incremental", "intact", 5)
    found = monitor_once(led, state, "--no-witness", "--full-every", "0s", expect=1)
    assert (found["mode"], found["result"]) == ("full", "tampered")
    assert found["first_break"]["seq"] == 5 and "reason" in found["first_break"]["detail"]


def test_a_history_rewritten_by_a_holder_of_both_keys_fails_the_checkpoint_step(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led, state = witnessed, tmp_path / "monitor.json"
    led.produce_events(20)
    chain(led)
    assert monitor_once(led, state, "--no-witness")["checkpoints"]["newest_size"] == 20
    led.produce_events(10, start=20)
    chain(led)
    # Entry 5 rewritten, everything re-linked with the HMAC key, the tree rebuilt and a new
    # checkpoint signed with the checkpoint key: every link, tree node and signature checks out.
    forge_from(led, 5, TEST_KEY)
    with led.admin() as conn:
        conn.execute("DELETE FROM merkle_nodes")
        conn.execute("DELETE FROM merkle_tree")
    done = led.cli("checkpoint", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == 30
    assert verify(led, "--no-witness")["intact"] is True  # a chain walk cannot tell
    rnd = monitor_once(led, state, "--no-witness", expect=1)
    assert rnd["checkpoints"]["status"] == "mismatch" and rnd["checkpoints"]["accepted_size"] == 20
    assert rnd["first_break"]["seq"] == 1 and rnd["first_break"]["kind"] == "modified"
    assert "accepted earlier" in rnd["first_break"]["detail"] and "1..20" in rnd["first_break"]["detail"]


def test_entries_re_linked_by_a_key_holder_below_the_verified_seq_are_found_by_either_round(
    ledger: Ledger, tmp_path: Path
) -> None:
    led, state = ledger, tmp_path / "monitor.json"
    led.produce_events(20)
    chain(led)
    monitor_once(led, state, "--no-witness")
    forge_from(led, 12, TEST_KEY)  # no checkpoint: only the verified entry's link remembers
    assert verify(led, "--no-witness")["intact"] is True
    for mode in ("incremental", "full"):  # after a break, the next round is full
        rnd = monitor_once(led, state, "--no-witness", expect=1)
        assert rnd["mode"] == mode and rnd["first_break"]["seq"] == 20, rnd
        assert "earlier walk" in rnd["first_break"]["detail"]


def test_a_stored_tree_that_no_longer_proves_the_accepted_checkpoint_fails_the_consistency_step(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led, state = witnessed, tmp_path / "monitor.json"
    led.produce_events(20)
    chain(led)
    monitor_once(led, state)
    led.produce_events(10, start=20)
    chain(led)
    # The node over leaves 20..23 is used by the consistency proof from size 20 to 30, but by
    # neither root (size 20: nodes (4,0) (2,4); size 30: (4,0) (3,2) (2,6) (1,14)).
    with led.admin() as conn:
        conn.execute("UPDATE merkle_nodes SET hash = sha256(hash) WHERE level = 2 AND idx = 5")
    assert verify(led)["intact"] is True  # control: the roots at the witnessed sizes still match
    rnd = monitor_once(led, state, expect=1)
    assert rnd["checkpoints"]["status"] == "mismatch"
    assert rnd["first_break"]["seq"] == 21 and "consistent" in rnd["first_break"]["detail"]


# -- keys ------------------------------------------------------------------------------------------


def test_incremental_rounds_work_across_a_key_rotation(ledger: Ledger, tmp_path: Path) -> None:
    from baldur_audit.consumers.settings import OLD_KEYS_ENV, RETIRED_IDS_ENV
    from baldur_audit.schemas.chain import SigningKey

    led, state = ledger, tmp_path / "monitor.json"
    a_id = SigningKey.derive(bytes.fromhex(TEST_KEY[4:])).key_id
    both = {"BALDUR_SECRETS_AUDIT_SIGNING_KEY": KEY_B, OLD_KEYS_ENV: TEST_KEY}
    led.produce_events(10)
    chain(led)  # under A
    assert monitor_once(led, state, "--no-witness")["mode"] == "full"
    led.produce_events(10, start=10)
    chain(led, {"BALDUR_SECRETS_AUDIT_SIGNING_KEY": KEY_B, RETIRED_IDS_ENV: a_id})  # under B
    rnd = monitor_once(led, state, "--no-witness", env=both)
    assert (rnd["mode"], rnd["result"], rnd["walked"], rnd["from_seq"]) == ("incremental", "intact", 10, 11)
    led.produce_events(5, start=20)
    chain(led, {"BALDUR_SECRETS_AUDIT_SIGNING_KEY": KEY_B, RETIRED_IDS_ENV: a_id})
    with led.admin() as conn:
        conn.execute("UPDATE audit_entries SET target = 'elsewhere' WHERE seq = 23")
    rnd = monitor_once(led, state, "--no-witness", env=both, expect=1)
    assert rnd["mode"] == "incremental" and rnd["first_break"]["seq"] == 23
    # without B, the new entries are unverifiable: could not check (2), never tampered
    rnd = monitor_once(led, tmp_path / "other.json", "--no-witness", expect=2)
    assert rnd["result"] == "unchecked" and rnd["first_break"]["kind"] == "unverifiable"


def test_incremental_rounds_check_the_forward_secure_epoch_rule(ledger: Ledger, tmp_path: Path) -> None:
    from baldur_audit.consumers import chain_keys as keys_config
    from baldur_audit.consumers.settings import EPOCH_ENV

    led, state = ledger, tmp_path / "monitor.json"
    fs = {EPOCH_ENV: "4"}  # epoch 0: seq 1-4, 1: 5-8, 2: 9-12, 3: 13-16, 4: 17-20
    led.produce_events(6)
    chain(led, fs)
    assert monitor_once(led, state, "--no-witness", env=fs)["mode"] == "full"
    led.produce_events(8, start=6)
    chain(led, fs)
    rnd = monitor_once(led, state, "--no-witness", env=fs)  # across epochs 1, 2 and 3
    assert (rnd["mode"], rnd["result"], rnd["walked"], rnd["from_seq"]) == ("incremental", "intact", 8, 7)
    led.produce_events(4, start=14)
    chain(led, fs)  # the chainer now holds epoch 4's key only
    current = json.loads((led.state_dir / keys_config.RATCHET_FILE).read_text())["key_hex"]
    # A thief of epoch 4's key rewrites entry 15 (epoch 3) and re-links 15..18 with it:
    # every link checks out, only the epoch rule sees it.
    forge_from(led, 15, "hex:" + current)
    rnd = monitor_once(led, state, "--no-witness", env=fs, expect=1)
    assert (rnd["mode"], rnd["walked"]) == ("incremental", 0)
    assert rnd["first_break"]["seq"] == 15 and rnd["first_break"]["kind"] == "modified"
    assert "epoch 3" in rnd["first_break"]["detail"]
    assert verify(led, "--no-witness", env=fs, expect=1)["first_break"]["seq"] == 15  # verify agrees


def test_incremental_rounds_start_after_a_retention_anchor_and_check_its_signature(
    ledger: Ledger, tmp_path: Path
) -> None:
    led, state = ledger, tmp_path / "monitor.json"
    led.produce_events(2)
    chain(led)
    monitor_once(led, state, "--no-witness")  # verified up to seq 2
    led.produce_events(2, start=2)
    chain(led)
    with led.app() as conn:
        (old_end,) = conn.execute("SELECT max(kafka_timestamp) FROM audit_entries").fetchone()
    time.sleep(10)  # entries 1-4 become older than the retention period, 5-7 not
    led.produce_events(3, start=4)
    chain(led)
    period = f"{math.floor((datetime.now(UTC) - old_end).total_seconds())}s"
    done = led.cli_json("prune", "--older-than", period, "--mode", "entries")
    assert done["anchor"]["seq"] == 4
    # entries 3-4 (never walked) were dropped behind the anchor: the round starts after it
    rnd = monitor_once(led, state, "--no-witness")
    assert (rnd["mode"], rnd["result"], rnd["walked"], rnd["entries"]) == ("incremental", "intact", 3, 3)
    assert rnd["retention"]["anchor"]["seq"] == 4 and rnd["from_seq"] == 5
    led.produce_events(2, start=7)
    chain(led)
    rnd = monitor_once(led, state, "--no-witness")  # from the verified seq, beyond the anchor
    assert (rnd["mode"], rnd["walked"], rnd["from_seq"], rnd["entries"]) == ("incremental", 2, 8, 5)
    with led.admin() as conn:  # the anchor's MAC is checked by every round
        conn.execute("UPDATE retention_anchors SET kafka_offset = kafka_offset + 1")
    rnd = monitor_once(led, state, "--no-witness", expect=1)
    assert rnd["mode"] == "incremental" and (rnd["first_break"]["seq"], rnd["first_break"]["kind"]) == (
        4,
        "modified",
    )


# -- the command ------------------------------------------------------------------------------------


def test_monitor_once_exits_with_verify_codes(ledger: Ledger, tmp_path: Path) -> None:
    led, state = ledger, tmp_path / "monitor.json"
    led.produce_events(5)
    chain(led)
    done = led.cli("monitor", "--once", "--state", str(state), "--no-witness")
    assert done.returncode == 0 and done.stdout.startswith("intact: 5 entries"), done.stdout
    with led.admin() as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq = 5")
    done = led.cli("monitor", "--once", "--state", str(state), "--no-witness")
    assert done.returncode == 1 and done.stdout.startswith("TAMPERED: first break at seq 5"), done.stdout
    unreachable = {"BALDUR_SQL_DSN": "postgresql://baldur:secret-pw@127.0.0.1:1/none"}
    done = led.cli("monitor", "--once", "--state", str(state), "--no-witness", extra_env=unreachable)
    assert done.returncode == 2 and "could not check" in done.stdout, (done.stdout, done.stderr)
    assert "secret-pw" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    for bad in (("--every", "soon"), ("--full-every", "1x"), ("--every", "0s"), ("--metrics-address", "x")):
        done = led.cli("monitor", *bad)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (bad, done.stderr)
        assert "Traceback" not in done.stderr
    done = led.cli("monitor", "--once", "--state", str(tmp_path))  # a folder: cannot be the state
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_running_monitor_is_scraped_finds_a_tamper_and_stops_on_sigterm(
    ledger: Ledger, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    led = ledger
    led.produce_events(40)
    chain(led)
    port = free_port()
    # every round is incremental after the first, except one full round every 3 s
    proc = start_monitor(led, port, "--full-every", "3s", "--state", str(tmp_path / "monitor.json"))
    processes.append(proc)
    samples = wait_for(
        lambda: (
            (s := scrape(port)).get('baldur_audit_verify_rounds_total{mode="incremental",result="intact"}', 0)
            >= 1
            and s
        ),
        60,
        "an incremental intact round",
    )
    assert samples["baldur_audit_verify_intact"] == 1 and samples["baldur_audit_verify_first_break_seq"] == 0
    assert samples['baldur_audit_verify_entries{mode="full"}'] == 40
    assert samples["baldur_audit_verify_verified_seq"] == 40
    assert samples["baldur_audit_verify_last_success_timestamp_seconds"] <= time.time()
    assert samples['baldur_audit_verify_rounds_total{mode="full",result="tampered"}'] == 0
    assert get(port, "/readyz") == (200, "ok\n")

    with led.admin() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 17")
    samples = wait_for(
        lambda: (s := scrape(port)).get("baldur_audit_verify_intact") == 0 and s, 60, "intact 0"
    )
    assert samples["baldur_audit_verify_first_break_seq"] == 17
    assert samples['baldur_audit_verify_rounds_total{mode="full",result="tampered"}'] >= 1
    assert get(port, "/readyz") == (200, "ok\n")  # ready: it checks; the verdict is a metric

    started = time.monotonic()
    stdout, _ = stop(proc)
    assert time.monotonic() - started < 15  # promptly: the wait between rounds is cut short
    assert "TAMPERED: first break at seq 17" in stdout
    assert get(port, "/livez")[0] == 0


def test_a_round_that_cannot_reach_the_database_is_reported_and_the_next_one_retries(
    ledger: Ledger, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    import psycopg

    led = ledger
    led.produce_events(3)
    chain(led)
    later = f"{led.dbname}_later"
    port = free_port()
    proc = start_monitor(
        led,
        port,
        "--state",
        str(tmp_path / "monitor.json"),
        env={"BALDUR_SQL_DSN": with_dbname(led.dsn, later)},
    )
    processes.append(proc)
    unchecked = 'baldur_audit_verify_rounds_total{mode="full",result="unchecked"}'
    samples = wait_for(lambda: (s := scrape(port)).get(unchecked, 0) >= 2 and s, 60, "two unchecked rounds")
    assert "baldur_audit_verify_intact" not in samples  # no verdict before a round could check
    assert "baldur_audit_verify_last_run_timestamp_seconds" in samples
    status, body = get(port, "/readyz")
    assert status == 503 and "database" in body
    assert proc.poll() is None  # it keeps running
    try:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{led.dbname}" RENAME TO "{later}"')
        samples = wait_for(
            lambda: (s := scrape(port)).get("baldur_audit_verify_intact") == 1 and s, 60, "intact"
        )
        assert samples['baldur_audit_verify_entries{mode="full"}'] == 3
        assert get(port, "/readyz") == (200, "ok\n")
        stdout, stderr = stop(proc)
        assert "could not check" in stdout and "intact: 3 entries" in stdout
        assert "retrying next round" in stderr
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (later,)).fetchone():
                conn.execute(f'ALTER DATABASE "{later}" RENAME TO "{led.dbname}" ')
