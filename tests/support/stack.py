"""The local stack the integration tests run on, and the helpers that build a ledger on it:
a fresh topic and a fresh database per test, records to produce, the CLI to run.

The addresses are those of ``make up`` (``baldur_audit.schemas.defaults``), each overridden by
its environment variable (``make env`` prints them): ``BALDUR_KAFKA_BOOTSTRAP``,
``BALDUR_SQL_DSN`` (the runtime role every command but ``init`` runs as),
``BALDUR_SQL_OWNER_DSN`` (the owner: creates each test's database and runs ``init``),
``BALDUR_SQL_READER_DSN`` and ``BALDUR_TEST_ADMIN_DSN`` (a superuser, to drop and tamper with
test databases). Locally a missing service skips the integration tests with a reason; under
``CI=true`` it fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.schemas.defaults import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_DSN,
    DEFAULT_OWNER_DSN,
    LOCAL_ADMIN_DSN,
    LOCAL_OPERATOR_DSN,
    LOCAL_READER_DSN,
)

BOOTSTRAP = os.environ.get("BALDUR_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
DSN = os.environ.get("BALDUR_SQL_DSN", DEFAULT_DSN)
#: The owner of the tests' databases, the role ``init`` runs as.
OWNER_DSN = os.environ.get("BALDUR_SQL_OWNER_DSN", DEFAULT_OWNER_DSN)
READER_DSN = os.environ.get("BALDUR_SQL_READER_DSN", LOCAL_READER_DSN)
#: Retention and erasure (``baldur_prune``/``baldur_erase``); the stack's env does not export it.
OPERATOR_DSN = os.environ.get("BALDUR_TEST_OPERATOR_DSN", LOCAL_OPERATOR_DSN)
ADMIN_DSN = os.environ.get("BALDUR_TEST_ADMIN_DSN", LOCAL_ADMIN_DSN)
TEST_KEY = "hex:" + "5e" * 32  # a test-only signing key


def reachable(hostport: str) -> bool:
    """Whether a TCP connection to the first ``host:port`` of ``hostport`` opens within 2 s."""
    host, _, port = hostport.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


def dsn_hostport(dsn: str) -> str:
    """``host:port`` of a libpq connection string."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"


def require_services() -> None:
    """Skip (locally) or fail (CI=true) when Kafka or PostgreSQL is not reachable."""
    missing = [
        name
        for name, where in (("kafka", BOOTSTRAP), ("postgres", dsn_hostport(DSN)))
        if not reachable(where)
    ]
    if missing:
        message = f"services not reachable: {', '.join(missing)} (run `make up`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def dsn_user(dsn: str) -> str:
    """The role a libpq connection string logs in as."""
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn).get("user", ""))


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at another database."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


@dataclass
class Ledger:
    """A fresh topic and database for one test, with helpers.

    ``dsn`` is the runtime role's (``BALDUR_SQL_DSN`` of every command); ``owner_dsn`` the
    owner's, which made the database and runs ``init`` (``BALDUR_SQL_OWNER_DSN``); on a cluster
    with one role for both they are equal."""

    topic: str
    dbname: str
    dsn: str
    admin_dsn: str
    env: dict[str, str]
    state_dir: Path
    bootstrap: str = BOOTSTRAP
    owner_dsn: str = ""

    def __post_init__(self) -> None:
        self.owner_dsn = self.owner_dsn or self.dsn

    # -- CLI ------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        input_text: str | None = None,
        timeout: float = 120,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``baldur-audit ARGS`` in a subprocess with this ledger's settings."""
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [sys.executable, "-m", "baldur_audit.consumers", *args],
            env=env,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_json(
        self, *args: str, expect: Sequence[int] = (0,), extra_env: dict[str, str] | None = None
    ) -> Any:
        """Run a command with ``--json`` and parse stdout."""
        done = self.cli(*args, "--json", extra_env=extra_env)
        assert done.returncode in expect, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    # -- Kafka -----------------------------------------------------------------
    def produce_raw(
        self, values: Sequence[bytes | None], headers: Sequence[tuple[str, bytes]] | None = None
    ) -> None:
        """Write raw record values to the topic (as a foreign client would)."""
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "message.max.bytes": 2_000_000}
        )
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for value in values:
            producer.produce(self.topic, value=value, headers=list(headers or []), on_delivery=report)
            producer.poll(0)
        assert producer.flush(30) == 0
        assert not errors, errors

    def produce_events(
        self, count: int, *, target: str = "svc.timeout", actor: str = "alice", start: int = 0
    ) -> list[uuid.UUID]:
        """Encode and write ``count`` valid events; returns their ids."""
        from baldur_audit.schemas.codec import encode_event

        events = [make_event(i, target=target, actor=actor) for i in range(start, start + count)]
        self.produce_raw([encode_event(event) for event in events])
        return [event.event_id for event in events]

    # -- PostgreSQL --------------------------------------------------------------
    def admin(self) -> Any:
        """A superuser connection to this test's database that bypasses the
        append-only triggers (``session_replication_role = replica``): the tamperer."""
        import psycopg

        conn = psycopg.connect(self.admin_dsn, autocommit=True)
        conn.execute("SET session_replication_role = replica")
        return conn

    def app(self) -> Any:
        """A connection as the application (runtime) role."""
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def owner(self) -> Any:
        """A connection as the tables' owner."""
        import psycopg

        return psycopg.connect(self.owner_dsn, autocommit=True)

    def role_env(self, dsn: str) -> dict[str, str]:
        """``extra_env`` for a command that runs as another role of the same server
        (e.g. ``OPERATOR_DSN`` for ``erase``): ``dsn`` pointed at this ledger's database."""
        return {"BALDUR_SQL_DSN": with_dbname(dsn, self.dbname)}


