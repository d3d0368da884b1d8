"""`make demo`: the whole story on the local stack.

A simulated payments service records a burst of configuration changes and
automated healing decisions through the producer library (secrets redacted and
client IPs masked before anything leaves the process); the chainer seals them
into PostgreSQL; verify walks the chain; a forensic query answers "what changed
right before the incident?"; then a copy of the ledger is tampered with and
verify and replay pinpoint the change.

Only `init` runs as the tables' owner (``BALDUR_SQL_OWNER_DSN``); everything else runs as the
chainer role of ``BALDUR_SQL_DSN``, which owns nothing, and one step shows what that role's
credential cannot do.

Each run uses a fresh topic and database (``baldur.demo.<stamp>``,
``baldur_demo_<stamp>``) so it can be repeated; earlier demo databases are dropped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.defaults import DEFAULT_BOOTSTRAP, DEFAULT_DSN, DEFAULT_OWNER_DSN, LOCAL_ADMIN_DSN

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("BALDUR_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
DSN = os.environ.get("BALDUR_SQL_DSN", DEFAULT_DSN)
OWNER_DSN = os.environ.get("BALDUR_SQL_OWNER_DSN", DEFAULT_OWNER_DSN)
ADMIN_DSN = os.environ.get("BALDUR_TEST_ADMIN_DSN", LOCAL_ADMIN_DSN)
EVENTS = int(os.environ.get("DEMO_EVENTS", "20000"))
SECRET = "hunter2-Sup3rS3cret-db-password"
BOLD, DIM, RED, GREEN, RESET = (
    ("\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("", "", "", "", "")
)


def with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def role(dsn: str) -> str:
    return str(conninfo_to_dict(dsn).get("user", ""))


#: What the runtime role's credential must not be able to do (each tried and rolled back).
ATTEMPTS = (
    "UPDATE chain_head SET last_seq = last_seq - 1",
    "UPDATE chain_head SET last_link = '\\x00'",
    "ALTER TABLE audit_entries DISABLE TRIGGER ALL",
    "DROP TABLE audit_entries CASCADE",
)


def refused(dsn: str) -> None:
    """Try each statement of ATTEMPTS as the role of ``dsn``; the demo fails if one succeeds."""
    allowed = []
    with psycopg.connect(dsn) as conn:
        for statement in ATTEMPTS:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(statement)
            except psycopg.Error as exc:
                reason = (exc.diag.message_primary or str(exc)).splitlines()[0]
                print(f"{GREEN}refused{RESET} {statement}  {DIM}-- {reason}{RESET}")
            else:
                allowed.append(statement)
                print(f"{RED}ALLOWED{RESET} {statement}  {DIM}(rolled back){RESET}")
    if allowed:
        raise SystemExit(f"demo: the role {role(dsn)} may still run: {'; '.join(allowed)}")


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def cli(
    env: dict[str, str], *args: str, check: bool = True, show: bool = True
) -> subprocess.CompletedProcess[str]:
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print(f"{DIM}$ baldur-audit {shown}{RESET}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "baldur_audit.consumers", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out = done.stdout.rstrip()
    if out and show:
        print(out)
    for line in done.stderr.splitlines():
        if "WARNING" not in line or "development signing key" not in line:
            print(f"{DIM}{line}{RESET}", file=sys.stderr)
    if check and done.returncode != 0:
        raise SystemExit(f"demo: `baldur-audit {args[0]}` exited {done.returncode}")
    return done


def simulate_service(trail: AuditTrail, incident: datetime) -> None:
    """A payments platform's day: config changes by people, healing by the platform."""
    rng = random.Random(42)
    people = ["alice", "bob", "carol", "dave"]
    keys = [
        "payments.timeout_ms",
        "payments.retry.max",
        "checkout.feature.new_cart",
        "ledger.pool.size",
        "fraud.threshold",
        "payments.rate_limit.rps",
    ]
    start = incident - timedelta(days=1)
    span = timedelta(days=1) - timedelta(minutes=20)  # a quiet spell before the incident
    for i in range(EVENTS):
        at = start + span * (i / EVENTS)
        if i % 10 == 9:
            trail.record_healing(
                target=rng.choice(["payments-api", "fraud-scorer", "ledger-writer"]),
                action=rng.choice(["trip", "recover", "restart", "scale"]),
                reason="error rate above 5% for 60 s",
                before={"replicas": 3},
                after={"replicas": 4},
                occurred_at=at,
            )
            continue
        key = rng.choice(keys)
        trail.record_change(
            actor=rng.choice(people),
            target=key,
            before={"value": rng.randint(1, 500)},
            after={"value": rng.randint(1, 500)},
            reason="tuning after load test",
            client_ip=f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            occurred_at=at,
        )
    # The change that caused the incident, with a secret that must never be stored.
    trail.record_change(
        actor="mallory",
        target="payments.db.dsn",
        before={"dsn": "postgresql://payments:old-password@db1/payments"},
        after={"dsn": f"postgresql://payments:{SECRET}@db2/payments", "password": SECRET},
        reason="move to the new database",
        client_ip="198.51.100.23, 10.0.0.7",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        occurred_at=incident - timedelta(minutes=4),
    )
    # ... and what the platform's self-healing did about it.
    trail.record_healing(
        target="payments-api",
        action="trip",
        reason="db errors 38% over 60 s",
        before={"breaker": "closed"},
        after={"breaker": "open"},
        occurred_at=incident - timedelta(minutes=2),
    )
    trail.record_healing(
        target="payments-api",
        action="restart",
        reason="liveness probe failed",
        before={"replicas": 4},
        after={"replicas": 4},
        occurred_at=incident - timedelta(minutes=1),
    )


