"""The chain: committed vectors, an independent re-implementation of CHAIN.md, the Sealer,
and properties of the framing (every covered field matters; framing is injective)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import struct
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import chain
from baldur_audit.schemas.chain import (
    ChainHead,
    EntryKind,
    Linker,
    LinkInput,
    Sealer,
    SigningKey,
    TopicRecord,
    genesis_link,
    genesis_message,
    link_message,
)
from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    KNOWN_SCHEMAS,
    encode_event,
    event_to_record,
)
from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.event import Actor, ChangeEvent
from tests.vectors import chain as chain_vectors

VECTORS_PATH = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "chain-v2.json"
PROPS = settings(max_examples=60, deadline=None)


def load_vectors() -> dict[str, Any]:
    vectors: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return vectors


# --- (a) the committed vectors are what the code produces ---------------------------------


def test_committed_vectors_equal_the_generator() -> None:
    assert load_vectors() == chain_vectors.build()


def test_vectors_ship_with_the_package() -> None:
    shipped = resources.files("baldur_audit.schemas").joinpath("vectors/chain-v2.json")
    assert json.loads(shipped.read_text(encoding="utf-8")) == load_vectors()


def test_vectors_cover_every_kind_and_null() -> None:
    entries = load_vectors()["entries"]
    assert {e["kind"] for e in entries} == {"event", "rejected", "duplicate"}
    assert any(e["value_hex"] is None for e in entries)
    assert any(e["value_hex"] == "" for e in entries)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))


# --- (b) an independent implementation of CHAIN.md -----------------------------------------
# Written from the spec with hashlib/hmac/struct only; it must not import chain.py's framing.

KIND_CODES = {"event": 1, "rejected": 2, "duplicate": 3, "schema": 4}  # schema: CHAIN.md §19


def spec_field(name: str, value: bytes) -> bytes:
    raw = name.encode("ascii")
    assert 1 <= len(raw) <= 255 and len(value) < 2**32
    return bytes([len(raw)]) + raw + len(value).to_bytes(4, "big") + value


def spec_frame(tag: str, fields: list[tuple[str, bytes]]) -> bytes:
    return spec_field("domain", tag.encode("ascii")) + b"".join(
        spec_field(name, value) for name, value in fields
    )


def spec_key_id(key: bytes) -> str:
    return "hk1-" + hashlib.sha256(b"baldur-audit/key-id/v1" + key).hexdigest()[:16]


def spec_genesis_message(ledger_id: str, topic: str, partition: int) -> bytes:
    return spec_frame(
        "baldur-audit/genesis/v1",
        [
            ("ledger", ledger_id.encode("utf-8")),
            ("topic", topic.encode("utf-8")),
            ("partition", struct.pack(">i", partition)),
        ],
    )


def spec_link_message(
    *,
    prev: bytes,
    key_id: str,
    seq: int,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    kind: int,
    duplicate_of: int,
    value: bytes | None,
    view: bytes,
) -> bytes:
    digest = hashlib.sha256(value if value is not None else b"").digest()
    return spec_link_message_of_digest(
        prev=prev,
        key_id=key_id,
        seq=seq,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        kind=kind,
        duplicate_of=duplicate_of,
        value_null=value is None,
        digest=digest,
        view_digest=hashlib.sha256(view).digest(),
    )


def spec_link_message_of_digest(
    *,
    prev: bytes,
    key_id: str,
    seq: int,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    kind: int,
    duplicate_of: int,
    value_null: bool,
    digest: bytes,
    view_digest: bytes,
) -> bytes:
    return spec_frame(
        "baldur-audit/link/v2",
        [
            ("prev", prev),
            ("key_id", key_id.encode("utf-8")),
            ("seq", struct.pack(">Q", seq)),
            ("topic", topic.encode("utf-8")),
            ("partition", struct.pack(">i", partition)),
            ("offset", struct.pack(">q", offset)),
            ("timestamp", struct.pack(">q", timestamp_ms)),
            ("kind", struct.pack(">B", kind)),
            ("duplicate_of", struct.pack(">Q", duplicate_of)),
            ("value_null", b"\x01" if value_null else b"\x00"),
            ("digest", digest),
            ("view", view_digest),
        ],
    )


def spec_mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def parse_frame(message: bytes) -> list[tuple[bytes, bytes]]:
    """Split a framed message back into (name, value) pairs; fails on any leftover byte."""
    fields, pos = [], 0
    while pos < len(message):
        name_len = message[pos]
        name = message[pos + 1 : pos + 1 + name_len]
        (value_len,) = struct.unpack(">I", message[pos + 1 + name_len : pos + 5 + name_len])
        start = pos + 5 + name_len
        value = message[start : start + value_len]
        assert len(value) == value_len, "truncated field"
        fields.append((name, value))
        pos = start + value_len
    return fields


def test_independent_key_id_matches_vectors() -> None:
    vectors = load_vectors()
    key = bytes.fromhex(vectors["key_hex"])
    assert spec_key_id(key) == vectors["key_id"] == "hk1-bb4fe01d40669e9b"
    assert SigningKey.derive(key).key_id == vectors["key_id"]


def test_independent_genesis_matches_vectors() -> None:
    vectors = load_vectors()
    key = bytes.fromhex(vectors["key_hex"])
    message = spec_genesis_message(vectors["ledger_id"], vectors["topic"], vectors["partition"])
    assert message.hex() == vectors["genesis_message_hex"]
    assert spec_mac(key, message).hex() == vectors["genesis_link_hex"]


def test_independent_entry_links_match_vectors() -> None:
    vectors = load_vectors()
    key = bytes.fromhex(vectors["key_hex"])
    prev = bytes.fromhex(vectors["genesis_link_hex"])
    assert vectors["entries"], "no entries to check"
    for entry in vectors["entries"]:
        value = None if entry["value_hex"] is None else bytes.fromhex(entry["value_hex"])
        assert hashlib.sha256(value or b"").hexdigest() == entry["digest_hex"]
        message = spec_link_message(
            prev=prev,
            key_id=vectors["key_id"],
            seq=entry["seq"],
            topic=vectors["topic"],
            partition=vectors["partition"],
            offset=entry["offset"],
            timestamp_ms=entry["timestamp_ms"],
            kind=KIND_CODES[entry["kind"]],
            duplicate_of=entry["duplicate_of"],
            value=value,
            view=bytes.fromhex(entry["view_hex"]),
        )
        assert message.hex() == entry["message_hex"], f"message of seq {entry['seq']}"
        link = spec_mac(key, message)
        assert link.hex() == entry["link_hex"], f"link of seq {entry['seq']}"
        prev = link


def test_vector_messages_parse_into_the_documented_fields() -> None:
    vectors = load_vectors()
    names = [
        b"domain",
        b"prev",
        b"key_id",
        b"seq",
        b"topic",
        b"partition",
        b"offset",
        b"timestamp",
        b"kind",
        b"duplicate_of",
        b"value_null",
        b"digest",
        b"view",
    ]
    for entry in vectors["entries"]:
        fields = parse_frame(bytes.fromhex(entry["message_hex"]))
        assert [name for name, _ in fields] == names
        assert dict(fields)[b"value_null"] == (b"\x01" if entry["value_hex"] is None else b"\x00")
    genesis = parse_frame(bytes.fromhex(vectors["genesis_message_hex"]))
    assert genesis[0] == (b"domain", b"baldur-audit/genesis/v1")


def test_chain_md_worked_example_matches_vectors() -> None:
    """The numbers quoted in CHAIN.md are the vectors' (a stale doc fails here)."""
    text = (VECTORS_PATH.parents[1] / "CHAIN.md").read_text(encoding="utf-8")
    vectors = load_vectors()
    first = vectors["entries"][0]
    for quoted in (
        vectors["genesis_link_hex"],
        first["link_hex"],
        first["digest_hex"],
        vectors["key_id"],
        CURRENT_SCHEMA.fingerprint.hex(),
    ):
        assert quoted in text
    assert f"{len(bytes.fromhex(first['message_hex']))} bytes" in text
    assert f"({len(bytes.fromhex(vectors['genesis_message_hex']))} bytes)" in text


