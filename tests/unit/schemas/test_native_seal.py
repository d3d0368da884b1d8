"""Whole ``Sealer.seal_batch`` runs with the native sealer give the entry lists, heads, errors
and tree leaves of the pure-Python reference: events, duplicates (within a batch and from the
look-up), rejected records, null values, schema records, and keys rotating per entry."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import accel
from baldur_audit.schemas.chain import ChainHead, SealedEntry, Sealer, SigningKey, TopicRecord
from baldur_audit.schemas.codec import CURRENT_SCHEMA, KNOWN_SCHEMAS, encode_event, encode_schema_record
from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.merkle import entry_leaf_hash, entry_leaves

from .test_codec import base_event, events
from .test_native import reference_path, require_native

KEYS = [SigningKey(f"hk1-{i:016x}", bytes([i + 1]) * 32) for i in range(3)]
GENESIS = ChainHead(0, -1, b"\x07" * 32)


@pytest.fixture(scope="module", autouse=True)
def native_on() -> Any:
    require_native()
    was = accel.enabled()
    accel.set_enabled(True)
    yield
    accel.set_enabled(was)


def payloads() -> st.SearchStrategy[bytes | None]:
    event_values = events.map(encode_event)
    return st.one_of(
        event_values,
        event_values,
        st.none(),
        st.binary(max_size=40),
        event_values.map(lambda v: v[:-1]),
        st.just(encode_schema_record(CURRENT_SCHEMA)),
        st.just(encode_schema_record(CURRENT_SCHEMA)[:-2]),
    )


def run(
    batches: list[list[TopicRecord]],
    *,
    native: bool,
    key_for: Callable[[int], SigningKey] | None,
    known: Mapping[uuid.UUID, int],
) -> tuple[list[list[SealedEntry]], ChainHead]:
    def first_seq_of(ids: Collection[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        return {i: known[i] for i in ids if i in known}

    def seal() -> tuple[list[list[SealedEntry]], ChainHead]:
        sealer = (
            Sealer(key_for=key_for, head=GENESIS, schemas=KNOWN_SCHEMAS)
            if key_for
            else Sealer(key=KEYS[0], head=GENESIS, schemas=KNOWN_SCHEMAS)
        )
        out = [sealer.seal_batch(batch, first_seq_of) for batch in batches]
        return out, sealer.head

    if native:
        return seal()
    with reference_path():
        return seal()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    values=st.lists(payloads(), max_size=25),
    repeats=st.lists(st.integers(min_value=0, max_value=24), max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=3),
    rotate=st.sampled_from([None, 1, 2, 5]),
    known_seq=st.integers(min_value=0, max_value=10**6),
    start_ms=st.integers(min_value=0, max_value=2**40),
)
def test_seal_runs_equal_the_reference(
    values: list[bytes | None],
    repeats: list[int],
    cuts: list[int],
    rotate: int | None,
    known_seq: int,
    start_ms: int,
) -> None:
    # duplicates: some values again later in the run, and one id already in the ledger
    values = values + [values[i] for i in repeats if i < len(values)]
    records = [TopicRecord("audit.events", 3, 10 + 2 * i, start_ms + i, v) for i, v in enumerate(values)]
    batches, start = [], 0
    for cut in sorted(set(cuts)) + [len(records)]:
        batches.append(records[start : max(start, cut)])
        start = max(start, cut)
    ledger_event = base_event()
    known = {ledger_event.event_id: known_seq}
    records.append(TopicRecord("audit.events", 3, 10**6, start_ms, encode_event(ledger_event)))
    batches[-1] = batches[-1] + [records[-1]]
    key_for = None if rotate is None else (lambda seq: KEYS[(seq // rotate) % len(KEYS)])
    fast = run(batches, native=True, key_for=key_for, known=known)
    slow = run(batches, native=False, key_for=key_for, known=known)
    assert fast == slow
    sealed = [entry for batch in fast[0] for entry in batch]
    leaves = entry_leaves(sealed)
    with reference_path():
        assert leaves == entry_leaves(sealed)
    assert leaves == [entry_leaf_hash(e.link_input(), key_id=e.key_id, link=e.link) for e in sealed]


def test_a_run_covers_every_kind() -> None:
    event = encode_event(base_event())
    values = [event, event, None, b"junk", encode_schema_record(CURRENT_SCHEMA), event[:-1]]
    records = [TopicRecord("t", 0, i, 1_700_000_000_000 + i, v) for i, v in enumerate(values)]
    calls: list[int] = []
    real = accel.native
    assert real is not None

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def seal_rows(self, *args: Any) -> Any:
            calls.append(len(args[2]))
            return real.seal_rows(*args)

    accel.native = Counting()  # type: ignore[assignment]
    try:
        fast = run([records], native=True, key_for=lambda seq: KEYS[seq % 2], known={})
    finally:
        accel.native = real
    assert calls == [len(records)], "the native sealer did not seal the batch"
    slow = run([records], native=False, key_for=lambda seq: KEYS[seq % 2], known={})
    assert fast == slow
    kinds = [e.kind.label for e in fast[0][0]]
    assert kinds == ["event", "duplicate", "rejected", "rejected", "schema", "rejected"]
    assert {e.key_id for e in fast[0][0]} == {KEYS[0].key_id, KEYS[1].key_id}


def _error(
    records: list[TopicRecord], *, native: bool, key_for: Callable[[int], SigningKey]
) -> tuple[str, ChainHead]:
    sealer = Sealer(key_for=key_for, head=GENESIS, schemas=KNOWN_SCHEMAS)
    try:
        if native:
            sealer.seal_batch(records, lambda ids: {})
        else:
            with reference_path():
                sealer.seal_batch(records, lambda ids: {})
    except (ValueError, ConfigError) as exc:
        return f"{type(exc).__name__}: {exc}", sealer.head
    raise AssertionError("no error")


def test_errors_come_in_the_reference_order_and_leave_the_head() -> None:
    event = encode_event(base_event())

    def key_for(seq: int) -> SigningKey:
        if seq == 3:
            raise ConfigError("no key for seq 3")
        return KEYS[0]

    out_of_order = [TopicRecord("t", 0, o, 1, event) for o in (5, 6, 6, 7)]
    key_missing = [TopicRecord("t", 0, o, 1, event) for o in (5, 6, 7, 7)]
    for records in (out_of_order, key_missing):
        assert _error(records, native=True, key_for=key_for) == _error(records, native=False, key_for=key_for)
    assert _error(key_missing, native=True, key_for=key_for)[0].startswith("ConfigError")


def test_values_the_native_sealer_declines_fall_back_to_the_reference() -> None:
    # A Kafka timestamp too large to frame raises the reference's error either way.
    records = [TopicRecord("t", 0, 1, 2**62, b"x")]
    with pytest.raises(Exception) as fast:
        run([records], native=True, key_for=None, known={})
    with pytest.raises(Exception) as slow:
        run([records], native=False, key_for=None, known={})
    assert type(fast.value) is type(slow.value)
