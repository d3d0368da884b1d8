"""Redaction: key-name and value-shape rules, fingerprints, structure, and properties."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from baldur_audit.producers import redact as redact_module
from baldur_audit.producers.redact import (
    REDACTED,
    TOO_DEEP,
    Redactor,
    is_sensitive_key,
)
from baldur_audit.schemas.errors import ConfigError, InvalidEvent
from baldur_audit.schemas.event import MAX_JSON_DEPTH, to_json_text

KEY = b"0123456789abcdef-test-key"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAs3cr3tK3y\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----"
)


def fingerprint(secret: bytes, key: bytes = KEY) -> str:
    digest = hmac.new(key, b"baldur-audit/redaction/v1" + secret, hashlib.sha256).hexdigest()
    return f"[REDACTED:hmac-sha256:{digest[:16]}]"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "db_password",
        "DB-PASSWORD",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "client_secret",
        "AWS_SECRET_ACCESS_KEY",
        "aws_access_key_id",
        "secret_key",
        "token",
        "refreshToken",
        "access_token",
        "GITHUB_TOKEN",
        "apikey",
        "api_key",
        "api-key",
        "X-Api-Key",
        "x-api-key",
        "privateKey",
        "private_key",
        "credential",
        "credentials",
        "authorization",
        "Proxy-Authorization",
        "auth",
        "basic_auth",
        "cookie",
        "Set-Cookie",
        "session",
        "sessionid",
        "session_id",
        "session key",
        "signature",
        "webhook.signature",
        "encryption_key",
        "signingKey",
        "pass",
        "jwt",
        "passwordHash",
        "tokenizer_api_key",
        "auth_header",
        "authKey",
        "proxy_auth",
    ],
)
def test_sensitive_key_names(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "username",
        "user",
        "host",
        "port",
        "author",
        "authority",
        "key",
        "keys",
        "value",
        "tokenizer_model",
        "tokenizer",
        "max_tokens",
        "max_output_tokens",
        "prompt_tokens",
        "token_ttl",
        "token_url",
        "tokenType",
        "password_min_length",
        "password_policy",
        "secret_name",
        "secretRef",
        "secret_version",
        "session_timeout",
        "cookie_name",
        "credentials_file",
        "signature_algorithm",
        "passport",
        "compass",
        "bypass_cache",
        "auth_type",
        "authn_provider",
        "oauth_enabled",
    ],
)
def test_innocent_key_names(key: str) -> None:
    assert not is_sensitive_key(key)


def test_value_under_sensitive_key_is_replaced_whole() -> None:
    redacted = Redactor().redact(
        {
            "password": "hunter2",
            "api_key": 12345,
            "credentials": {"user": "u", "pw": "p"},
            "tokens": ["a", "b"],
            "user": "alice",
            "port": 5432,
        }
    )
    assert redacted == {
        "password": REDACTED,
        "api_key": REDACTED,
        "credentials": REDACTED,
        "tokens": REDACTED,
        "user": "alice",
        "port": 5432,
    }


def test_booleans_and_none_under_sensitive_keys_are_kept() -> None:
    value = {"password_authentication": False, "token": None, "cookie_secure": True}
    assert Redactor().redact(value) == value


def test_nested_keys_and_lists_at_any_depth() -> None:
    value = {"a": [{"b": {"c": [{"DB_PASSWORD": "x", "ok": "y"}]}}]}
    assert Redactor().redact(value) == {"a": [{"b": {"c": [{"DB_PASSWORD": REDACTED, "ok": "y"}]}}]}


def test_dict_keys_themselves_are_kept() -> None:
    assert Redactor().redact({JWT: 1}) == {JWT: 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pass@host/db", "postgresql://user:[REDACTED]@host/db"),
        ("postgres://u:p@ss@host:5432/db?x=1", "postgres://u:[REDACTED]@host:5432/db?x=1"),
        ("redis://:s3cret@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        ("see https://example.com:8443/path?q=1 ok", "see https://example.com:8443/path?q=1 ok"),
        ("host=db port=5432 password=y user=z", "host=db port=5432 password=[REDACTED] user=z"),
        ("host=db password='a b' user=z", "host=db password='[REDACTED]' user=z"),
        ("Server=x;User Id=u;Password=p4ss;", "Server=x;User Id=u;Password=[REDACTED];"),
        (
            "https://api.example.com/v1?api_key=abc123&page=2",
            "https://api.example.com/v1?api_key=[REDACTED]&page=2",
        ),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED]"),
        (
            "curl -H 'Authorization: Basic dXNlcjpwYXNz' https://x",
            "curl -H 'Authorization: Basic [REDACTED]' https://x",
        ),
        ("Cookie: theme=dark; session=abc123", "Cookie: [REDACTED]"),
        ("sent Bearer abcdEFGH1234 upstream", "sent Bearer [REDACTED] upstream"),
        ("header basic dXNlcjpwYXNz", "header basic [REDACTED]"),
        ("basic configuration; Bearer token rotation", "basic configuration; Bearer token rotation"),
        (f"jwt {JWT} end", "jwt [REDACTED] end"),
        (f"{PEM}\nafter", "[REDACTED]\nafter"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk", "[REDACTED]"),
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ),
        ("id AKIAIOSFODNN7EXAMPLE!", "id [REDACTED]!"),
        ("ASIAY34FZKBOKMUTVV7A", "[REDACTED]"),
        ("ghp_" + "a1B2" * 9, "[REDACTED]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[REDACTED]"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "[REDACTED]"),
        ("key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "key=[REDACTED]"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED]"),
        (
            '{"password": "hun\\"ter2", "user": "bob", "pin": 1234}',
            '{"password": "[REDACTED]", "user": "bob", "pin": 1234}',
        ),
        ('{"api_key":12345,"token":null}', '{"api_key":"[REDACTED]","token":null}'),
        ("{'secret': 'x', 'n': 1}", "{'secret': '[REDACTED]', 'n': 1}"),
        ("password: my long pass phrase\nnext: line", "password: [REDACTED]\nnext: line"),
        ("rotated the password for alice", "rotated the password for alice"),
        ("nothing to see", "nothing to see"),
    ],
)
def test_value_shapes_in_text(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected
    assert Redactor().redact({"note": text}) == {"note": expected}
    assert Redactor().redact(["x", [text]]) == ["x", [expected]]


def test_fingerprint_is_the_specified_hmac() -> None:
    redactor = Redactor(KEY)
    assert redactor.redact({"password": "hunter2"}) == {"password": fingerprint(b"hunter2")}
    assert redactor.redact_text("postgresql://u:pw@h/db") == (f"postgresql://u:{fingerprint(b'pw')}@h/db")
    assert redactor.redact({"api_key": {"b": 1, "a": [2]}}) == {"api_key": fingerprint(b'{"a":[2],"b":1}')}


def test_fingerprint_answers_did_the_secret_change() -> None:
    redactor = Redactor(KEY)
    first = redactor.redact({"password": "one"})["password"]
    assert redactor.redact({"db_password": "one"})["db_password"] == first
    assert redactor.redact({"password": "two"})["password"] != first
    assert Redactor(KEY + b"!").redact({"password": "one"})["password"] != first


@pytest.mark.parametrize("key", [b"", b"short", "a text key of enough length"])
def test_weak_or_wrong_key_is_refused(key: Any) -> None:
    with pytest.raises(ConfigError):
        Redactor(key)


def test_tuples_become_lists_and_non_json_values_are_left_for_validation() -> None:
    marker = object()
    redacted = Redactor().redact({"t": (1, ("a",)), "s": {1, 2}, "b": b"raw", "o": marker, "f": math.inf})
    assert redacted["t"] == [1, ["a"]]
    assert redacted["s"] == {1, 2} and redacted["b"] == b"raw" and redacted["o"] is marker
    with pytest.raises(InvalidEvent) as caught:
        to_json_text("before", {"s": redacted["s"]})
    assert caught.value.field == "before"
    with pytest.raises(InvalidEvent):
        to_json_text("after", {"f": redacted["f"]})


def test_deep_nesting_does_not_crash_and_is_refused_by_validation() -> None:
    deep_list: Any = "password=hunter2"
    deep_dict: Any = {"password": "hunter2"}
    for _ in range(10_000):
        deep_list = [deep_list]
        deep_dict = {"a": deep_dict}
    for value in (deep_list, deep_dict):
        redacted = Redactor().redact(value)
        assert "hunter2" not in json.dumps(redacted)
        with pytest.raises(InvalidEvent, match="deeper"):
            to_json_text("before", redacted)


def test_node_just_beyond_the_depth_limit_becomes_the_marker() -> None:
    value: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH):
        value = [value]
    redacted = Redactor().redact(value)
    for _ in range(MAX_JSON_DEPTH):
        redacted = redacted[0]
    assert redacted == TOO_DEEP


def test_within_the_depth_limit_everything_is_kept() -> None:
    value: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):
        value = [value]
    assert Redactor().redact(value) == value
    to_json_text("after", value)


def test_cycles_terminate() -> None:
    cyclic: dict[str, Any] = {"password": "x"}
    cyclic["self"] = cyclic
    redacted = Redactor().redact(cyclic)
    assert redacted["password"] == REDACTED


def test_huge_strings_are_handled() -> None:
    text = ("a=b " * 50_000) + "password=hunter2 " + ("x" * 100_000)
    assert "hunter2" not in Redactor().redact_text(text)


# ---- properties -------------------------------------------------------------------------

SNIPPETS = st.sampled_from(
    [
        "password",
        "token",
        "=",
        ":",
        ": ",
        "'",
        '"',
        "\\",
        " ",
        "\n",
        "://",
        "@",
        "u:p@h",
        "Bearer ",
        "Basic ",
        "eyJ",
        "eyJabcdefgh.xyz.",
        ".",
        "AKIA",
        "[REDACTED]",
        "{",
        "}",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "ghp_",
        "&",
        ";",
        "Authorization",
        "postgres",
        "abc123XYZ",
        "true",
        "null",
        ",",
    ]
)
TEXT = st.one_of(st.text(max_size=40), st.lists(SNIPPETS, max_size=12).map("".join))
KEYS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["password", "token", "api_key", "user", "note", "max_tokens", "Cookie", "auth"]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=30,
)
SECRET = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=20, max_size=40)
B64URL = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=20, max_size=60)


@settings(max_examples=300)
@given(JSON_VALUES, st.booleans())
def test_redact_never_raises_and_is_idempotent(value: Any, keyed: bool) -> None:
    redactor = Redactor(KEY if keyed else None)
    once = redactor.redact(value)
    assert redactor.redact(once) == once
    json.dumps(once)


@settings(max_examples=300)
@given(TEXT)
def test_redact_text_is_idempotent(text: str) -> None:
    redactor = Redactor(KEY)
    once = redactor.redact_text(text)
    assert redactor.redact_text(once) == once


@st.composite
def planted(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON-like value with one secret planted at a random depth, and the secret."""
    secret = draw(SECRET)
    kind = draw(st.sampled_from(["key", "jwt", "dsn", "bearer"]))
    around = draw(st.text(max_size=20)), draw(st.text(max_size=20))
    if kind == "key":
        node: Any = {draw(st.sampled_from(["password", "db_password", "apiKey"])): secret}
    elif kind == "jwt":
        jwt = f"eyJ{draw(B64URL)}.eyJ{draw(B64URL)}.{secret}"
        node = f"{around[0]} {jwt} {around[1]}"
    elif kind == "dsn":
        node = f"{around[0]} postgres://u:{secret}@h/db {around[1]}"
    else:
        node = f"{around[0]} Authorization: Bearer {secret}"
    for _ in range(draw(st.integers(0, 12))):
        siblings = draw(st.lists(JSON_VALUES, max_size=2))
        if draw(st.booleans()):
            node = [*siblings, node]
        else:
            node = {**{f"k{i}": s for i, s in enumerate(siblings)}, draw(KEYS): node}
    return node, secret