def test_key_forms_documented_in_chain_md_are_one_key() -> None:
    config = pytest.importorskip("baldur_audit.consumers.chain_keys")
    key = bytes(range(32))
    forms = ["hex:" + key.hex(), "base64:" + base64.b64encode(key).decode(), "  hex:" + key.hex() + "\n"]
    assert {config.parse_key(form) for form in forms} == {key}
    raw = "correct horse battery staple, 32+ bytes"
    assert config.parse_key(raw) == raw.encode("utf-8")


# --- (c) the Sealer ------------------------------------------------------------------------

TOPIC = "baldur.audit.events"
KEY = SigningKey.derive(b"k" * 32)
GENESIS = genesis_link(KEY, ledger_id="test-ledger", topic=TOPIC, partition=0)


def make_event(event_id: uuid.UUID | None = None, target: str = "db.pool.size") -> ChangeEvent:
    return ChangeEvent(
        event_id=event_id or uuid.uuid4(),
        occurred_at=datetime(2025, 11, 29, 12, 0, tzinfo=UTC),
        actor=Actor("alice"),
        action="update",
        target=target,
        source="api",
        before="1",
        after="2",
    )


def record(offset: int, value: bytes | None, timestamp_ms: int = 1_764_417_600_000) -> TopicRecord:
    return TopicRecord(topic=TOPIC, partition=0, offset=offset, timestamp_ms=timestamp_ms, value=value)


