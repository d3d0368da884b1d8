"""verify's native row checker (``baldur_audit_native.RowChecker`` over binary ``COPY``) against
the Python walk it stands in for.

- The view columns' binary ``COPY`` fields, concatenated, are byte for byte the view the
  database computes for verify (``VIEW_SQL``, ``UTF8_VIEW_SQL``).
- On real rows with one change each (every view column, payload, digests, link, kind,
  duplicate_of, reject_reason, pruned flags, a seq gap, swapped offsets, an unknown key id),
  the checker stops at the very row whose combined test fails in ``LedgerWalk.check``, with
  the walk's state (link, offset, counts) at that point; on an intact ledger it accepts all.
- Cut anywhere (byte by byte, random pieces) the stream gives the same result.
- ``verify`` reports the same (first break, kinds, counts) with the accelerator on and off,
  for every class of the tamper catalogue, in one range and in several.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from baldur_audit.consumers.postgres.rows import SEQ, VIEW_SQL
from baldur_audit.consumers.postgres.walk import (
    COPY_ROWS,
    UTF8_VIEW_SQL,
    copies_view,
    copy_between,
    rows_between,
)
from baldur_audit.consumers.verification import ranges
from baldur_audit.consumers.verification.verify import LedgerWalk, verify_ledger
from baldur_audit.schemas import accel
from baldur_audit.schemas.errors import AuditError, StoreUnavailable
from baldur_audit.schemas.view import VIEW_COLUMNS
from tests.support.stack import require_services, with_dbname
from tests.support.tamper import (
    CATALOGUE,
    BaseLedger,
    apply_tamper,
    base_ledger,
    cli_app,
    create_copy,
    drop_copy,
    seed_from_env,
    trial_rng,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        accel.INSTALLED is None or not hasattr(accel.INSTALLED, "RowChecker"),
        reason="the native accelerator is not built here",
    ),
]

CHECKED_FIELDS = 11  # fields before the view in COPY_ROWS
VIEW_FIELDS = 15


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseLedger]:
    require_services()
    with base_ledger(tmp_path_factory.mktemp("native"), seed=seed_from_env()) as built:
        yield built


@pytest.fixture
def native_on() -> Iterator[None]:
    was = accel.enabled()
    accel.set_enabled(True)
    yield
    accel.set_enabled(was)


def _tuples(stream: bytes) -> list[list[bytes | None]]:
    """A binary COPY stream's tuples, parsed here independently of the native parser."""
    assert stream[:11] == b"PGCOPY\n\xff\r\n\x00"
    pos = 19 + int.from_bytes(stream[15:19], "big")
    tuples = []
    while True:
        count = int.from_bytes(stream[pos : pos + 2], "big", signed=True)
        pos += 2
        if count == -1:
            assert pos == len(stream)
            return tuples
        fields: list[bytes | None] = []
        for _ in range(count):
            size = int.from_bytes(stream[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                fields.append(None)
            else:
                fields.append(stream[pos : pos + size])
                pos += size
        tuples.append(fields)


def _field(value: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else len(value).to_bytes(4, "big") + value


def _stream(conn: psycopg.Connection[Any], first: int, last: int) -> bytes:
    return b"".join(bytes(chunk) for chunk in copy_between(conn, first, last))


def test_the_view_columns_copy_fields_are_the_view_verify_computes(base: BaseLedger) -> None:
    with psycopg.connect(base.ledger.dsn) as conn:
        assert copies_view(conn)
        tuples = _tuples(_stream(conn, 1, base.size))
        by_sql = conn.execute(
            f"SELECT seq, {VIEW_SQL}, {UTF8_VIEW_SQL} FROM audit_entries ORDER BY seq"
        ).fetchall()
    assert len(tuples) == len(by_sql) == base.size > 20
    for fields, (seq, view, utf8_view) in zip(tuples, by_sql, strict=True):
        assert int.from_bytes(fields[0] or b"", "big") == seq
        sliced = b"".join(_field(v) for v in fields[CHECKED_FIELDS : CHECKED_FIELDS + VIEW_FIELDS])
        assert sliced == bytes(view) == bytes(utf8_view), seq


def test_copy_rows_reads_the_view_columns_in_view_order() -> None:
    assert "kafka_timestamp, event_id, occurred_at, actor" in COPY_ROWS
    assert "attributes, schema_fingerprint, payload FROM" in COPY_ROWS


# -- the checker against LedgerWalk.check, row by row ----------------------------------------


class _FastFailed(Exception):
    def __init__(self, seq: int) -> None:
        self.seq = seq


@dataclass(frozen=True)
class Outcome:
    stopped: int | None  # the first seq the combined test rejects
    state: tuple[bytes, int, int, bool]
    kinds: dict[str, int]
    pruned: int


def _walk(base: BaseLedger, conn: psycopg.Connection[Any]) -> LedgerWalk:
    app = cli_app(base, base.ledger.dsn)
    keys, _ = app.verification_keys()
    with app.store() as store:
        meta, head = store.read_meta(), store.read_head()
    walk = LedgerWalk(meta=meta, keys=keys, head=head)
    for key_id in keys:
        walk._linker(0, key_id)  # the combined test sees every configured key
    return walk


def _python(base: BaseLedger, conn: psycopg.Connection[Any]) -> Outcome:
    """Where ``LedgerWalk.check``'s combined test first fails (it hands the row on)."""
    walk = _walk(base, conn)

    def failed(row: Any, upcoming: Any) -> None:
        raise _FastFailed(row[SEQ])

    walk.check_each = failed  # type: ignore[method-assign]
    stopped = None
    try:
        for row in rows_between(conn, 1, base.size + 10, utf8=True):
            walk.check(row, None)  # type: ignore[arg-type]
    except _FastFailed as exc:
        stopped = exc.seq
    return Outcome(
        stopped,
        (walk.prev_link, walk.prev_offset, walk.next_seq, walk.unpruned_seen),
        walk.kinds,
        walk.pruned,
    )


def _native(
    base: BaseLedger, conn: psycopg.Connection[Any], chunks: Callable[[bytes], list[bytes]] | None = None
) -> Outcome:
    walk = _walk(base, conn)
    checker = walk.row_checker()
    assert checker is not None
    stream = _stream(conn, 1, base.size + 10)
    for chunk in chunks(stream) if chunks is not None else [stream]:
        if not checker.feed(chunk):
            break
    else:
        checker.finish()
    walk.adopt(checker)
    stopped = checker.stopped
    return Outcome(
        stopped,
        (walk.prev_link, walk.prev_offset, walk.next_seq, walk.unpruned_seen),
        walk.kinds,
        walk.pruned,
    )


def _pick(base: BaseLedger, kind: str, *, payload: bool = False) -> int:
    seqs = [
        r["seq"] for r in base.rows if r["kind"] == kind and r["seq"] > 3 and (r["payload"] or not payload)
    ]
    assert seqs, kind
    return seqs[len(seqs) // 2]


def _changes(base: BaseLedger) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(name, UPDATE/DELETE statement, parameters): one change each."""
    event, rejected = _pick(base, "event", payload=True), _pick(base, "rejected")
    duplicate = _pick(base, "duplicate") if any(r["kind"] == "duplicate" for r in base.rows) else event
    new_value = {
        "timestamptz": "{c} + interval '1 microsecond'",
        "uuid": "gen_random_uuid()",
        "text": "coalesce({c}, '') || 'x'",
        "json": "'{{\"x\": 1}}'::json",
        "bytea": "coalesce({c}, ''::bytea) || '\\x00'::bytea",
    }
    out: list[tuple[str, str, tuple[Any, ...]]] = [("intact", "SELECT 1", ())]
    for column, kind in VIEW_COLUMNS:
        value = new_value[kind].format(c=column)
        out.append(
            (f"view {column}", f"UPDATE audit_entries SET {column} = {value} WHERE seq = %s", (event,))
        )
        if column != "kafka_timestamp":
            out.append(
                (f"view {column} null", f"UPDATE audit_entries SET {column} = NULL WHERE seq = %s", (event,))
            )
    out += [
        ("payload", "UPDATE audit_entries SET payload = payload || '\\x00'::bytea WHERE seq = %s", (event,)),
        ("payload null", "UPDATE audit_entries SET payload = NULL WHERE seq = %s", (event,)),
        (
            "digest",
            "UPDATE audit_entries SET digest = '\\x00'::bytea || substr(digest, 2) WHERE seq = %s",
            (event,),
        ),
        (
            "link",
            "UPDATE audit_entries SET link = substr(link, 1, 31) || '\\x00'::bytea WHERE seq = %s",
            (event,),
        ),
        ("link truncated", "UPDATE audit_entries SET link = substr(link, 1, 31) WHERE seq = %s", (event,)),
        (
            "view_digest",
            "UPDATE audit_entries SET view_digest = sha256(view_digest) WHERE seq = %s",
            (event,),
        ),
        ("value_null", "UPDATE audit_entries SET value_null = NOT value_null WHERE seq = %s", (event,)),
        ("kind rejected", "UPDATE audit_entries SET kind = 'rejected' WHERE seq = %s", (event,)),
        ("kind duplicate", "UPDATE audit_entries SET kind = 'duplicate' WHERE seq = %s", (event,)),
        ("kind event", "UPDATE audit_entries SET kind = 'event' WHERE seq = %s", (rejected,)),
        ("duplicate_of set", "UPDATE audit_entries SET duplicate_of = 1 WHERE seq = %s", (event,)),
        ("duplicate_of zero", "UPDATE audit_entries SET duplicate_of = 0 WHERE seq = %s", (duplicate,)),
        ("duplicate_of null", "UPDATE audit_entries SET duplicate_of = NULL WHERE seq = %s", (duplicate,)),
        ("reason set", "UPDATE audit_entries SET reject_reason = 'x' WHERE seq = %s", (event,)),
        ("reason blank", "UPDATE audit_entries SET reject_reason = '' WHERE seq = %s", (rejected,)),
        ("reason null", "UPDATE audit_entries SET reject_reason = NULL WHERE seq = %s", (rejected,)),
        ("pruned after unpruned", "UPDATE audit_entries SET pruned_at = now() WHERE seq = %s", (event,)),
        (
            "pruned prefix",  # as baldur_prune does: accepted from the stored digests
            "UPDATE audit_entries SET payload = NULL, occurred_at = NULL, actor = NULL,"
            " actor_type = NULL, action = NULL, target = NULL, before = NULL, after = NULL,"
            " reason = NULL, source = NULL, trace_id = NULL, client_ip = NULL, attributes = NULL,"
            " schema_fingerprint = NULL, pruned_at = now() WHERE seq <= %s",
            (event,),
        ),
        ("seq gap", "DELETE FROM audit_entries WHERE seq = %s", (event,)),
        ("seq beyond head", "UPDATE audit_entries SET seq = seq + 1000 WHERE seq = %s", (base.size,)),
        (
            "offsets swapped",
            "UPDATE audit_entries SET kafka_offset = CASE seq WHEN %s THEN -kafka_offset - 1"
            " ELSE kafka_offset END WHERE seq = %s",
            (event, event),
        ),
        ("offset equal", "UPDATE audit_entries SET kafka_offset = -1 WHERE seq = %s", (event,)),
        (
            "unknown key id",
            "UPDATE audit_entries SET key_id = 'hk1-0000000000000000' WHERE seq = %s",
            (event,),
        ),
        (
            "timestamp infinite",
            "UPDATE audit_entries SET kafka_timestamp = 'infinity' WHERE seq = %s",
            (event,),
        ),
        ("timestamp null", "UPDATE audit_entries SET kafka_timestamp = NULL WHERE seq = %s", (event,)),
    ]
    return out


def _tampered(base: BaseLedger, statement: str, params: tuple[Any, ...]) -> Iterator[psycopg.Connection[Any]]:
    """A connection that sees the change (never committed: rolled back afterwards)."""
    with psycopg.connect(base.ledger.admin_dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        try:
            conn.execute(statement, params)  # type: ignore[arg-type]
        except psycopg.errors.IntegrityError:
            conn.rollback()
            conn.execute("SET session_replication_role = replica")
        yield conn
        conn.rollback()


def test_the_checker_stops_where_the_walks_combined_test_fails(base: BaseLedger, native_on: None) -> None:
    seen_stops = 0
    for name, statement, params in _changes(base):
        for conn in _tampered(base, statement, params):
            python, native = _python(base, conn), _native(base, conn)
        assert native == python, name
        if name == "intact":
            assert native.stopped is None and sum(native.kinds.values()) == base.size, native
        elif name == "pruned prefix":
            assert native.stopped is None and native.pruned > 3, native
        else:
            seen_stops += native.stopped is not None
    assert seen_stops >= len(_changes(base)) - 5  # nearly every change stops the walk


def _random_pieces(seed: int) -> Callable[[bytes], list[bytes]]:
    def cut(stream: bytes) -> list[bytes]:
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(1, 400))))
        return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    return cut


@pytest.mark.parametrize("change", ["intact", "link", "seq gap", "pruned prefix"])
def test_chunk_boundaries_do_not_change_the_result(base: BaseLedger, native_on: None, change: str) -> None:
    (statement, params) = next((s, p) for n, s, p in _changes(base) if n == change)
    for conn in _tampered(base, statement, params):
        whole = _native(base, conn)
        assert _native(base, conn, lambda s: [s[i : i + 1] for i in range(len(s))]) == whole
        assert (
            _native(base, conn, lambda s: [b"", *[s[i : i + 7] for i in range(0, len(s), 7)], b""]) == whole
        )
        for seed in range(5):
            assert _native(base, conn, _random_pieces(seed)) == whole, seed


def test_a_stream_cut_short_is_left_to_the_python_walk(base: BaseLedger, native_on: None) -> None:
    with psycopg.connect(base.ledger.dsn) as conn:
        stream = _stream(conn, 1, base.size)
        walk = _walk(base, conn)
    for cut in (len(stream) - 2, len(stream) - 50, 10, 0):
        checker = walk.row_checker()
        assert checker is not None
        assert checker.feed(stream[:cut])
        assert not checker.finish()
        assert checker.stopped == -1  # the caller goes on after the last accepted row
        assert checker.checked == (base.size if cut == len(stream) - 2 else checker.last_seq) < base.size + 1


# -- whole reports, accelerator on and off ------------------------------------------------------


def _report(base: BaseLedger, dsn: str, *, native: bool, jobs: int) -> dict[str, Any]:
    app = cli_app(base, dsn)
    keys, _ = app.verification_keys()
    was = accel.enabled()
    accel.set_enabled(native)
    try:
        with app.store() as store:
            shape = verify_ledger(store, keys, jobs=jobs).as_dict()
    except AuditError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        accel.set_enabled(was)
    for timing in ("seconds", "entries_per_second"):
        shape.pop(timing)
    return shape


@pytest.fixture
def native_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The entries the native checker accepted in this process, per range."""
    monkeypatch.setattr(ranges, "MIN_RANGE", 5)
    monkeypatch.setattr(ranges, "COPY_WINDOW", 37)  # several windows per range
    accepted: list[int] = []
    adopt = LedgerWalk.adopt

    def spy(self: LedgerWalk, checker: Any) -> None:
        accepted.append(checker.checked)
        adopt(self, checker)

    monkeypatch.setattr(LedgerWalk, "adopt", spy)
    return accepted


def test_reports_of_an_intact_ledger_are_the_same_native_or_not(
    base: BaseLedger, native_spy: list[int]
) -> None:
    off = _report(base, base.ledger.dsn, native=False, jobs=1)
    assert not native_spy
    assert off["intact"], off
    for jobs in (1, 3):
        assert _report(base, base.ledger.dsn, native=True, jobs=jobs) == off, jobs
    assert sum(native_spy) >= base.size  # the jobs=1 walk: all accepted natively


@pytest.mark.parametrize("index", range(len(CATALOGUE)))
def test_reports_of_a_tampered_ledger_are_the_same_native_or_not(
    base: BaseLedger, native_spy: list[int], index: int
) -> None:
    tamper = CATALOGUE[index]
    dbname = create_copy(base, 9500 + index)
    try:
        apply_tamper(base, dbname, tamper, trial_rng(seed_from_env(), index, tamper.name))
        dsn = with_dbname(base.ledger.dsn, dbname)
        off = _report(base, dsn, native=False, jobs=1)
        for jobs in (1, 3):
            assert _report(base, dsn, native=True, jobs=jobs) == off, (tamper.name, jobs)
    finally:
        drop_copy(base, dbname)


def test_a_copy_stopped_early_leaves_the_snapshot_usable(base: BaseLedger) -> None:
    with psycopg.connect(base.ledger.dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        stream = copy_between(conn, 1, base.size)
        assert bytes(next(stream)).startswith(b"PGCOPY")
        next(stream)
        stream.close()  # the rest is read and dropped
        assert conn.execute("SELECT count(*) FROM audit_entries").fetchone() == (base.size,)
        assert len(_tuples(_stream(conn, 5, 9))) == 5


def test_a_copy_the_server_refuses_is_store_unavailable(base: BaseLedger) -> None:
    with psycopg.connect(base.ledger.admin_dsn) as conn:
        conn.execute("ALTER TABLE audit_entries RENAME COLUMN payload TO payload_moved")
        assert not copies_view(conn)  # the native path is not taken on such a table
        with pytest.raises(StoreUnavailable):
            _stream(conn, 1, 3)
        conn.rollback()
        assert len(_tuples(_stream(conn, 1, 3))) == 3


@pytest.fixture(scope="module")
def intact_stream(base: BaseLedger) -> tuple[bytes, list[int], set[int]]:
    """The whole ledger's stream, where each tuple starts, and the bytes of the pruned flags."""
    with psycopg.connect(base.ledger.dsn) as conn:
        stream = _stream(conn, 1, base.size)
    starts, pruned_flags = [], set()
    pos = 19 + int.from_bytes(stream[15:19], "big")
    for _ in range(base.size):
        starts.append(pos)
        pos += 2
        for index in range(CHECKED_FIELDS + VIEW_FIELDS + 1):
            size = max(int.from_bytes(stream[pos : pos + 4], "big", signed=True), 0)
            if index == 9:  # pruned: a flipped flag is a pruned entry, which it may be
                pruned_flags.add(pos + 4)
            pos += 4 + size
    starts.append(pos)  # the trailer
    return stream, starts, pruned_flags


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_a_flipped_byte_is_never_accepted(
    base: BaseLedger,
    native_on: None,
    intact_stream: tuple[bytes, list[int], set[int]],
    position: float,
    mask: int,
) -> None:
    stream, starts, pruned_flags = intact_stream
    at = int(position * len(stream))
    assume(at not in pruned_flags and at not in (11, 12))  # the header's flags: see below
    damaged = bytearray(stream)
    damaged[at] ^= mask
    with psycopg.connect(base.ledger.dsn) as conn:
        walk = _walk(base, conn)
    checker = walk.row_checker()
    assert checker is not None
    if checker.feed(damaged):
        checker.finish()
    # Every tuple before the damaged one is accepted; the damaged one never is.
    damaged_tuple = bisect.bisect_right(starts, at) - 1  # -1: in the header
    assert checker.stopped is not None
    assert checker.checked == max(damaged_tuple, 0)


@pytest.mark.parametrize("at", range(19))
def test_a_header_with_unknown_critical_flags_is_left_to_the_python_walk(
    base: BaseLedger, native_on: None, intact_stream: tuple[bytes, list[int], set[int]], at: int
) -> None:
    stream = intact_stream[0]
    with psycopg.connect(base.ledger.dsn) as conn:
        walk = _walk(base, conn)
    for bit in range(8):
        damaged = bytearray(stream)
        damaged[at] ^= 1 << bit
        checker = walk.row_checker()
        assert checker is not None
        if checker.feed(damaged):
            checker.finish()
        # Flags bits 17-31 (bytes 11 and 12 but bit 16) may be ignored; any other change stops.
        ignorable = at == 11 or (at == 12 and bit != 0)
        assert (checker.stopped, checker.checked) == ((None, base.size) if ignorable else (-1, 0)), bit
