"""Signed checkpoints on the real stack: the chainer checkpoints every N entries and
publishes to the witness topic (and a write-once directory); `verify` uses the witness to find
what a chain walk cannot see — a truncated tail with the head rolled back to match, a suffix
re-linked by a key holder, a changed stored tree — and a state file; evidence bundles check
offline after the database and the topics are gone; failures of checkpointing never stop
sealing; unknown keys are unverifiable, never tampered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Ledger

pytestmark = pytest.mark.integration


@pytest.fixture
def witnessed(ledger: Ledger) -> Iterator[Ledger]:
    """The ledger, checkpointing every 10 entries; its witness topic is removed afterwards."""
    ledger.env["BALDUR_CHECKPOINT_EVERY"] = "10"
    yield ledger
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": ledger.bootstrap}).delete_topics([f"{ledger.topic}.checkpoints"])


def chain(ledger: Ledger, *extra: str, expect: int = 0) -> dict[str, Any]:
    done = ledger.cli("chain", "--until-idle", "1", "--session-timeout", "3", "--json", *extra)
    assert done.returncode == expect, done.stderr
    return json.loads(done.stdout) if expect == 0 else {"stderr": done.stderr}


def verify(ledger: Ledger, *extra: str, expect: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = ledger.cli("verify", "--json", *extra, extra_env=env)
    assert done.returncode == expect, (done.stdout, done.stderr)
    return json.loads(done.stdout)


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


def test_bundles_check_offline_after_the_database_and_topics_are_gone(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led = witnessed
    led.produce_events(30)
    assert chain(led, "--batch-size", "10")["sealed"] == 30
    report = verify(led)
    assert report["witness"]["status"] == "matched" and report["witness"]["checkpoint"]["size"] == 30
    keys = led.cli("keys", "public")
    assert keys.returncode == 0 and "PRIVATE" not in keys.stdout
    (tmp_path / "ledger.pub").write_text(keys.stdout)
    proved = led.cli("prove", "17")
    assert proved.returncode == 0, proved.stderr
    (tmp_path / "bundle.json").write_bytes(proved.stdout.encode("ascii"))
    grown = led.cli("consistency", "10", "latest")
    assert grown.returncode == 0, grown.stderr
    (tmp_path / "grown.json").write_text(grown.stdout)
    assert led.cli("prove", "31").returncode == 2  # not covered by a checkpoint yet

    import psycopg
    from confluent_kafka.admin import AdminClient

    from tests.support.stack import ADMIN_DSN

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{led.dbname}" WITH (FORCE)')
    AdminClient({"bootstrap.servers": led.bootstrap}).delete_topics([led.topic, f"{led.topic}.checkpoints"])

    done = offline("check-proof", "bundle.json", "--public-key", "ledger.pub", cwd=tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.startswith("valid: entry 17 (alice update svc.timeout)"), done.stdout
    done = offline("check-proof", "grown.json", "--public-key", "ledger.pub", "--json", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["new"]["size"] == 30, done.stdout

    data = (tmp_path / "bundle.json").read_bytes()
    text = data.decode("ascii")
    # Every byte is flipped in tests/unit/consumers/test_proofs.py; here a field, the signature, a proof hash.
    places = [text.index('"actor"') + 10, text.index("\\u2014") + 60, text.index('"hashes"') + 20]
    for position in places:
        flipped = tmp_path / f"flipped-{position}.json"
        flipped.write_bytes(data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :])
        done = offline("check-proof", flipped.name, "--public-key", "ledger.pub", cwd=tmp_path)
        assert done.returncode == 1 and done.stdout.startswith("INVALID: "), (position, done.stdout)

    from baldur_audit.schemas.checkpoint import CheckpointSigner

    stranger = CheckpointSigner.from_seed("someone-else", bytes(32)).verifier_key()
    (tmp_path / "stranger.pub").write_text(stranger + "\n")
    done = offline("check-proof", "bundle.json", "--public-key", "stranger.pub", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout.startswith("UNVERIFIABLE: "), done.stdout


def _roll_back(led: Ledger, keep: int) -> None:
    with led.admin() as conn:
        conn.execute(f"DELETE FROM audit_entries WHERE seq > {keep}")
        conn.execute(
            f"UPDATE chain_head SET last_seq = {keep}, last_offset = kafka_offset,"
            f" last_link = link FROM audit_entries WHERE audit_entries.seq = {keep}"
        )


def test_a_truncated_tail_with_the_head_rolled_back_is_found_by_the_witness(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led = witnessed
    worm, state = tmp_path / "worm", tmp_path / "verifier.state"
    led.env["BALDUR_CHECKPOINT_DIR"] = str(worm)
    led.produce_events(40)
    chain(led)
    assert sorted(os.listdir(worm)) == ["40.note"]
    accepted = verify(led, "--state", str(state))
    assert accepted["witness"]["state"]["saved_size"] == 40 and state.read_text().startswith("baldur-audit/")

    _roll_back(led, 37)
    report = verify(led, expect=1)
    assert (report["first_break"]["seq"], report["first_break"]["kind"]) == (38, "missing")
    assert (
        "ends at seq 37" in report["first_break"]["detail"]
        and "covers 40 entries" in report["first_break"]["detail"]
    )
    assert report["witness"]["status"] == "mismatch"
    assert verify(led, "--no-witness")["intact"] is True  # the walk alone cannot see it
    remembered = verify(led, "--no-witness", "--state", str(state), expect=1)
    assert remembered["first_break"]["seq"] == 38
    assert "accepted earlier" in remembered["first_break"]["detail"]
    # The write-once directory alone is witness enough.
    by_dir = verify(led, expect=1, env={"BALDUR_WITNESS_TOPIC": f"{led.topic}.absent"})
    assert by_dir["first_break"]["seq"] == 38 and "directory" in by_dir["first_break"]["detail"]


def test_a_suffix_relinked_by_a_key_holder_is_located_between_witnessed_checkpoints(
    witnessed: Ledger, tmp_path: Path
) -> None:
    from baldur_audit.consumers.chain_keys import parse_key
    from baldur_audit.consumers.postgres.rows import ENTRY_COLUMNS, copy_data
    from baldur_audit.schemas.chain import ChainHead, Sealer, SigningKey, TopicRecord
    from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
    from tests.support.stack import TEST_KEY, make_event

    led = witnessed
    state = tmp_path / "verifier.state"
    led.produce_events(40)
    chain(led, "--batch-size", "10")  # checkpoints at 10, 20, 30 and 40
    verify(led, "--state", str(state))
    with led.admin() as conn:
        head = conn.execute("SELECT kafka_offset, link FROM audit_entries WHERE seq = 24").fetchone()
        rows = conn.execute(
            "SELECT kafka_offset, floor(extract(epoch FROM kafka_timestamp) * 1000)::int8,"
            " payload FROM audit_entries WHERE seq >= 25 ORDER BY seq"
        ).fetchall()
        records = [TopicRecord(led.topic, 0, offset, ms, payload) for offset, ms, payload in rows]
        records[0] = TopicRecord(
            led.topic, 0, rows[0][0], rows[0][1], encode_event(make_event(99, actor="mallory"))
        )
        sealer = Sealer(
            key=SigningKey.derive(parse_key(TEST_KEY)),
            head=ChainHead(24, head[0], bytes(head[1])),
            schemas=KNOWN_SCHEMAS,
        )
        forged = sealer.seal_batch(records, lambda ids: {})
        conn.execute("DELETE FROM audit_entries WHERE seq >= 25")
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY audit_entries ({', '.join(ENTRY_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.write(copy_data(forged))
        conn.execute(
            "UPDATE chain_head SET last_seq = 40, last_offset = %s, last_link = %s",
            (forged[-1].record.offset, forged[-1].link),
        )

    assert verify(led, "--no-witness")["intact"] is True  # the key holder re-linked everything
    report = verify(led, expect=1)
    brk = report["first_break"]
    assert (brk["seq"], brk["kind"]) == (21, "modified"), brk
    assert "within seq 21..30" in brk["detail"] and "replay" in brk["detail"]
    assert verify(led, "--no-witness", "--state", str(state), expect=1)["first_break"]["kind"] == "modified"
    replay = led.cli_json("replay", expect=(1,))["first_divergence"]
    assert (replay["seq"], replay["kind"]) == (25, "modified")
    proved = led.cli("prove", "25")
    assert proved.returncode == 1 and "does not verify" in proved.stderr


def test_a_changed_stored_tree_is_found_and_no_bundle_is_made_from_it(witnessed: Ledger) -> None:
    led = witnessed
    led.produce_events(12)
    chain(led)
    with led.admin() as conn:
        conn.execute("UPDATE merkle_nodes SET hash = sha256(hash) WHERE level = 0 AND idx = 2")
    proved = led.cli("prove", "4")  # its proof uses leaf 3's hash
    assert proved.returncode == 1 and "inclusion proof" in proved.stderr, proved.stderr
    # verify checks the stored tree's root at each witnessed size (its frontier nodes), not
    # every node: a changed inner node surfaces when a proof uses it, as above.
    with led.admin() as conn:
        conn.execute("UPDATE merkle_nodes SET hash = sha256(hash) WHERE level = 3 AND idx = 0")
    report = verify(led, expect=1)
    assert report["first_break"]["kind"] == "modified" and "merkle_nodes" in report["first_break"]["detail"]
    with led.app() as conn:  # and the application role cannot do it
        import psycopg

        for statement in (
            "UPDATE merkle_nodes SET hash = hash",
            "DELETE FROM checkpoints",
            "TRUNCATE merkle_nodes",
            "UPDATE merkle_tree SET size = 0",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_checkpoint_failures_never_stop_sealing_and_unknown_keys_are_unverifiable(
    witnessed: Ledger, tmp_path: Path
) -> None:
    led = witnessed
    led.produce_events(12)
    failing = led.cli(
        "chain",
        "--until-idle",
        "1",
        "--session-timeout",
        "3",
        "--json",
        extra_env={"BALDUR_WITNESS_TOPIC": "not a valid topic!"},
    )
    assert failing.returncode == 0 and json.loads(failing.stdout)["sealed"] == 12
    assert "checkpoint failed, retrying in" in failing.stderr
    production = led.cli("chain", "--until-idle", "1", extra_env={"BALDUR_ENV": "production"})
    assert production.returncode == 2 and "BALDUR_SECRETS_CHECKPOINT_KEY is not set" in production.stderr

    made = led.cli_json("checkpoint")
    assert made["size"] == 12 and made["leaves_appended"] == 0  # the failed attempt built the tree
    assert "PRIVATE" not in json.dumps(made)
    dev_pub = led.cli("keys", "public").stdout.splitlines()[1]
    other = {
        "BALDUR_SECRETS_CHECKPOINT_KEY": "hex:" + "42" * 32,
        "BALDUR_STATE_DIR": str(tmp_path / "elsewhere"),
    }
    report = verify(led, expect=2, env=other)  # a key we do not hold: cannot tell, not tampered
    assert report["intact"] is True and report["witness"]["status"] == "unverifiable"
    rotated = verify(led, env={**other, "BALDUR_CHECKPOINT_PUBLIC_KEYS": dev_pub})
    assert rotated["witness"]["status"] == "matched"
    assert "42" * 32 not in json.dumps(rotated)
    bad_key = led.cli("checkpoint", extra_env={"BALDUR_SECRETS_CHECKPOINT_KEY": "hex:abcd-secret"})
    assert bad_key.returncode == 2 and "abcd-secret" not in bad_key.stderr
    assert len(bad_key.stderr.strip().splitlines()) == 1


def test_checkpoints_and_bundles_outlive_retention(witnessed: Ledger, tmp_path: Path) -> None:
    led = witnessed
    led.produce_events(10)
    chain(led)  # a checkpoint at 10
    (tmp_path / "ledger.pub").write_text(led.cli("keys", "public").stdout)
    assert led.cli_json("prune", "--older-than", "0s", "--mode", "payload")["changed"] == 10
    proved = led.cli("prove", "3")
    assert proved.returncode == 0, proved.stderr
    (tmp_path / "pruned.json").write_text(proved.stdout)
    done = offline("check-proof", "pruned.json", "--public-key", "ledger.pub", cwd=tmp_path)
    assert done.returncode == 0 and "fields were pruned" in done.stdout, done.stdout
    assert led.cli_json("prune", "--older-than", "0s", "--mode", "entries")["anchor"]["seq"] == 10
    assert verify(led)["witness"]["status"] == "matched"  # size 10: the anchor holds its link
    dropped = led.cli("prove", "3")
    assert dropped.returncode == 2 and "dropped by retention" in dropped.stderr
    led.produce_events(10, start=10)
    chain(led)
    report = verify(led)
    assert report["witness"]["checkpoint"]["size"] == 20 and report["entries"] == 10