@settings(max_examples=300)
@given(planted(), st.booleans())
def test_planted_secret_never_survives(case: tuple[Any, str], keyed: bool) -> None:
    value, secret = case
    assume(json.dumps(value, ensure_ascii=False).count(secret) == 1)  # planted once only
    redacted = Redactor(KEY if keyed else None).redact(value)
    assert secret not in json.dumps(redacted, ensure_ascii=False)


def test_command_line_flags_and_name_value_pairs_are_redacted() -> None:
    redactor = Redactor()
    redacted = redactor.redact(
        {
            "args": ["--db-password=hunter2", "-token=abc123def", "--replicas=3"],
            "env": [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "debug"}],
        }
    )
    text = json.dumps(redacted)
    assert "hunter2" not in text and "abc123def" not in text
    assert "--replicas=3" in text and '"debug"' in text


def _every_rule(redactor: Redactor, text: str) -> str:
    """The value-shape rules applied one after the other, each on the whole text."""
    marker = redactor.marker
    text = redact_module._PEM.sub(lambda m: marker(m.group(0)), text)
    text = redact_module._URL_CREDENTIALS.sub(redactor._url_password, text)
    text = redactor._redact_pairs(text)
    text = redactor._redact_flag_words(text)
    text = redact_module._JWT.sub(lambda m: marker(m.group(0)), text)
    text = redact_module._AUTH_SCHEME.sub(redactor._scheme_credential, text)
    return redact_module._TOKEN_SHAPES.sub(lambda m: marker(m.group(0)), text)