def fresh_sealer() -> Sealer:
    return Sealer(key=KEY, head=ChainHead(0, -1, GENESIS), schemas=KNOWN_SCHEMAS)


class Lookup:
    """A ledger look-up double that records what it was asked."""

    def __init__(self, known: dict[uuid.UUID, int] | None = None) -> None:
        self.known = known or {}
        self.calls: list[list[uuid.UUID]] = []

    def __call__(self, ids: Any) -> dict[uuid.UUID, int]:
        self.calls.append(list(ids))
        return {i: self.known[i] for i in ids if i in self.known}


def independent_link(prev: bytes, entry: chain.SealedEntry) -> bytes:
    rec = entry.record
    message = spec_link_message(
        prev=prev,
        key_id=KEY.key_id,
        seq=entry.seq,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        timestamp_ms=rec.timestamp_ms,
        kind=entry.kind.code,
        duplicate_of=entry.duplicate_of or 0,
        value=rec.value,
        view=entry.view,
    )
    return spec_mac(KEY.secret, message)


def test_sealer_seq_dense_from_one_over_offset_gaps_and_links_chain() -> None:
    sealer = fresh_sealer()
    values = [encode_event(make_event()) for _ in range(3)]
    entries = sealer.seal_batch([record(0, values[0]), record(2, values[1]), record(7, values[2])], Lookup())
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.kind for e in entries] == [EntryKind.EVENT] * 3
    prev = GENESIS
    for entry in entries:
        assert entry.link == independent_link(prev, entry)
        assert entry.key_id == KEY.key_id
        assert entry.digest == hashlib.sha256(entry.record.value or b"").digest()
        assert Linker(KEY).link(prev, entry.link_input()) == entry.link
        assert entry.schema_fingerprint == CURRENT_SCHEMA.fingerprint
        prev = entry.link


def test_sealer_head_advances_and_next_batch_continues() -> None:
    sealer = fresh_sealer()
    first = sealer.seal_batch([record(0, encode_event(make_event())), record(1, b"junk")], Lookup())
    assert (sealer.head.seq, sealer.head.offset, sealer.head.link) == (2, 1, first[-1].link)
    second = sealer.seal_batch([record(5, None)], Lookup())
    assert second[0].seq == 3
    assert second[0].link == independent_link(first[-1].link, second[0])
    assert (sealer.head.seq, sealer.head.offset, sealer.head.link) == (3, 5, second[0].link)