def main() -> None:
    # librdkafka's transient start-up notices (e.g. "coordinator load in progress") are noise here.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    topic, dbname = f"baldur.demo.{stamp}", f"baldur_demo_{stamp}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        for (old,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'baldur\\_demo\\_%'"
        ).fetchall():
            admin.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{dbname}" OWNER "{role(OWNER_DSN)}"')
    state = ROOT / ".local" / "demo-state"
    env = {
        **os.environ,
        "BALDUR_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "BALDUR_AUDIT_TOPIC": topic,
        "BALDUR_SQL_DSN": with_db(DSN, dbname),
        "BALDUR_SQL_OWNER_DSN": with_db(OWNER_DSN, dbname),
        "BALDUR_STATE_DIR": str(state),
        "BALDUR_CHAINER_GROUP": f"baldur-demo-{stamp}",
    }
    env.setdefault("BALDUR_SECRETS_AUDIT_SIGNING_KEY", "")

    step(
        f"1. init, as the owner {role(OWNER_DSN)}: database schema (append-only), "
        f"privileges of the runtime roles, the ledger topic"
    )
    cli(env, "init")

    step(f"2. a simulated payments service records {EVENTS + 3} events through the producer library")
    incident = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    trail = AuditTrail(bootstrap=BOOTSTRAP, topic=topic)
    started = time.monotonic()
    simulate_service(trail, incident)
    remaining = trail.flush(30)
    trail.close()
    print(f"recorded {EVENTS + 3} events in {time.monotonic() - started:.1f} s; undelivered: {remaining}")
    from confluent_kafka import Producer

    poison = Producer({"bootstrap.servers": BOOTSTRAP})
    poison.produce(topic, value=b'{"not": "avro"}')  # a foreign client's bad record
    poison.flush(10)
    print("plus one foreign record that is not Avro")

    step(
        f"3. the chaining consumer, as {role(DSN)}, seals every record "
        "(HMAC chain, COPY, offset in the same transaction)"
    )
    stats = json.loads(cli(env, "chain", "--until-idle", "2", "--json", show=False).stdout)
    busy = max(stats["seconds"] - 2.0, 1e-3)  # less the 2 s idle wait that ends the run
    print(
        f"{GREEN}sealed {stats['sealed']} records ({stats['events']} events, "
        f"{stats['rejected']} rejected) in {busy:.1f} s: {stats['sealed'] / busy:.0f} records/s "
        f"(start-up included){RESET}"
    )

    step("4. verify: recompute every link and check every visible column")
    report = json.loads(cli(env, "verify", "--json", show=False).stdout)
    print(
        f"{GREEN}intact={report['intact']}: {report['entries']} entries verified at "
        f"{report['entries_per_second']:.0f} entries/s{RESET}"
    )

    step(f"5. least privilege: what a stolen {role(DSN)} credential cannot do")
    refused(with_db(DSN, dbname))

    step("6. forensics: what changed in the 10 minutes before the incident?")
    cli(env, "log", "--before", incident.isoformat(), "--window", "10m")
    print("… and the whole trace of the suspicious change:")
    cli(env, "log", "--trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
    cli(env, "log", "--rejected")

    step("7. privacy at the source: the database password never reached Kafka or PostgreSQL")
    with psycopg.connect(with_db(ADMIN_DSN, dbname)) as conn:
        hits = conn.execute(
            "SELECT count(*) FROM audit_entries WHERE position(%s::bytea in"
            " payload) > 0 OR after::text LIKE %s",
            (SECRET.encode(), f"%{SECRET}%"),
        ).fetchone()
        print(f"rows containing the secret: {hits[0] if hits else '?'}")

    step("8. tampering: a superuser quietly edits one old entry in a copy of the ledger")
    copy = dbname + "_tampered"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{dbname}" OWNER "{role(OWNER_DSN)}"')
    with psycopg.connect(with_db(ADMIN_DSN, copy), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # bypass the append-only trigger
        row = conn.execute("SELECT seq FROM audit_entries WHERE actor = 'mallory'").fetchone()
        seq = row[0] if row else 1
        conn.execute("UPDATE audit_entries SET actor = 'alice' WHERE seq = %s", (seq,))
        print(f"UPDATE audit_entries SET actor = 'alice' WHERE seq = {seq}  -- blame someone else")
    tampered = {**env, "BALDUR_SQL_DSN": with_db(DSN, copy)}
    done = cli(tampered, "verify", check=False)
    print(f"{RED}verify exit status {done.returncode}{RESET}")
    done = cli(tampered, "replay", check=False)
    print(f"{RED}replay exit status {done.returncode}{RESET}")

    step("9. and a tail deleted with the chain head rolled back to match: the witnesses and the topic tell")
    with psycopg.connect(with_db(ADMIN_DSN, copy), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = %s", (seq,))
        conn.execute("DELETE FROM audit_entries WHERE seq > %s", (seq - 1,))
        conn.execute(
            "UPDATE chain_head SET last_seq = e.seq, last_offset = e.kafka_offset,"
            " last_link = e.link FROM audit_entries e WHERE e.seq = %s",
            (seq - 1,),
        )
    done = cli(tampered, "verify", check=False)
    if done.returncode == 1:  # the chainer's witnessed checkpoint still covers the cut entries
        print(f"{RED}verify exit status 1{RESET} (not by the chain walk: the witnessed checkpoint)")
    else:
        print(f"verify exit status {done.returncode} (a chain walk alone cannot see a clean cut)")
    done = cli(tampered, "replay", check=False)
    print(f"{RED}replay exit status {done.returncode}{RESET}")

    step("done")
    print(
        f"topic {topic}, ledger database {dbname} (tampered copy: {copy}). Look around:\n"
        f'  eval "$(make -s env)"; export BALDUR_AUDIT_TOPIC={topic} '
        f'BALDUR_SQL_DSN="${{BALDUR_SQL_DSN%/*}}/{dbname}"\n'
        "  .venv/bin/baldur-audit status; .venv/bin/baldur-audit log --actor mallory\n"
        "`make down` stops the local stack."
    )


if __name__ == "__main__":
    main()