#: Pieces of every rule's matches, and what comes near them, to build texts from.
_PIECES = st.sampled_from(
    [
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "PRIVATE KEY",
        "postgresql://u:",
        "://",
        "@",
        "=",
        ":",
        ": ",
        "password",
        "db_password",
        "token",
        "apiKey",
        "Authorization",
        " ",
        "\t",
        "\n",
        "\x1c",
        "\xa0",
        "\u2003",
        "-",
        "--",
        "--password",
        "-token",
        '"',
        "'",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9",
        ".",
        "Bearer",
        "BASIC",
        "baſic",
        "AKIA",
        "ASIA",
        "ghp_",
        "github_pat_",
        "xoxb-",
        "AIza",
        "sk_live_",
        "rk_test_",
        "[REDACTED]",
        "tokenizer",
        # whole matches of each rule
        PEM,
        JWT,
        " postgres://u:pw1@h/db",
        " Authorization: Bearer abcdefgh1234",
        " Basic dXNlcjpwYXNzd29yZA==",
        " --password hunter2",
        " token=abc123",
        ' "secret": "s3cr3t"',
        " AKIA" + "ABCDEFGHIJ012345",
        " ghp_" + "a1" * 18,
        " github_pat_" + "b2" * 11,
        " xoxb-" + "123456789012",
        " AIza" + "c" * 35,
        " sk_live_" + "d4" * 6,
    ]
)
_WORDS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+/=", max_size=40)
_SHAPED_TEXT = st.lists(_PIECES | _WORDS | st.text(max_size=6), max_size=12).map("".join)