def test_sealer_duplicates_within_a_batch_point_at_the_first_occurrence() -> None:
    event = make_event()
    same_id_other_bytes = encode_event(make_event(event.event_id, target="other"))
    lookup = Lookup()
    entries = fresh_sealer().seal_batch(
        [record(0, encode_event(event)), record(1, encode_event(event)), record(2, same_id_other_bytes)],
        lookup,
    )
    assert [e.kind for e in entries] == [EntryKind.EVENT, EntryKind.DUPLICATE, EntryKind.DUPLICATE]
    assert [e.duplicate_of for e in entries] == [None, 1, 1]
    assert entries[2].event_id == entries[0].event_id
    assert b"\x00\x00\x00\x05other" in entries[2].view  # its own columns, not the first's
    assert lookup.calls and set(lookup.calls[0]) == {event.event_id}
    prev = GENESIS
    for entry in entries:
        assert entry.link == independent_link(prev, entry)
        prev = entry.link


def test_sealer_duplicates_via_the_ledger_lookup() -> None:
    seen, new = make_event(), make_event()
    lookup = Lookup({seen.event_id: 42})
    sealer = Sealer(key=KEY, head=ChainHead(100, 500, b"\x07" * 32), schemas=KNOWN_SCHEMAS)
    entries = sealer.seal_batch([record(501, encode_event(seen)), record(502, encode_event(new))], lookup)
    assert [(e.seq, e.kind, e.duplicate_of) for e in entries] == [
        (101, EntryKind.DUPLICATE, 42),
        (102, EntryKind.EVENT, None),
    ]
    assert set(lookup.calls[0]) == {seen.event_id, new.event_id}
    assert entries[0].link_input().duplicate_of == 42
    assert entries[0].link == independent_link(b"\x07" * 32, entries[0])


def test_sealer_rejected_first_occurrence_does_not_claim_the_id() -> None:
    event = make_event()
    # Same event id, but `before` is not JSON: it decodes as Avro and fails validation.
    # ChangeEvent refuses to build it, so write the Avro record directly.
    avro_record = event_to_record(event) | {"before": "{not json"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, CURRENT_SCHEMA.parsed, avro_record)
    invalid = b"\xc3\x01" + CURRENT_SCHEMA.fingerprint + body.getvalue()
    lookup = Lookup()
    entries = fresh_sealer().seal_batch(
        [record(0, invalid), record(1, encode_event(event)), record(2, invalid)], lookup
    )
    assert [e.kind for e in entries] == [EntryKind.REJECTED, EntryKind.EVENT, EntryKind.REJECTED]
    assert "before" in (entries[0].reject_reason or "")
    assert lookup.calls == [[event.event_id]]


@pytest.mark.parametrize(
    "value, null",
    [
        (None, True),
        (b"", False),
        (b"garbage", False),
        (b"\xc3\x01" + bytes(8) + b"x", False),
        (b"\xc3\x01", False),
    ],
)
def test_sealer_rejects_undecodable_values(value: bytes | None, null: bool) -> None:
    entries = fresh_sealer().seal_batch([record(0, value)], Lookup())
    (entry,) = entries
    assert entry.kind is EntryKind.REJECTED and entry.duplicate_of is None
    assert entry.event_id is None and entry.reject_reason
    assert entry.link_input().value_null is null
    assert entry.digest == hashlib.sha256(value or b"").digest()
    assert entry.link == independent_link(GENESIS, entry)


def test_sealer_records_the_fingerprint_of_an_unknown_schema() -> None:
    (entry,) = fresh_sealer().seal_batch([record(0, b"\xc3\x01" + b"\x01" * 8 + b"body")], Lookup())
    assert entry.kind is EntryKind.REJECTED
    assert entry.schema_fingerprint == b"\x01" * 8
    assert "unknown writer schema" in (entry.reject_reason or "")


def test_null_and_empty_values_differ_only_by_the_null_flag() -> None:
    null_entry = fresh_sealer().seal_batch([record(0, None)], Lookup())[0]
    empty_entry = fresh_sealer().seal_batch([record(0, b"")], Lookup())[0]
    assert null_entry.digest == empty_entry.digest
    assert null_entry.link != empty_entry.link


