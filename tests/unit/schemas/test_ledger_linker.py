"""LedgerLinker's one-pack form of the link (32-byte links and digests, the MAC from the
padded-key states) gives the very bytes of HMAC-SHA256 over ``link_message``, for any key
length and whether or not the fields have the usual sizes."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from baldur_audit.schemas.chain import EntryKind, LedgerLinker, LinkInput, SigningKey, link_message

sizes = st.one_of(st.just(32), st.integers(min_value=0, max_value=70))


@st.composite
def cases(draw: st.DrawFn) -> tuple[SigningKey, bytes, LinkInput]:
    secret = draw(st.binary(min_size=32, max_size=200))  # over 64 bytes: hashed first (RFC 2104)
    key = SigningKey(key_id=draw(st.text(min_size=1, max_size=20)), secret=secret)
    link_input = LinkInput(
        seq=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        topic=draw(st.text(max_size=30)),
        partition=draw(st.integers(min_value=0, max_value=2**31 - 1)),
        offset=draw(st.integers(min_value=-1, max_value=2**63 - 1)),
        timestamp_ms=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        kind=draw(st.sampled_from(list(EntryKind))),
        duplicate_of=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        value_null=draw(st.booleans()),
        digest=draw(sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n))),
        view_digest=draw(sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n))),
    )
    prev = draw(sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    return key, prev, link_input


@given(cases())
def test_ledger_linker_gives_the_hmac_of_the_link_message(case: tuple[SigningKey, bytes, LinkInput]) -> None:
    key, prev, link_input = case
    linker = LedgerLinker(key, topic=link_input.topic, partition=link_input.partition)
    computed = linker.link(
        prev,
        link_input.seq,
        link_input.offset,
        link_input.timestamp_ms,
        link_input.kind.code,
        link_input.duplicate_of,
        link_input.value_null,
        link_input.digest,
        link_input.view_digest,
    )
    assert (
        computed == hmac.new(key.secret, link_message(key.key_id, prev, link_input), hashlib.sha256).digest()
    )
