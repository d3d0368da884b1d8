"""The tamper matrix's base ledger (tests/support/tamper/): one fresh topic and database with ~300
varied records sealed by the real chainer, which every trial copies; and the tamperer's
handle on a copy (a superuser connection with the append-only triggers bypassed).
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from baldur_audit.consumers.chain_keys import parse_key
from baldur_audit.consumers.kafka.admin import KafkaTopicAdmin
from baldur_audit.consumers.postgres.rows import ENTRY_COLUMNS
from baldur_audit.schemas.chain import SigningKey, genesis_link
from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    MAGIC,
    encode_event,
    event_to_record,
)
from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7
from tests.support.stack import TEST_KEY, Ledger, fresh_ledger, with_dbname

BASE_RECORDS = 300
VERIFY, REPLAY = "verify", "replay"
TOOLS = (VERIFY, REPLAY)
BOTH = frozenset(TOOLS)
NOBODY: frozenset[str] = frozenset()
JSON_COLUMNS = frozenset({"before", "after", "attributes"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the base ledger ------------------------------------------------------------------------

ACTORS = ["alice", "bob", "zoë", "svc-deployer", "ops@example.com", "Ωmega", "healer-7"]
ACTIONS = ["create", "update", "delete", "apply", "rollback", "trip", "recover", "restart", "scale"]
TARGETS = [
    "payments.timeout_ms",
    "db.pool.size",
    "svc.ratelimit",
    "feature.flags/checkout",
    "cluster/eu-1/nodes",
    "ключ.настройки",
    "queue.depth.max",
]
REASONS = [
    None,
    "p99 above SLO",
    "liveness probe failed 3 times",
    "rollback after incident",
    "tuning step",
    "Änderung laut Ticket",
    "scheduled scale-up",
]
SOURCES = ["api", "cli", "scheduler", "framework"]
ACTOR_TYPES = ["user", "service", "system"]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value with nesting, unicode, escapes, and numbers whose text jsonb would
    rewrite (``1e+23``, ``-0.0``, ``1.0``)."""
    roll = rng.random()
    if depth < 3 and roll < 0.35:
        return {
            rng.choice(["value", "limit", "enabled", "nodes", "name", "ratio", "ä", "k"])
            + str(i): random_json(rng, depth + 1)
            for i in range(rng.randint(1, 3))
        }
    if depth < 3 and roll < 0.45:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(
        [
            rng.randint(-5, 5000),
            rng.choice([1.0, 0.1, 2.5, 1e23, 1e-7, -0.0]),
            True,
            False,
            None,
            rng.choice(["on", "off", "eu-west-1", "ünïcödé", "tab\tnew\nline", '"quoted"']),
            10 ** rng.randint(15, 25),
        ]
    )


def random_event(rng: random.Random, i: int, *, base_ms: int = 1_764_417_600_000) -> ChangeEvent:
    """A valid event with varied values; deterministic for a given ``rng`` state."""
    ms = base_ms + i * 1000

    def optional_json() -> str | None:
        return None if rng.random() < 0.15 else json.dumps(random_json(rng), ensure_ascii=False)

    return ChangeEvent(
        event_id=uuid7(ms, rng.randbytes(10)),
        occurred_at=_EPOCH + timedelta(milliseconds=ms, microseconds=rng.randrange(1000)),
        actor=Actor(rng.choice(ACTORS), rng.choice(ACTOR_TYPES)),
        action=rng.choice(ACTIONS),
        target=rng.choice(TARGETS),
        source=rng.choice(SOURCES),
        before=optional_json(),
        after=optional_json(),
        reason=rng.choice(REASONS),
        trace_id=None if rng.random() < 0.3 else rng.randbytes(16).hex(),
        client_ip=rng.choice([None, "10.1.***.***", "2001:db8:85a3::/48", "<invalid-ip>"]),
        attributes={
            f"k{j}": rng.choice(["OPS-1", "", "ja", "x" * 20, "🙂", "42"])
            for j in range(rng.choice([0, 0, 1, 2, 4]))
        },
    )


def _avro_value(record: dict[str, Any]) -> bytes:
    """Single-object encode a raw Avro record, bypassing the event model's validation."""
    body = io.BytesIO()
    body.write(MAGIC + CURRENT_SCHEMA.fingerprint)
    fastavro.schemaless_writer(body, CURRENT_SCHEMA.parsed, record)
    return body.getvalue()