@pytest.mark.parametrize("offsets", [[5], [4], [6, 6], [7, 6], [6, 8, 7]])
def test_sealer_refuses_offsets_that_do_not_follow_the_head(offsets: list[int]) -> None:
    head = ChainHead(3, 5, b"\x09" * 32)
    sealer = Sealer(key=KEY, head=head, schemas=KNOWN_SCHEMAS)
    with pytest.raises(ValueError, match="does not follow"):
        sealer.seal_batch([record(o, b"x") for o in offsets], Lookup())
    assert (sealer.head.seq, sealer.head.offset, sealer.head.link) == (3, 5, b"\x09" * 32)
    # and the sealer still works from the unchanged head
    (entry,) = sealer.seal_batch([record(6, b"x")], Lookup())
    assert entry.seq == 4 and entry.link == independent_link(b"\x09" * 32, entry)


def test_sealer_does_not_share_the_callers_head() -> None:
    head = ChainHead(0, -1, GENESIS)
    sealer = Sealer(key=KEY, head=head, schemas=KNOWN_SCHEMAS)
    sealer.seal_batch([record(0, b"x")], Lookup())
    assert (head.seq, head.offset, head.link) == (0, -1, GENESIS)


def test_empty_batch_changes_nothing() -> None:
    sealer = fresh_sealer()
    assert sealer.seal_batch([], Lookup()) == []
    assert (sealer.head.seq, sealer.head.offset) == (0, -1)


# --- (d) properties: every covered field matters; framing is injective ---------------------

u63 = st.integers(min_value=0, max_value=2**63 - 1)
utf8_text = st.characters(codec="utf-8")  # no lone surrogates: every string has UTF-8 bytes
link_inputs = st.builds(
    LinkInput,
    seq=st.integers(min_value=1, max_value=2**64 - 1),
    topic=st.text(alphabet=utf8_text, max_size=30),
    partition=st.integers(min_value=0, max_value=2**31 - 1),
    offset=u63,
    timestamp_ms=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    kind=st.sampled_from(list(EntryKind)),
    duplicate_of=st.integers(min_value=0, max_value=2**64 - 1),
    value_null=st.booleans(),
    digest=st.binary(min_size=32, max_size=32),
    view_digest=st.binary(min_size=32, max_size=32),
)
LINK_FIELDS = [
    "seq",
    "offset",
    "timestamp_ms",
    "kind",
    "duplicate_of",
    "value_null",
    "digest",
    "view_digest",
    "topic",
    "partition",
    "prev",
    "key_id",
]


def _replace(link_input: LinkInput, **changes: Any) -> LinkInput:
    values = {name: getattr(link_input, name) for name in LinkInput.__dataclass_fields__}
    values.update(changes)
    return LinkInput(**values)


def _changed(name: str, link_input: LinkInput, data: st.DataObject) -> dict[str, Any]:
    current = getattr(link_input, name)
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "seq": st.integers(min_value=1, max_value=2**64 - 1),
        "offset": u63,
        "timestamp_ms": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "kind": st.sampled_from(list(EntryKind)),
        "duplicate_of": st.integers(min_value=0, max_value=2**64 - 1),
        "value_null": st.booleans(),
        "digest": st.binary(min_size=32, max_size=32),
        "view_digest": st.binary(min_size=32, max_size=32),
        "topic": st.text(alphabet=utf8_text, max_size=30),
        "partition": st.integers(min_value=0, max_value=2**31 - 1),
    }
    return {name: data.draw(strategies[name].filter(lambda v: v != current), label=name)}


