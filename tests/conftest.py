"""Shared fixtures: real Kafka and PostgreSQL endpoints, a fresh topic and a fresh
database per test, and helpers to produce records and run the CLI.

Endpoints come from the environment (``make env`` prints them). Locally a
missing service skips the integration tests with a reason; under ``CI=true`` a
missing service fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import importlib.util
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

BOOTSTRAP = os.environ.get("BALDUR_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
DSN = os.environ.get("BALDUR_SQL_DSN",
                     "postgresql://baldur:baldur-local@127.0.0.1:25432/baldur_audit")
ADMIN_DSN = os.environ.get("BALDUR_TEST_ADMIN_DSN",
                           "postgresql://postgres:baldur-local-admin@127.0.0.1:25432/postgres")
TEST_KEY = "hex:" + "5e" * 32  # a test-only signing key


#: ``make test`` runs the suite on 2 pytest-xdist workers. Tests that share a private
#: restartable service or an expensive module fixture must run on one worker, in one unit:
#: the fault scenarios (one session-wide private broker and cluster, ports 19092/15432), the
#: spool's private broker (19192) and the tamper matrix's template ledger.
XDIST_UNITS = {"tests/faults/": "faults", "tests/integration/test_spool_kafka.py": "spool-broker",
               "tests/integration/test_tamper_random.py": "tamper-template"}


def xdist_unit(nodeid: str) -> str:
    """The scheduling unit of a test: its group, or the test itself."""
    return next((unit for prefix, unit in XDIST_UNITS.items() if nodeid.startswith(prefix)), nodeid)


if importlib.util.find_spec("xdist") is not None:
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """Load-balance test by test, except for the units above. (Not ``--dist loadgroup``:
        its ``xdist_group`` mark rewrites ``item._nodeid``, which pytest 9 no longer reads.)"""
        from xdist.scheduler import LoadScopeScheduling

        class Units(LoadScopeScheduling):  # biggest units first (loadscopereorder, default)
            def _split_scope(self, nodeid: str) -> str:
                return xdist_unit(nodeid)

        return Units(config, log)


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


def _dsn_hostport(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"


def require_services() -> None:
    """Skip (locally) or fail (CI=true) when Kafka or PostgreSQL is not reachable."""
    missing = [name for name, where in (("kafka", BOOTSTRAP), ("postgres", _dsn_hostport(DSN)))
               if not _reachable(where)]
    if missing:
        message = f"services not reachable: {', '.join(missing)} (run `make up`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at another database."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


@dataclass
class Ledger:
    """A fresh topic and database for one test, with helpers."""

    topic: str
    dbname: str
    dsn: str
    admin_dsn: str
    env: dict[str, str]
    state_dir: Path
    bootstrap: str = BOOTSTRAP

    # -- CLI ------------------------------------------------------------------
    def cli(self, *args: str, input_text: str | None = None, timeout: float = 120,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``baldur-audit ARGS`` in a subprocess with this ledger's settings."""
        env = {**self.env, **(extra_env or {})}
        return subprocess.run([sys.executable, "-m", "baldur_audit.consumers", *args],
                              env=env, input=input_text, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def cli_json(self, *args: str, expect: Sequence[int] = (0,)) -> Any:
        """Run a command with ``--json`` and parse stdout."""
        done = self.cli(*args, "--json")
        assert done.returncode in expect, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    # -- Kafka -----------------------------------------------------------------
    def produce_raw(self, values: Sequence[bytes | None],
                    headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        """Write raw record values to the topic (as a foreign client would)."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "message.max.bytes": 2_000_000})
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for value in values:
            producer.produce(self.topic, value=value, headers=list(headers or []),
                             on_delivery=report)
            producer.poll(0)
        assert producer.flush(30) == 0
        assert not errors, errors

    def produce_events(self, count: int, *, target: str = "svc.timeout",
                       actor: str = "alice", start: int = 0) -> list[uuid.UUID]:
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
        """A connection as the application role."""
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)


def make_event(i: int, *, target: str = "svc.timeout", actor: str = "alice") -> Any:
    """A valid event number ``i`` (deterministic apart from its id)."""
    from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

    return ChangeEvent(
        event_id=uuid7(1_764_417_600_000 + i, os.urandom(10)),
        occurred_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC).replace(microsecond=i % 1_000_000),
        actor=Actor(actor, "user"), action="update", target=target, source="api",
        before=json.dumps({"timeout_ms": 1000 + i}), after=json.dumps({"timeout_ms": 2000 + i}),
        reason=f"tuning step {i}", trace_id=f"{i + 1:032x}", client_ip="10.1.***.***",
        attributes={"ticket": f"OPS-{i}"})


@contextmanager
def fresh_ledger(tmp_path: Path, *, bootstrap: str = BOOTSTRAP, dsn: str = DSN,
                 admin_dsn: str = ADMIN_DSN, init: bool = True) -> Iterator[Ledger]:
    """A fresh topic and database (created by the application role) on the given services,
    `init` done unless ``init=False``; both are removed afterwards."""
    import psycopg
    from confluent_kafka.admin import AdminClient

    suffix = uuid.uuid4().hex[:10]
    topic = f"baldur.test.{suffix}"
    dbname = f"baldur_test_{suffix}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    state_dir = tmp_path / f"state-{suffix}"
    env = {**os.environ, "BALDUR_KAFKA_BOOTSTRAP": bootstrap, "BALDUR_AUDIT_TOPIC": topic,
           "BALDUR_SQL_DSN": with_dbname(dsn, dbname),
           "BALDUR_SECRETS_AUDIT_SIGNING_KEY": TEST_KEY, "BALDUR_STATE_DIR": str(state_dir),
           "BALDUR_CHAINER_GROUP": f"baldur-test-chainer-{suffix}",
           # No automatic checkpoints unless a test asks (tests/integration/test_checkpoints.py):
           # many tests show what the chain walk alone can and cannot see.
           "BALDUR_CHECKPOINT_EVERY": "0", "BALDUR_CHECKPOINT_INTERVAL": "0"}
    env.pop("BALDUR_ENV", None)
    led = Ledger(topic=topic, dbname=dbname, dsn=with_dbname(dsn, dbname),
                 admin_dsn=with_dbname(admin_dsn, dbname), env=env, state_dir=state_dir,
                 bootstrap=bootstrap)
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


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh topic, a fresh database (created by the application role), `init` done."""
    require_services()
    with fresh_ledger(tmp_path) as led:
        yield led