def _rejected_value(rng: random.Random, kind: int, good: bytes, event: ChangeEvent) -> bytes | None:
    """Bytes that the chainer must seal as rejected, one of several reasons."""
    options: list[bytes | None] = [
        b"garbage " + rng.randbytes(6).hex().encode(),
        None,
        b"",
        good[:-3],  # truncated body
        good + b"\x00",  # trailing bytes
        MAGIC + rng.randbytes(8) + good[10:],  # unknown writer schema
        _avro_value({**event_to_record(event), "before": '{"unclosed": '}),  # invalid JSON
        _avro_value({**event_to_record(event), "event_id": str(event.event_id).upper()}),
    ]
    return options[kind % len(options)]


@dataclass(frozen=True, slots=True)
class Segment:
    """Records produced together: plainly, in a committed transaction, or an aborted one."""

    values: list[bytes | None]
    mode: str  # plain | commit | abort


def base_segments(rng: random.Random, records: int) -> list[Segment]:
    """The base topic's records in order, split into produce segments (deterministic)."""
    values: list[bytes | None] = []
    events: list[tuple[ChangeEvent, bytes]] = []
    rejected = 0
    while len(values) < records:
        roll = rng.random()
        if events and roll < 0.07:
            event, good = rng.choice(events)
            values.append(_rejected_value(rng, rejected, good, event))
            rejected += 1
        elif events and roll < 0.12:
            values.append(rng.choice(events)[1])  # a producer retry: same bytes
        elif events and roll < 0.15:  # same id, other content
            event, _ = rng.choice(events)
            values.append(encode_event(dataclasses.replace(event, reason="resent with edits")))
        else:
            event = random_event(rng, len(values))
            good = encode_event(event)
            events.append((event, good))
            values.append(good)
    segments: list[Segment] = []
    start = 0
    aborted = False
    while start < len(values):
        size = rng.randint(10, 40)
        # The last segment is plain, so the topic ends with a record and not a marker.
        mode = "plain" if start + size >= len(values) or rng.random() < 0.6 else "commit"
        segments.append(Segment(values[start : start + size], mode))
        start += size
        if not aborted and mode == "commit":
            aborted = True
            segments.append(Segment([encode_event(random_event(rng, 10_000 + j)) for j in range(3)], "abort"))
    return segments


def _produce(led: Ledger, segments: Sequence[Segment]) -> int:
    """Write the segments in order; returns how many records are committed."""
    from confluent_kafka import Producer

    committed = 0
    txn = Producer({"bootstrap.servers": led.bootstrap, "transactional.id": f"baldur-tamper-{led.topic}"})
    txn.init_transactions(30)
    for segment in segments:
        if segment.mode == "plain":
            led.produce_raw(segment.values)
            committed += len(segment.values)
            continue
        txn.begin_transaction()
        for value in segment.values:
            txn.produce(led.topic, value=value)
        if segment.mode == "commit":
            txn.commit_transaction(30)
            committed += len(segment.values)
        else:
            txn.flush(30)
            txn.abort_transaction(30)
    return committed


@dataclass
class BaseLedger:
    """The sealed base ledger every trial copies, and what tampers need to know of it."""

    ledger: Ledger
    seed: int
    key: SigningKey
    rows: list[dict[str, Any]]  # every entry in seq order, as stored (jsonb as text)
    schema: tuple[bytes, str, int]  # the stored writer schema: fingerprint, json, first_seq
    genesis: bytes
    ledger_id: str
    committed_offset: int | None
    admin: KafkaTopicAdmin
    free_offsets: list[int] = field(default_factory=list)  # offsets no entry holds (gaps)
    json_types: dict[str, str] = field(default_factory=dict)  # column -> json or jsonb

    @property
    def size(self) -> int:
        """Number of entries (the head's seq)."""
        return len(self.rows)

    def row(self, seq: int) -> dict[str, Any]:
        """The entry at ``seq`` (1-based)."""
        return self.rows[seq - 1]


def read_rows(dsn: str) -> list[dict[str, Any]]:
    """Every entry in seq order, with jsonb columns as their stored text."""
    columns = [c for c in ENTRY_COLUMNS if c not in JSON_COLUMNS]
    select = ", ".join(columns + [f"{c}::text AS {c}" for c in sorted(JSON_COLUMNS)])
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(f"SELECT {select} FROM audit_entries ORDER BY seq"))


