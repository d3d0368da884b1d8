"""Keyed actor pseudonyms (producers/pseudonym.py): format, keying, one published mapping."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from baldur_audit.producers.pseudonym import (
    KEY_ENV,
    Pseudonymizer,
    identities_topic,
    is_pseudonym,
    parse_key,
    pseudonym,
)
from baldur_audit.schemas.errors import ConfigError, InvalidEvent

KEY = bytes(range(32))


def test_pseudonym_is_hmac_sha256_of_the_utf8_id() -> None:
    expected = hmac.new(KEY, "älice@example.com".encode(), hashlib.sha256).hexdigest()
    name = pseudonym(KEY, "älice@example.com")
    assert name == "psn1-" + expected
    assert is_pseudonym(name) and len(name) == 69


def test_pseudonym_depends_on_key_and_id_and_reveals_neither() -> None:
    a = pseudonym(KEY, "alice")
    assert a == pseudonym(KEY, "alice")
    assert a != pseudonym(KEY, "bob")
    assert a != pseudonym(bytes(32), "alice")
    assert "alice" not in a and KEY.hex() not in a


@pytest.mark.parametrize("bad", ["", "   ", None, 42, "\udc80"])
def test_bad_actor_ids_are_typed_errors(bad: object) -> None:
    with pytest.raises(InvalidEvent):
        pseudonym(KEY, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["psn1-" + "a" * 63, "psn1-" + "A" * 64, "psn2-" + "a" * 64, "psn1-" + "a" * 64 + "\n", "alice"]
)
def test_is_pseudonym_is_strict(text: str) -> None:
    assert not is_pseudonym(text)


def test_keys_from_text_or_hex_and_short_keys_refused_without_quoting_them() -> None:
    assert parse_key(KEY.hex()) == KEY
    assert parse_key("a sixteen+ byte passphrase") == b"a sixteen+ byte passphrase"
    with pytest.raises(ConfigError) as err:
        parse_key("short-secret")
    assert "short-secret" not in str(err.value)
    with pytest.raises(ConfigError):
        Pseudonymizer(b"too short")
    with pytest.raises(ConfigError, match=KEY_ENV):
        Pseudonymizer.from_env({})


def test_each_mapping_is_published_once_before_the_pseudonym_is_used() -> None:
    sent: list[tuple[str, str]] = []
    pseudonymize = Pseudonymizer.from_env(
        {KEY_ENV: KEY.hex()}, publish=lambda name, who: sent.append((name, who))
    )
    first = pseudonymize("alice")
    assert sent == [(first, "alice")]
    assert pseudonymize("alice") == first and pseudonymize("bob") != first
    assert [who for _, who in sent] == ["alice", "bob"]
    assert "alice" not in repr(pseudonymize) and KEY.hex() not in repr(pseudonymize)


def test_a_failing_publisher_leaves_the_mapping_unpublished() -> None:
    calls: list[str] = []

    def flaky(name: str, who: str) -> None:
        calls.append(who)
        if len(calls) == 1:
            raise ConfigError("broker down")

    pseudonymize = Pseudonymizer(KEY, publish=flaky)
    with pytest.raises(ConfigError):
        pseudonymize("alice")
    pseudonymize("alice")  # retried, since the first one never went out
    assert calls == ["alice", "alice"]


def test_identities_topic_name() -> None:
    assert identities_topic("baldur.audit") == "baldur.audit.identities"


def test_the_trail_records_pseudonyms_when_asked_to() -> None:
    from baldur_audit.producers import Actor, AuditTrail

    sent: list[tuple[str, str]] = []
    pseudonymize = Pseudonymizer(KEY, publish=lambda name, who: sent.append((name, who)))
    trail = AuditTrail(bootstrap="127.0.0.1:1", topic="t", pseudonymize_actors=pseudonymize)
    plain = AuditTrail(bootstrap="127.0.0.1:1", topic="t")
    try:
        event = trail.prepare(actor="alice", action="update", target="svc.timeout")
        typed = trail.prepare(actor=Actor("healer", "system"), action="restart", target="svc")
        assert event.actor.id == pseudonym(KEY, "alice") and event.actor.type == "user"
        assert (typed.actor.id, typed.actor.type) == (pseudonym(KEY, "healer"), "system")
        assert sent == [(event.actor.id, "alice"), (typed.actor.id, "healer")]
        assert plain.prepare(actor="alice", action="update", target="svc").actor.id == "alice"
        with pytest.raises(InvalidEvent):
            trail.prepare(actor=" ", action="update", target="svc")
    finally:
        trail.close(0)
        plain.close(0)