@pytest.mark.parametrize("name", LINK_FIELDS)
@settings(max_examples=25, deadline=None)
@given(link_input=link_inputs, prev=st.binary(min_size=32, max_size=32), data=st.data())
def test_changing_any_covered_field_changes_the_link(
    link_input: LinkInput, prev: bytes, name: str, data: st.DataObject
) -> None:
    key = SigningKey.derive(b"s" * 32)
    original = Linker(key).link(prev, link_input)
    linker, other_prev, other_input = Linker(key), prev, link_input
    if name == "prev":
        other_prev = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != prev))
    elif name == "key_id":
        # same secret, different id: the id alone must matter
        key_id = data.draw(
            st.text(alphabet=utf8_text, min_size=1, max_size=24).filter(lambda s: s != key.key_id)
        )
        linker = Linker(SigningKey(key_id=key_id, secret=key.secret))
    else:
        other_input = _replace(link_input, **_changed(name, link_input, data))
    assert linker.link(other_prev, other_input) != original


@PROPS
@given(
    link_input=link_inputs,
    prev=st.binary(min_size=32, max_size=32),
    key_id=st.text(alphabet=utf8_text, max_size=24),
)
def test_link_message_parses_back_into_exactly_its_inputs(
    link_input: LinkInput, prev: bytes, key_id: str
) -> None:
    """decode(encode(x)) == x: the framing is injective."""
    message = link_message(key_id, prev, link_input)
    fields = parse_frame(message)
    assert fields == [
        (b"domain", b"baldur-audit/link/v2"),
        (b"prev", prev),
        (b"key_id", key_id.encode("utf-8")),
        (b"seq", link_input.seq.to_bytes(8, "big")),
        (b"topic", link_input.topic.encode("utf-8")),
        (b"partition", link_input.partition.to_bytes(4, "big", signed=True)),
        (b"offset", link_input.offset.to_bytes(8, "big", signed=True)),
        (b"timestamp", link_input.timestamp_ms.to_bytes(8, "big", signed=True)),
        (b"kind", bytes([link_input.kind.code])),
        (b"duplicate_of", link_input.duplicate_of.to_bytes(8, "big")),
        (b"value_null", b"\x01" if link_input.value_null else b"\x00"),
        (b"digest", link_input.digest),
        (b"view", link_input.view_digest),
    ]
    assert message == spec_link_message_of_digest(
        prev=prev,
        key_id=key_id,
        seq=link_input.seq,
        topic=link_input.topic,
        partition=link_input.partition,
        offset=link_input.offset,
        timestamp_ms=link_input.timestamp_ms,
        kind=link_input.kind.code,
        duplicate_of=link_input.duplicate_of,
        value_null=link_input.value_null,
        digest=link_input.digest,
        view_digest=link_input.view_digest,
    )


safe_text = st.text(alphabet=utf8_text, max_size=12)


@PROPS
@given(
    a=st.tuples(safe_text, safe_text, st.integers(0, 2**31 - 1)),
    b=st.tuples(safe_text, safe_text, st.integers(0, 2**31 - 1)),
)
def test_genesis_is_injective(a: tuple[str, str, int], b: tuple[str, str, int]) -> None:
    msg_a = genesis_message(ledger_id=a[0], topic=a[1], partition=a[2])
    msg_b = genesis_message(ledger_id=b[0], topic=b[1], partition=b[2])
    assert (msg_a == msg_b) == (a == b)
    assert msg_a == spec_genesis_message(*a)


@pytest.mark.parametrize(
    "first, second",
    [
        (("c", "ab"), ("bc", "a")),  # (ledger, topic): bytes moved across the boundary
        (("", "abc"), ("abc", "")),
        (("a\x00", "b"), ("a", "\x00b")),
        (("x", "y"), ("x" + "\x05topic\x00\x00\x00\x01y", "")),  # an embedded fake field
    ],
)
def test_genesis_framing_tricky_cases(first: tuple[str, str], second: tuple[str, str]) -> None:
    link_a = genesis_link(KEY, ledger_id=first[0], topic=first[1], partition=0)
    link_b = genesis_link(KEY, ledger_id=second[0], topic=second[1], partition=0)
    assert link_a != link_b


def test_key_id_and_topic_boundary_is_unambiguous() -> None:
    li = LinkInput(
        seq=1,
        topic="x",
        partition=0,
        offset=0,
        timestamp_ms=0,
        kind=EntryKind.EVENT,
        duplicate_of=0,
        value_null=False,
        digest=bytes(32),
        view_digest=bytes(32),
    )
    li2 = _replace(li, topic="")
    assert link_message("hk1-", GENESIS, li) != link_message("hk1-x", GENESIS, li2)