@contextmanager
def base_ledger(tmp_path: Path, *, seed: int, records: int = BASE_RECORDS) -> Iterator[BaseLedger]:
    """Build, seal and describe the base ledger; removes it (and any trial copy) afterwards."""
    with fresh_ledger(tmp_path) as led:
        committed = _produce(led, base_segments(random.Random(f"base:{seed}"), records))
        done = led.cli("chain", "--until-idle", "1", "--session-timeout", "3", "--json")
        assert done.returncode == 0, done.stderr
        stats = json.loads(done.stdout)
        assert stats["sealed"] == committed, (stats, committed)
        rows = read_rows(led.dsn)
        with psycopg.connect(led.dsn) as conn:
            schema = conn.execute("SELECT fingerprint, schema_json, first_seq FROM writer_schemas").fetchone()
            ledger_id = conn.execute("SELECT ledger_id FROM ledger_meta").fetchone()[0]
            json_types = dict(
                conn.execute(
                    "SELECT attname, atttypid::regtype::text FROM pg_attribute"
                    " WHERE attrelid = 'audit_entries'::regclass AND attname = ANY(%s)",
                    (sorted(JSON_COLUMNS),),
                ).fetchall()
            )
        admin = KafkaTopicAdmin(led.bootstrap)
        group = led.env["BALDUR_CHAINER_GROUP"]
        witness = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the chainer's commit is asynchronous
            witness = admin.group_state(group, led.topic)["committed_offset"]
            if witness is not None and witness > rows[-1]["kafka_offset"]:
                break
            time.sleep(0.2)
        key = SigningKey.derive(parse_key(TEST_KEY))
        used = {r["kafka_offset"] for r in rows}
        base = BaseLedger(
            ledger=led,
            seed=seed,
            key=key,
            rows=rows,
            schema=(bytes(schema[0]), schema[1], int(schema[2])),
            genesis=genesis_link(key, ledger_id=ledger_id, topic=led.topic, partition=0),
            ledger_id=ledger_id,
            committed_offset=witness,
            admin=admin,
            free_offsets=[o for o in range(rows[-1]["kafka_offset"]) if o not in used],
            json_types=json_types,
        )
        try:
            yield base
        finally:
            with psycopg.connect(with_dbname(led.admin_dsn, "postgres"), autocommit=True) as conn:
                for (name,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{led.dbname}_t%",)
                ).fetchall():
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                    )


# -- tampering ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """Damage a tool that should see it does not see today."""

    missed_by: frozenset[str]
    why: str
    #: In tests/integration/test_tamper_random.py or, for gaps outside the random catalogue,
    #: tests/integration/test_replay_gaps.py (strict xfail); None for a residual risk
    #: the design accepts and states (nothing to fix, nothing to pin).
    regression_test: str | None


#: Known gaps by variant name (variant names of gaps are unique across the catalogue). The
#: regression test pins each one: it starts failing, as it should, the day the gap is closed,
#: and then this entry goes.
KNOWN_GAPS: dict[str, Gap] = {
    "reworded": Gap(
        frozenset({VERIFY}),
        "a rejected entry's reject_reason reworded: verify checks only its "
        "presence (CHAIN.md §6.1 leaves the wording unsealed); replay rewords it as the "
        "decoder does and finds the change",
        "test_reworded_reject_reason_is_seen",
    ),
    "prefix-by-hand": Gap(
        BOTH,
        "a prefix of entries pruned by hand (content NULLed, pruned_at set, triggers "
        "off): the residual risk 004_retention.sql states, content hidden but not changed",
        None,
    ),
    "visible-resealed": Gap(
        BOTH,
        "a key holder rewrote an entry's visible columns over its unchanged payload and "
        "resealed the links from there: a valid chain to verify, and default (digest-first) "
        "replay takes a record whose bytes and rebuilt link match as the entry shows it; "
        "replay --classify-all decodes every record and finds it (test_replay_gaps.py)",
        "test_visible_columns_resealed_are_seen_by_default_replay",
    ),
}