@settings(max_examples=1000)
@given(_SHAPED_TEXT, st.booleans())
def test_skipping_rules_that_cannot_match_changes_nothing(text: str, keyed: bool) -> None:
    """redact_text runs a rule only when the text holds what its matches contain: the same
    result as running every rule on every text."""
    redactor = Redactor(KEY if keyed else None)
    assert redactor.redact_text(text) == _every_rule(redactor, text)


@settings(max_examples=300)
@given(JSON_VALUES, st.booleans())
def test_string_and_scalar_roots_redact_as_inside_a_container(value: Any, keyed: bool) -> None:
    """The shortcut for a root that is a string or a scalar gives what the walk gives."""
    redactor = Redactor(KEY if keyed else None)
    assert redactor.redact([value]) == [redactor.redact(value)]


def test_a_str_subclass_comes_back_as_a_plain_str() -> None:
    class Text(str):
        pass

    redactor = Redactor(KEY)
    for redacted in (redactor.redact_text(Text("plain words")), redactor.redact(Text("plain words"))):
        assert type(redacted) is str and redacted == "plain words"


def test_the_token_shape_hints_are_the_ones_redact_text_tests() -> None:
    """One token of each shape, after innocent text, is found: redact_text tests every hint."""
    samples = {
        "gh": "ghs_" + "x" * 36,
        "github_pat_": "github_pat_" + "y" * 22,
        "AKIA": "AKIA" + "Q" * 16,
        "ASIA": "ASIA" + "Q" * 16,
        "xox": "xoxp-" + "1" * 12,
        "AIza": "AIza" + "z" * 35,
        "k_live_": "rk_live_" + "9" * 12,
        "k_test_": "sk_test_" + "9" * 12,
    }
    assert set(samples) == set(redact_module._TOKEN_PREFIXES)
    for sample in samples.values():
        assert Redactor().redact_text(f"note {sample}") == f"note {REDACTED}"
