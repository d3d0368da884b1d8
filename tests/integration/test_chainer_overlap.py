"""The chainer seals a batch while the batch before it is being written: on the real stack,
a write that fails or is fenced while the next batch is sealed loses nothing, seals nothing
twice, and a duplicate of an event still in flight is recognised.

The chainer runs in this process so that the store can pause a write until the next batch
has been sealed, and then have the server end the writer's session (a real connection loss)
or let another writer take the head over (a real fence)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
import pytest

from baldur_audit.consumers.chainer import Chainer, ChainerStats
from baldur_audit.consumers.kafka.source import KafkaEventSource
from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
from baldur_audit.schemas.chain import SealedEntry, SigningKey
from baldur_audit.schemas.codec import encode_event
from baldur_audit.schemas.errors import Fenced
from tests.support.stack import TEST_KEY, Ledger, make_event

pytestmark = pytest.mark.integration

BATCH = 10
WAIT = 30.0


class HeldWrite:
    """Holds the ``at``-th append until the next batch has been looked up for sealing (on the
    chainer's second connection, which it uses only while a write is in flight); then runs
    ``then`` and writes."""

    def __init__(self, at: int, *, then: Any = None) -> None:
        self.at = at
        self.then = then
        self.appends = 0
        self.stores: list[PostgresLedgerStore] = []  # the first one is the writer's
        self.looked_up: list[set[uuid.UUID]] = []  # by the other connection, while a write was in flight
        self.changed = threading.Condition()
        self.held_ids: set[uuid.UUID] = set()
        self.sealed_behind = False

    def store_class(self) -> type[PostgresLedgerStore]:
        held = self

        class Store(PostgresLedgerStore):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                held.stores.append(self)

            def first_seqs(self, event_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
                if self is not held.stores[0]:
                    with held.changed:
                        held.looked_up.append(set(event_ids))
                        held.changed.notify_all()
                return super().first_seqs(event_ids)

            def append(self, entries: Sequence[SealedEntry], **kwargs: Any) -> None:
                held.appends += 1
                if held.appends == held.at:
                    held.held_ids = {entry.event_id for entry in entries if entry.event_id}
                    # One look-up per batch after the first at most before this write was handed
                    # over: the at-th happened while it was in flight.
                    with held.changed:
                        held.sealed_behind = held.changed.wait_for(
                            lambda: len(held.looked_up) >= held.at, WAIT
                        )
                    if held.then is not None:
                        held.then(self)
                super().append(entries, **kwargs)

        return Store


def run_chainer(ledger: Ledger, store_class: type[PostgresLedgerStore]) -> Chainer:
    group = f"test-overlap-{uuid.uuid4().hex[:8]}"

    def source_factory(**callbacks: Any) -> KafkaEventSource:
        return KafkaEventSource(
            bootstrap=ledger.bootstrap, topic=ledger.topic, group=group, session_timeout_ms=6000, **callbacks
        )

    return Chainer(
        store_factory=lambda: store_class.connect(ledger.dsn),
        source_factory=source_factory,
        key=SigningKey.derive(bytes.fromhex(TEST_KEY.removeprefix("hex:"))),
        batch_size=BATCH,
        batch_wait=0.5,
        until_idle=1.0,
        max_store_outage=60.0,
    )


def stored(ledger: Ledger) -> list[tuple[int, int, str, int | None]]:
    with ledger.app() as conn:
        return conn.execute(
            "SELECT seq, kafka_offset, kind, duplicate_of FROM audit_entries ORDER BY seq"
        ).fetchall()


def assert_intact(ledger: Ledger, count: int) -> None:
    rows = stored(ledger)
    assert [row[0] for row in rows] == list(range(1, count + 1))
    assert [row[1] for row in rows] == list(range(count))
    report = ledger.cli_json("verify")
    assert report["intact"] is True and report["entries"] == count
    with ledger.app() as conn:
        head = conn.execute("SELECT last_seq, last_offset FROM chain_head WHERE id = 1").fetchone()
    assert head == (count, count - 1)


def end_session(store: PostgresLedgerStore, ledger: Ledger) -> None:
    """The server ends the writer's session (as a database restart or a cut network would)."""
    pid = store._conn.info.backend_pid  # noqa: SLF001 - the test's own fault injection
    with psycopg.connect(ledger.admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_failed_write_drops_the_batch_sealed_behind_it_and_reseals_both(ledger: Ledger) -> None:
    ledger.produce_events(6 * BATCH)
    held = HeldWrite(2, then=lambda store: end_session(store, ledger))
    chainer = run_chainer(ledger, held.store_class())
    stats: ChainerStats = chainer.run()
    assert held.sealed_behind  # the third batch was sealed while the second was in flight
    assert stats.store_retries >= 1
    # Every record once, in offset order, none skipped: the second and third batches were sealed
    # again from the stored head after the failure.
    assert stats.head_seq == 6 * BATCH
    assert_intact(ledger, 6 * BATCH)
    assert {row[2] for row in stored(ledger)} == {"event"}


def test_a_fenced_write_stops_the_chainer_without_writing_the_batch_behind_it(ledger: Ledger) -> None:
    ledger.produce_events(6 * BATCH)

    def take_over(_store: PostgresLedgerStore) -> None:
        with PostgresLedgerStore.connect(ledger.dsn) as successor:
            successor.take_over()

    held = HeldWrite(2, then=take_over)
    chainer = run_chainer(ledger, held.store_class())
    with pytest.raises(Fenced):
        chainer.run()
    assert held.sealed_behind
    # Only the first batch is in; neither the fenced batch nor the one sealed behind it.
    rows = stored(ledger)
    assert 1 <= len(rows) <= BATCH
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    with ledger.app() as conn:
        head = conn.execute("SELECT last_seq FROM chain_head WHERE id = 1").fetchone()
    assert head == (len(rows),)


def test_a_duplicate_of_an_event_still_being_written_is_sealed_as_a_duplicate(ledger: Ledger) -> None:
    events = [make_event(i) for i in range(BATCH)]
    ledger.produce_raw([encode_event(event) for event in events] * 2)
    held = HeldWrite(1)
    chainer = run_chainer(ledger, held.store_class())
    stats = chainer.run()
    # The duplicates were looked up while their originals were in flight.
    assert held.sealed_behind and any(ids & held.held_ids for ids in held.looked_up)
    rows = stored(ledger)
    assert [row[2] for row in rows] == ["event"] * BATCH + ["duplicate"] * BATCH
    assert [row[3] for row in rows[BATCH:]] == list(range(1, BATCH + 1))
    assert stats.duplicates == BATCH
    assert_intact(ledger, 2 * BATCH)