@dataclass(frozen=True, slots=True)
class Damage:
    """What a tamper did, and what the tools must therefore report."""

    variant: str
    what: str
    first_seq: int | None  # None: benign (nothing an entry means has changed)
    seen_by: frozenset[str] = BOTH
    #: False when the tools in ``seen_by`` must refuse to vouch for the ledger (not report
    #: intact) but cannot name an entry: the row they would start from is gone.
    exact: bool = True
    #: A known gap this damage falls into (``KNOWN_GAPS``), attached by the runner.
    gap: Gap | None = None


@dataclass(frozen=True, slots=True)
class Expr:
    """A SQL expression to assign instead of a value: ``{}`` stands for the column and
    ``<type>`` for its JSON type (``json`` or ``jsonb``, whichever the schema has)."""

    text: str


@dataclass
class Tampering:
    """One trial's tamperer: a superuser connection to the copy, triggers bypassed."""

    base: BaseLedger
    conn: psycopg.Connection[Any]
    rng: random.Random
    #: Steps to run after the superuser's transaction commits, given the copy's application
    #: DSN (the key holder's rewrite appends through the store, as the chainer would).
    follow_ups: list[Callable[[str], None]] = field(default_factory=list)

    @property
    def n(self) -> int:
        """The base ledger's last seq."""
        return self.base.size

    def pick(
        self,
        kinds: Sequence[str] = ("event", "duplicate", "rejected"),
        where: Callable[[dict[str, Any]], bool] = lambda _row: True,
    ) -> dict[str, Any]:
        """A random entry satisfying ``where``: its kind drawn first, uniformly among
        ``kinds``, so that the few rejected and duplicate entries are hit as often as events."""
        by_kind = {kind: [r for r in self.base.rows if r["kind"] == kind and where(r)] for kind in kinds}
        present = [kind for kind in kinds if by_kind[kind]]
        return self.rng.choice(by_kind[self.rng.choice(present)])

    def exec(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Run one statement on the copy."""
        self.conn.execute(statement, params)

    def row_text(self, seq: int) -> str | None:
        """The whole stored row as text (to tell a real change from a no-op)."""
        row = self.conn.execute(
            "SELECT audit_entries::text FROM audit_entries WHERE seq = %s", (seq,)
        ).fetchone()
        return None if row is None else row[0]

    def set_column(self, seq: int, column: str, value: Any) -> None:
        """``UPDATE audit_entries SET column = value WHERE seq = seq``."""
        target = sql.Identifier(column)
        json_type = self.base.json_types.get(column, "jsonb")
        if isinstance(value, Expr):
            statement = sql.SQL(
                "UPDATE audit_entries SET {} = " + value.text.replace("<type>", json_type) + " WHERE seq = %s"
            )
            self.conn.execute(statement.format(target, target), (seq,))
            return
        cast = sql.SQL(f"%s::{json_type}" if column in JSON_COLUMNS else "%s")
        self.conn.execute(
            sql.SQL("UPDATE audit_entries SET {} = {} WHERE seq = %s").format(target, cast), (value, seq)
        )

    def renumber(self, from_seq: int, by: int) -> None:
        """Shift the seq of every entry from ``from_seq`` on by ``by`` (unique at each step)."""
        self.exec("UPDATE audit_entries SET seq = seq + 1000000 WHERE seq >= %s", (from_seq,))
        self.exec("UPDATE audit_entries SET seq = seq - 1000000 + %s WHERE seq >= 1000000", (by,))

    def set_head(self, seq: int) -> None:
        """Point the head at entry ``seq`` as it is now stored (genesis for 0)."""
        if seq == 0:
            self.exec(
                "UPDATE chain_head SET last_seq = 0, last_offset = -1, last_link = %s", (self.base.genesis,)
            )
            return
        self.exec(
            "UPDATE chain_head SET last_seq = e.seq, last_offset = e.kafka_offset,"
            " last_link = e.link FROM audit_entries e WHERE e.seq = %s",
            (seq,),
        )

    def free_offset(self, above: int = -1, below: int | None = None) -> int:
        """An offset no entry holds: inside a gap of the topic when one fits, else past its end."""
        gaps = [o for o in self.base.free_offsets if o > above and (below is None or o < below)]
        if gaps:
            return self.rng.choice(gaps)
        return self.base.rows[-1]["kafka_offset"] + self.rng.randint(1, 50)