def make_event(i: int, *, target: str = "svc.timeout", actor: str = "alice") -> Any:
    """A valid event number ``i`` (deterministic apart from its id)."""
    from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

    return ChangeEvent(
        event_id=uuid7(1_764_417_600_000 + i, os.urandom(10)),
        occurred_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC).replace(microsecond=i % 1_000_000),
        actor=Actor(actor, "user"),
        action="update",
        target=target,
        source="api",
        before=json.dumps({"timeout_ms": 1000 + i}),
        after=json.dumps({"timeout_ms": 2000 + i}),
        reason=f"tuning step {i}",
        trace_id=f"{i + 1:032x}",
        client_ip="10.1.***.***",
        attributes={"ticket": f"OPS-{i}"},
    )


@contextmanager
def fresh_ledger(
    tmp_path: Path,
    *,
    bootstrap: str = BOOTSTRAP,
    dsn: str = DSN,
    admin_dsn: str = ADMIN_DSN,
    owner_dsn: str | None = None,
    init: bool = True,
) -> Iterator[Ledger]:
    """A fresh topic and database on the given services, `init` done unless ``init=False``;
    both are removed afterwards. The owner (``owner_dsn``; by default the stack's owner for the
    stack's ``dsn``, else ``dsn`` itself) creates the database and runs ``init``; every other
    command runs as the role of ``dsn``."""
    import psycopg
    from confluent_kafka.admin import AdminClient

    owner = owner_dsn or (OWNER_DSN if dsn == DSN else dsn)
    suffix = uuid.uuid4().hex[:10]
    topic = f"baldur.test.{suffix}"
    dbname = f"baldur_test_{suffix}"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    state_dir = tmp_path / f"state-{suffix}"
    env = {
        **os.environ,
        "BALDUR_KAFKA_BOOTSTRAP": bootstrap,
        "BALDUR_AUDIT_TOPIC": topic,
        "BALDUR_SQL_DSN": with_dbname(dsn, dbname),
        # Read by `init` only.
        "BALDUR_SQL_OWNER_DSN": with_dbname(owner, dbname),
        "BALDUR_SECRETS_AUDIT_SIGNING_KEY": TEST_KEY,
        "BALDUR_STATE_DIR": str(state_dir),
        "BALDUR_CHAINER_GROUP": f"baldur-test-chainer-{suffix}",
        # No automatic checkpoints unless a test asks (tests/integration/test_checkpoints.py):
        # many tests show what the chain walk alone can and cannot see.
        "BALDUR_CHECKPOINT_EVERY": "0",
        "BALDUR_CHECKPOINT_INTERVAL": "0",
    }
    env.pop("BALDUR_ENV", None)
    # A serve DSN of the shell's own database must not leak into a test's ledger.
    env.pop("BALDUR_SQL_READER_DSN", None)
    if dsn_user(dsn) != dsn_user(owner):
        # The roles `init` grants to, as `make env` names them, also when the shell has none.
        env.setdefault("BALDUR_SQL_CHAINER_ROLE", dsn_user(dsn))
        env.setdefault("BALDUR_SQL_READER_ROLE", dsn_user(READER_DSN))
        env.setdefault("BALDUR_SQL_OPERATOR_ROLE", dsn_user(OPERATOR_DSN))
    led = Ledger(
        topic=topic,
        dbname=dbname,
        dsn=with_dbname(dsn, dbname),
        admin_dsn=with_dbname(admin_dsn, dbname),
        env=env,
        state_dir=state_dir,
        bootstrap=bootstrap,
        owner_dsn=with_dbname(owner, dbname),
    )
    if init:
        done = led.cli("init")
        assert done.returncode == 0, done.stderr
    try:
        yield led
    finally:
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            for future in admin.delete_topics([topic, f"{topic}.checkpoints"]).values():
                with suppress(Exception):  # the witness topic exists only if checkpoints were made
                    future.result(30)
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        except Exception:  # a fault test may leave a service down; its stack is discarded
            if bootstrap == BOOTSTRAP:
                raise