def test_genesis_and_link_messages_are_domain_separated() -> None:
    li = LinkInput(
        seq=1,
        topic=TOPIC,
        partition=0,
        offset=0,
        timestamp_ms=0,
        kind=EntryKind.EVENT,
        duplicate_of=0,
        value_null=False,
        digest=bytes(32),
        view_digest=bytes(32),
    )
    genesis = parse_frame(genesis_message(ledger_id="l", topic=TOPIC, partition=0))
    entry = parse_frame(link_message(KEY.key_id, GENESIS, li))
    assert genesis[0][0] == entry[0][0] == b"domain"
    assert genesis[0][1] != entry[0][1]


def test_different_keys_give_different_links() -> None:
    other = SigningKey(key_id=KEY.key_id, secret=b"K" * 32)
    assert genesis_link(other, ledger_id="l", topic=TOPIC, partition=0) != genesis_link(
        KEY, ledger_id="l", topic=TOPIC, partition=0
    )


# --- (e) keys --------------------------------------------------------------------------------

SECRET = b"hunter2-is-not-a-key-but-this-is-32+bytes"


def test_signing_key_repr_never_shows_the_secret() -> None:
    key = SigningKey.derive(SECRET)
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert SECRET.decode() not in text
        assert SECRET.hex() not in text
        assert repr(SECRET) not in text
        assert "hunter2" not in text
        assert key.key_id in text


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_short_key_is_a_config_error_without_the_key(length: int) -> None:
    secret = (b"S3KR1T-" * 5)[:length]
    with pytest.raises(ConfigError) as info:
        SigningKey.derive(secret)
    assert "S3KR1T" not in str(info.value) and "53334b523154" not in str(info.value)
    assert "32" in str(info.value)
    with pytest.raises(ConfigError):
        SigningKey(key_id="hk1-0000000000000000", secret=secret)


def test_key_of_exactly_32_bytes_is_accepted() -> None:
    key = SigningKey.derive(b"\x00" * 32)
    assert key.key_id.startswith("hk1-") and len(key.key_id) == 20
    assert key.key_id == spec_key_id(b"\x00" * 32)


def test_entry_kind_codes_and_labels_are_the_spec() -> None:
    assert {k.label: k.code for k in EntryKind} == KIND_CODES
    assert EntryKind.from_label("duplicate") is EntryKind.DUPLICATE
    with pytest.raises(ValueError):
        EntryKind.from_label("bogus")


def test_spelled_out_link_message_equals_the_generic_framing() -> None:
    from baldur_audit.schemas.chain import (
        EntryKind,
        LinkInput,
        link_message,
        link_message_framed,
    )

    for digest in (bytes(32), b"short", bytes(40)):
        link_input = LinkInput(
            seq=7,
            topic="t\u00e9",
            partition=3,
            offset=2**40,
            timestamp_ms=-5,
            kind=EntryKind.DUPLICATE,
            duplicate_of=2,
            value_null=True,
            digest=digest,
            view_digest=digest[::-1],
        )
        assert link_message("hk1-x", b"p" * 32, link_input) == link_message_framed(
            "hk1-x", b"p" * 32, link_input
        )


@PROPS
@given(link_input=link_inputs, prev=st.binary(min_size=0, max_size=40))
def test_ledger_linker_equals_the_linker(link_input: LinkInput, prev: bytes) -> None:
    """verify's and replay's per-entry form computes the very same link."""
    from baldur_audit.schemas.chain import LedgerLinker

    fast = LedgerLinker(KEY, topic=link_input.topic, partition=link_input.partition)
    assert fast.link(
        prev,
        link_input.seq,
        link_input.offset,
        link_input.timestamp_ms,
        link_input.kind.code,
        link_input.duplicate_of,
        link_input.value_null,
        link_input.digest,
        link_input.view_digest,
    ) == Linker(KEY).link(prev, link_input)
