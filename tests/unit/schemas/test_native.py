"""The native accelerator (schemas/native/, through schemas/accel.py) gives the very bytes of the
pure-Python reference on generated input: the decoder accepts only what the Python fast path
accepts, with the same view, and answers for ordinary events; links, payload digests and tree
leaves are equal. Where the Rust toolchain is present the module must be built: these tests
fail then rather than skip, so that a run cannot silently test the reference path only."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import accel, fastpath
from baldur_audit.schemas.chain import (
    EntryKind,
    LedgerLinker,
    LinkInput,
    SigningKey,
    link_message,
    payload_digest,
)
from baldur_audit.schemas.codec import CURRENT_SCHEMA, MAGIC, encode_event, event_to_record
from baldur_audit.schemas.merkle import entry_leaf_hash
from tests.support.fuzz import mutated

from .test_codec import base_event, events
from .test_fastpath import _encode

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PREFIX = MAGIC + CURRENT_SCHEMA.fingerprint


def cargo_present() -> bool:
    """Whether deploy/venv.sh would build the native module here (it looks in the same places)."""
    home = os.environ.get("CARGO_HOME") or str(Path.home() / ".cargo")
    return shutil.which("cargo") is not None or os.access(Path(home) / "bin" / "cargo", os.X_OK)


def require_native() -> accel.Native:
    """The installed native module; a failure when cargo is here but the module is not."""
    if accel.INSTALLED is None:
        if cargo_present():
            pytest.fail("cargo is installed but baldur_audit_native is not importable: run deploy/venv.sh")
        pytest.skip("no Rust toolchain on this machine: the reference path is the only one")
    return accel.INSTALLED


@contextmanager
def reference_path() -> Iterator[None]:
    """Run the block on the pure-Python path, then restore the switch."""
    was = accel.enabled()
    accel.set_enabled(False)
    try:
        yield
    finally:
        accel.set_enabled(was)


@pytest.fixture(scope="module")
def native() -> Iterator[accel.Native]:
    module = require_native()
    was = accel.enabled()
    accel.set_enabled(True)
    try:
        yield module
    finally:
        accel.set_enabled(was)


def test_the_native_module_is_built_where_cargo_is() -> None:
    module = require_native()
    assert accel.INSTALLED is module


def test_the_switch_forces_the_reference_path() -> None:
    require_native()
    key = SigningKey("k", b"s" * 32)
    with reference_path():
        assert accel.native is None
        linker = LedgerLinker(key, topic="t", partition=0)
        assert getattr(linker.link, "__self__", None) is linker
    assert accel.native is accel.INSTALLED


# --- decode_view ---------------------------------------------------------------------------


def python_decode(value: bytes) -> Any:
    with reference_path():
        return fastpath.decode_view(value)


def agree(native: accel.Native, value: bytes) -> bytes | None:
    """Native accepts only what the Python fast path accepts, with the same id and bytes."""
    found = native.decode_view(value, PREFIX)
    if found is not None:
        python = python_decode(value)
        assert python is not None, "native accepted what the Python path defers or rejects"
        assert (python[0].bytes, python[1]) == found
        assert fastpath.decode_view(value) == python
    return None if found is None else found[1]


@PROPS
@given(event=events)
def test_valid_events_decode_to_the_same_view(native: accel.Native, event: Any) -> None:
    agree(native, encode_event(event))


plain = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 -_.:/@", min_size=1, max_size=30).filter(
    lambda s: s.strip() != ""
)
json_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | plain,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(plain, children, max_size=4),
    max_leaves=10,
)


@PROPS
@given(
    actor=plain,
    target=plain,
    before=json_plain,
    after=json_plain,
    reason=st.none() | st.text(max_size=50).filter(lambda s: "\x00" not in s),
    attributes=st.dictionaries(plain, st.text(max_size=20).filter(lambda s: "\x00" not in s), max_size=5),
)
def test_ordinary_events_are_decoded_natively(
    native: accel.Native,
    actor: str,
    target: str,
    before: Any,
    after: Any,
    reason: str | None,
    attributes: Any,
) -> None:
    from baldur_audit.schemas.event import Actor, to_json_text

    event = base_event(
        actor=Actor(actor, "service"),
        target=target,
        before=to_json_text("before", before),
        after=to_json_text("after", after),
        reason=reason,
        attributes=attributes,
    )
    value = encode_event(event)
    assert agree(native, value) is not None, "an ordinary event was deferred to Python"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, data=st.data())
def test_mutated_records_never_decode_where_python_does_not(
    native: accel.Native, event: Any, data: st.DataObject
) -> None:
    value = mutated(
        data,
        encode_event(event),
        first=0,
        set_to=[0x00, 0x01, 0x02, 0x03, 0x20, 0x5C, 0x7F, 0x80, 0xC0, 0xFF],
    )
    agree(native, value)


@PROPS
@given(body=st.binary(max_size=200))
def test_arbitrary_bodies_never_decode_where_python_does_not(native: accel.Native, body: bytes) -> None:
    agree(native, PREFIX + body)


JSON_ALPHABET = st.sampled_from(
    list('[]{}",:0123456789.eE+- \t\n\rtruefalsnl\\/ubx')
    + ["\\u0000", "\\ud800", "\\udc00", "\\u00e9", "\\uD83D\\uDE00", "é", "\x01", "\x7f", "1e400", "NaN"]
    + ["[" * 65, "]" * 65, "9" * 4301, "0." + "0" * 16383 + "1", "1e-16384", "1.5e-16383"]
)


@settings(
    max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(pieces=st.lists(JSON_ALPHABET, max_size=30), where=st.sampled_from(["before", "after"]))
def test_json_texts_are_judged_like_python(native: accel.Native, pieces: list[str], where: str) -> None:
    record = event_to_record(base_event())
    agree(native, _encode(record | {where: "".join(pieces)}))


@PROPS
@given(value=json_plain, where=st.sampled_from(["before", "after"]), data=st.data())
def test_mutated_json_texts_are_judged_like_python(
    native: accel.Native, value: Any, where: str, data: st.DataObject
) -> None:
    from baldur_audit.schemas.event import to_json_text

    text = to_json_text(where, value)
    pos = data.draw(st.integers(min_value=0, max_value=len(text)))
    text = (
        text[:pos] + data.draw(JSON_ALPHABET) + text[pos + data.draw(st.integers(min_value=0, max_value=2)) :]
    )
    agree(native, _encode(event_to_record(base_event()) | {where: text}))


@PROPS
@given(
    field=st.sampled_from(["actor", "target", "reason", "client_ip", "action", "trace_id", "key", "value"]),
    text=st.text(max_size=40) | st.sampled_from([" ", "\x1c", "\xa0", "\u2028 ", "é", "a" * 257, "é" * 1025]),
)
def test_text_fields_are_judged_like_python(native: accel.Native, field: str, text: str) -> None:
    record = event_to_record(base_event())
    if field == "actor":
        record["actor"] = {"id": text, "type": "user"}
    elif field in ("key", "value"):
        record["attributes"] = {text: "v"} if field == "key" else {"k": text}
    else:
        record[field] = text
    try:
        value = _encode(record)
    except (UnicodeEncodeError, ValueError):
        return
    agree(native, value)


def test_edge_values_agree(native: accel.Native) -> None:
    record = event_to_record(base_event())
    good = _encode(record)
    assert agree(native, good) is not None
    micros = [fastpath._MIN_US, fastpath._MIN_US - 1, fastpath._MAX_US, fastpath._MAX_US + 1, 0]
    cases = [_encode(record | {"occurred_at": us}) for us in micros]
    cases += [
        _encode(record | {"attributes": {}}),
        _encode(record | {"attributes": {f"k{i}": "v" for i in range(64)}}),
        _encode(record | {"attributes": {'a\n"\\\x01\x1f\x7f': "é\t\b\f\r"}}),
        _encode(record | {"event_id": str(base_event().event_id).upper()}),
        _encode(record | {"trace_id": "0" * 32}),
        _encode(record | {"before": "[" * 64 + "]" * 64, "after": "[" * 65 + "]" * 65}),
        _encode(record | {"before": "9" * 4300, "after": "-" + "9" * 4301}),
        _encode(record | {"before": "1.7976931348623157e308", "after": "1.7976931348623159e308"}),
        good[:-1],
        good + b"\x00",
        good[:10] + b"\xc8\x00" + good[11:],
    ]
    accepted = [agree(native, value) is not None for value in cases]
    assert accepted[:3] == [True, False, True] and accepted[4] is True
    assert native.decode_view(good, b"\x00" * 10) is None


def test_python_fast_path_still_decides_what_native_defers(native: accel.Native) -> None:
    from baldur_audit.schemas.event import Actor

    # An actor id of non-ASCII letters only: native defers on the Unicode whitespace rule.
    value = encode_event(base_event(actor=Actor("ÄÖÜ", "user")))
    assert native.decode_view(value, PREFIX) is None
    found = fastpath.decode_view(value)
    assert found is not None and found == python_decode(value)


# --- links, digests, leaves ---------------------------------------------------------------

links = st.binary(min_size=32, max_size=32) | st.binary(max_size=40)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=100),
    key_id=st.text(max_size=20),
    topic=st.text(max_size=20),
    partition=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    prev=links,
    seq=u64,
    offset=i64,
    timestamp_ms=i64,
    kind=st.sampled_from(list(EntryKind)),
    duplicate_of=u64,
    value_null=st.booleans(),
    digest=links,
    view_digest=links,
)
def test_ledger_linker_links_like_the_reference(
    native: accel.Native,
    secret: bytes,
    key_id: str,
    topic: str,
    partition: int,
    prev: bytes,
    seq: int,
    offset: int,
    timestamp_ms: int,
    kind: EntryKind,
    duplicate_of: int,
    value_null: bool,
    digest: bytes,
    view_digest: bytes,
) -> None:
    import hashlib
    import hmac

    key = SigningKey(key_id, secret)
    args = (prev, seq, offset, timestamp_ms, kind.code, duplicate_of, value_null, digest, view_digest)
    fast = LedgerLinker(key, topic=topic, partition=partition)
    with reference_path():
        slow = LedgerLinker(key, topic=topic, partition=partition)
    assert getattr(fast.link, "__self__", None) is not fast, "the native linker is not in use"
    link_input = LinkInput(
        seq=seq,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        kind=kind,
        duplicate_of=duplicate_of,
        value_null=value_null,
        digest=digest,
        view_digest=view_digest,
    )
    expected = hmac.new(secret, link_message(key_id, prev, link_input), hashlib.sha256).digest()
    assert fast.link(*args) == slow.link(*args) == expected
    link = hashlib.sha256(prev).digest()
    leaf = entry_leaf_hash(link_input, key_id=key_id, link=link)
    with reference_path():
        assert leaf == entry_leaf_hash(link_input, key_id=key_id, link=link)


@settings(max_examples=200, deadline=None)
@given(value=st.none() | st.binary(max_size=600))
def test_payload_digest_is_the_reference(native: accel.Native, value: bytes | None) -> None:
    fast = payload_digest(value)
    with reference_path():
        assert fast == payload_digest(value)
    assert native.payload_digest(value) == fast


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=16, max_size=16))
def test_event_ids_are_built_like_uuid_from_bytes(raw: bytes) -> None:
    import pickle
    import uuid

    made, reference = fastpath.uuid_from_bytes(raw), uuid.UUID(bytes=raw)
    assert (made, hash(made), str(made), made.is_safe) == (
        reference,
        hash(reference),
        str(reference),
        reference.is_safe,
    )
    assert pickle.loads(pickle.dumps(made)) == reference  # noqa: S301 (our own bytes)


def test_baldur_native_setting() -> None:
    from baldur_audit.consumers.settings import Settings
    from baldur_audit.schemas.errors import ConfigError

    assert Settings.from_env({}).native() is True
    assert Settings.from_env({"BALDUR_NATIVE": " Auto "}).native() is True
    assert Settings.from_env({"BALDUR_NATIVE": "off"}).native() is False
    with pytest.raises(ConfigError, match="BALDUR_NATIVE must be auto or off"):
        Settings.from_env({"BALDUR_NATIVE": "on"}).native()
