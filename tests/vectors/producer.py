"""Builds the producer vectors (``schemas/vectors/producer-v1.json``): what a conforming
producer in any language does to an event before it leaves the process.

Run ``python -m tests.vectors.producer > schemas/vectors/producer-v1.json`` only when the
rules change on purpose. The expected outputs are the reference producer's
(``producers/redact.py``, ``mask.py``, ``pseudonym.py``, ``trace.py``, ``schemas/codec.py``);
tests/unit/schemas/test_producer_vectors.py checks that the committed file is what this module
writes and that the Python producer passes every case, and the Java producer
(``examples/java-producer``) runs the same file in its own tests. docs/PRODUCERS.md says what
each section means.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from baldur_audit.producers.mask import mask_client_ip
from baldur_audit.producers.pseudonym import pseudonym
from baldur_audit.producers.redact import Redactor, is_sensitive_key
from baldur_audit.producers.trace import parse_traceparent
from baldur_audit.schemas.codec import CURRENT_SCHEMA, encode_event
from baldur_audit.schemas.errors import InvalidEvent
from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

#: The redaction and pseudonym keys of the vectors (public test keys, never for real use).
REDACTION_KEY = b"baldur-audit producer vector redaction key"
PSEUDONYM_KEY = bytes(range(32))

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAs3cr3tK3y\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----"
)

SENSITIVE = [
    "password", "Password", "db_password", "DB-PASSWORD", "passwd", "pwd", "passphrase", "secret",
    "client_secret", "AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "secret_key", "token",
    "refreshToken", "access_token", "GITHUB_TOKEN", "apikey", "api_key", "api-key", "X-Api-Key",
    "privateKey", "private_key", "credential", "credentials", "authorization",
    "Proxy-Authorization", "auth", "basic_auth", "cookie", "Set-Cookie", "session", "sessionid",
    "session_id", "session key", "signature", "webhook.signature", "encryption_key", "signingKey",
    "master_key", "hmac_key", "shared-key", "ssh_key", "pass", "pw", "jwt", "bearer",
    "passwordHash", "tokenizer_api_key", "auth_header", "authKey", "auth_value", "authString",
    "proxy_auth", "PASSWORD", "Pass.Word", "x-auth", "a b c password",
]  # fmt: skip
INNOCENT = [
    "username", "user", "host", "port", "author", "authority", "key", "keys", "value",
    "tokenizer_model", "tokenizer", "tokenization", "max_tokens", "max_output_tokens",
    "prompt_tokens", "completion_tokens", "total_tokens", "token_ttl", "token_url", "tokenType",
    "token_expires_in", "password_min_length", "password_policy", "passwordRotation",
    "secret_name", "secretRef", "secret_version", "secret_path", "session_timeout", "cookie_name",
    "credentials_file", "signature_algorithm", "passport", "compass", "bypass_cache", "auth_type",
    "authn_provider", "oauth_enabled", "auth_endpoint", "token_enabled", "", "authors",
]  # fmt: skip

TEXTS = [
    ("postgresql://user:pass@host/db", "password in URL user-info"),
    ("postgres://u:p@ss@host:5432/db?x=1", "user-info up to the last '@' before the path"),
    ("redis://:s3cret@cache:6379/0", "user-info with an empty user"),
    ("see https://example.com:8443/path?q=1 ok", "a port is no password"),
    ("host=db port=5432 password=y user=z", "a DSN pair"),
    ("host=db password='a b' user=z", "a quoted DSN value"),
    ("Server=x;User Id=u;Password=p4ss;", "an ADO connection string"),
    ("https://api.example.com/v1?api_key=abc123&page=2", "a query-string pair"),
    ("Authorization: Bearer abc.def-123", "a header: the scheme word is kept"),
    ("curl -H 'Authorization: Basic dXNlcjpwYXNz' https://x", "a header inside single quotes"),
    ("Cookie: theme=dark; session=abc123", "a header whose value runs to the end of the line"),
    ("sent Bearer abcdEFGH1234 upstream", "a bearer credential in prose"),
    ("header basic dXNlcjpwYXNz", "a basic credential, lower-case scheme"),
    ("basic configuration; Bearer token rotation", "scheme words followed by prose"),
    (f"jwt {JWT} end", "a JWT"),
    (f"{PEM}\nafter", "a PEM private key block"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk", "an unterminated PEM block: to the end"),
    ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "a certificate is public"),
    ("id AKIAIOSFODNN7EXAMPLE!", "an AWS access key id"),
    ("ASIAY34FZKBOKMUTVV7A", "an AWS temporary access key id"),
    ("ghp_" + "a1B2" * 9, "a GitHub token"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "a GitHub fine-grained token"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "a Slack token"),
    ("key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "a Google API key"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe key"),
    ('{"password": "hun\\"ter2", "user": "bob", "pin": 1234}', "JSON text: a quoted value with an escape"),
    ('{"api_key":12345,"token":null}', "JSON text: a number is quoted as a marker, null is kept"),
    ("{'secret': 'x', 'n': 1}", "a Python repr"),
    ("password: my long pass phrase\nnext: line", "YAML: to the end of the line"),
    ("rotated the password for alice", "the word password in prose"),
    ("nothing to see", "nothing"),
    ("mysql --password hunter2 db", "a command-line flag and its word"),
    ("run --db-password=hunter2 --replicas=3", "a flag with '='"),
    ("run -token abc123def --verbose", "a single-dash flag"),
    ("run --password --verbose", "a flag followed by another flag"),
    ("already [REDACTED] here: password=[REDACTED]", "markers are kept"),
    ("PASSWORD=x\nPATH=/bin", "an environment file"),
    ("export API_KEY='k-123'", "a shell assignment"),
    ("url=https://u:pw@h/x token=abc", "several rules in one text"),
    ("", "empty text"),
    ("caf\u00e9 password=s\u00e9cr\u00e8t fin", "non-ASCII text"),
]

VALUES: list[tuple[Any, str]] = [
    (
        {
            "password": "hunter2",
            "api_key": 12345,
            "credentials": {"user": "u", "pw": "p"},
            "tokens": ["a", "b"],
        },
        "values under sensitive keys are replaced whole, whatever their type",
    ),
    ({"user": "alice", "port": 5432, "ratio": 0.5}, "values under innocent keys are kept"),
    ({"password_authentication": False, "token": None, "cookie_secure": True}, "booleans and null are kept"),
    ({"a": [{"b": {"c": [{"DB_PASSWORD": "x", "ok": "y"}]}}]}, "sensitive keys at any depth"),
    ({JWT: 1}, "keys themselves are kept"),
    ({"note": "postgresql://u:pw@h/db"}, "text rules apply to strings under innocent keys"),
    (["x", ["Authorization: Bearer abcdEFGH1234"]], "text rules apply inside lists"),
    (["--db-password=hunter2", "-token=abc123def", "--replicas=3"], "flags with '=' in a list"),
    (["--password", "hunter2", "--user", "bob"], "the list item after a sensitive flag"),
    (["--password", "--verbose", "x"], "a flag after a sensitive flag is kept"),
    (["-p", "hunter2"], "-p is not a sensitive flag name"),
    (
        [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "debug"}],
        "a name/value object whose name is sensitive",
    ),
    ({"key": "X-Api-Key", "val": "k-123", "other": "kept"}, "key/val naming a sensitive header"),
    ({"header": "Authorization", "data": "Basic abc"}, "header/data"),
    ({"password": "[REDACTED]"}, "an existing marker is kept"),
    ({"password": ""}, "an empty secret is still replaced"),
    ({"password": ["a", {"b": 1}]}, "a structure under a sensitive key"),
    ([[[[["password=hunter2"]]]]], "text rules at depth"),
    ({}, "an empty object"),
    ([], "an empty list"),
    ("password=hunter2", "a bare string"),
    (42, "a number"),
]


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


DEPTH_VALUES: list[tuple[Any, str]] = [
    (_deep(64, "leaf"), "a string at depth 64 is kept"),
    (_deep(65, "leaf"), "a node at depth 65 becomes [REDACTED:too-deep]"),
    (_deep(65, {"password": "x"}), "an object at depth 65 becomes [REDACTED:too-deep]"),
]

KEYED: list[tuple[Any, str]] = [
    ({"password": "hunter2"}, "a string secret: HMAC over its UTF-8 bytes"),
    ({"password": "p\u00e4ss\U0001f600"}, "a non-ASCII string secret"),
    ({"api_key": 12345}, "a number: HMAC over its compact JSON (12345)"),
    ({"api_key": -7}, "a negative number"),
    ({"api_key": 0.5}, "a fraction: HMAC over 0.5"),
    ({"api_key": 1e16}, "a large float: HMAC over 1e+16 (the shortest round-trip spelling)"),
    ({"api_key": 100.0}, "a float with no fraction: HMAC over 100.0"),
    ({"api_key": {"b": 1, "a": [2, "x"]}}, "an object: HMAC over compact JSON, keys sorted"),
    ({"api_key": {"é": "ü", "z": None, "t": True}}, "non-ASCII kept as UTF-8, null and true"),
    ({"api_key": ['q"uote', "back\\slash", "\n"]}, "escapes in the canonical JSON"),
    ({"password": False}, "booleans are kept, not fingerprinted"),
    ({"password": "[REDACTED:hmac-sha256:0123456789abcdef]"}, "a fingerprint marker is kept"),
    ("postgresql://u:pw@h/db", "a text rule: the password's fingerprint"),
    ("Authorization: Bearer abcdEFGH1234", "the credential after the scheme word"),
    (f"{PEM}", "a PEM block: the whole block's fingerprint"),
    ('{"password": "hunter2"}', "JSON text: the quoted value's fingerprint"),
]

IPS: list[tuple[Any, str]] = [
    ("192.168.1.2", "IPv4 keeps two octets"),
    ("10.0.0.255", "IPv4"),
    ("0.0.0.1", "IPv4 starting with 0"),
    (" 8.8.4.4\t", "spaces and tabs around are stripped"),
    ("1.2.3.4:8080", "IPv4 with a port"),
    ("1.2.3.4:65535", "the largest port"),
    ("1.2.3.4:0", "port 0 is refused"),
    ("1.2.3.4:65536", "port 65536 is refused"),
    ("1.2.3.4:http", "a port name is refused"),
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "IPv6 keeps 48 bits as a /48 network"),
    ("2001:DB8:85A3::1", "upper-case IPv6"),
    ("2001:db8::1", "IPv6 with zeros compressed"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "IPv6 with leading zeros in groups"),
    ("::1", "loopback"),
    ("::", "the unspecified address"),
    ("[::1]:443", "bracketed with a port"),
    ("[2001:db8:85a3::7]", "bracketed without a port"),
    ("0:0:0:0:0:0:0:1", "uncompressed loopback"),
    ("1:0:0:2::", "a trailing ::"),
    ("2001:db8:0:1::", "the /48 network written in RFC 5952 form"),
    ("::ffff:10.1.2.3", "IPv4-mapped: masked as its IPv4"),
    ("::FFFF:10.1.2.3", "IPv4-mapped in upper case"),
    ("[::ffff:192.0.2.128]:80", "IPv4-mapped bracketed with a port"),
    ("::ffff:a01:203", "IPv4-mapped in hex groups"),
    ("::10.1.2.3", "IPv4-compatible (deprecated): an IPv6 /48, not an IPv4"),
    ("64:ff9b::10.1.2.3", "NAT64: an IPv6 /48"),
    ("2002:c0a8:0107::1", "6to4 carries 192.168.1.7: masked as that IPv4"),
    ("2002:c0a8:107:1:2:3:4:5", "6to4 with a subnet"),
    ("2002::1", "6to4 of 0.0.0.0"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo: an IPv6 /48"),
    ("fe80::1ff:fe23:4567:890a%eth0", "a zone id is dropped"),
    ("[fe80::1%25eth0]:8443", "a zone id in brackets (percent-encoded)"),
    ("10.1.***.***", "already masked IPv4 is kept"),
    ("2001:db8:85a3::/48", "an already masked /48 is kept"),
    ("2002:c0a8:107::/48", "a 6to4 /48 is masked as its IPv4"),
    ("2001:db8::/64", "another prefix length is refused"),
    ("2001:db8::1/48", "a /48 with host bits is refused"),
    ("300.1.***.***", "a masked form with an octet above 255"),
    ("01.2.***.***", "a masked form with a leading zero"),
    ("", "empty"),
    (" ", "only a space"),
    ("localhost", "a host name"),
    ("1.2.3", "three octets"),
    ("1.2.3.4.5", "five octets"),
    ("256.1.1.1", "an octet above 255"),
    ("01.2.3.4", "a leading zero in an octet"),
    ("1.2.3.04", "a leading zero in the last octet"),
    ("0x1.2.3.4", "hex octets"),
    ("1.2.3.4/32", "a prefix on IPv4"),
    ("[1.2.3.4]:80", "IPv4 in brackets"),
    ("[1.2.3.4]:80x", "garbage after the port"),
    ("::1:80:", "a trailing single colon"),
    ("1::2::3", "two ::"),
    ("1:2:3:4:5:6:7:8:9", "nine groups"),
    ("1:2:3:4:5:6:7", "seven groups without ::"),
    ("1:2:3:4:5:6:7::", ":: standing for one group"),
    ("12345::1", "a group of five digits"),
    ("g::1", "a non-hex group"),
    ("[::1", "an unclosed bracket"),
    ("::ffff:1.2.3", "a short embedded IPv4"),
    ("::ffff:1.2.3.4.5", "a long embedded IPv4"),
    ("1.2.3.4::", "IPv4 before ::"),
    ("\uff11.\uff12.\uff13.\uff14", "full-width digits"),
    ("1.2.3.4\x00", "a NUL"),
    ("1.2.3.4\n", "a newline"),
    ("\u202e1.2.3.4", "a bidi control"),
    ("9" * 65, "longer than 64 characters"),
    ("1.2.3.4 5.6.7.8", "two addresses separated by a space"),
    ("<script>", "markup"),
    ("<invalid-ip>", "the marker itself"),
    ("203.0.113.7, 70.41.3.18, 150.172.238.178", "an X-Forwarded-For list"),
    ("203.0.113.7,2001:db8::1", "a list without spaces"),
    ("203.0.113.7, unknown, ", "unknown and empty elements"),
    (",", "two empty elements"),
    (["1.2.3.4", "[::1]:443"], "a JSON list"),
    (["1.2.3.4", None, 5], "non-string list items"),
    ([], "an empty list"),
    (None, "null stays null"),
    (", ".join(["10.0.0.1"] * 33), "33 elements: 32 are read, then <truncated>"),
    (", ".join(["10.0.0.1"] * 32), "32 elements: more than 256 characters, so bounded, then <truncated>"),
    (", ".join(["10.0.0.1"] * 17), "17 elements: 254 characters, all kept"),
    (["ffff:ffff:ffff::1"] * 32, "long IPv6 elements: bounded to 256 characters with <truncated>"),
    ("1.2.3.4" + "\x00" * 1000 + ",", "a hostile element and an empty one"),
]

PSEUDONYMS = ["alice", "Alice", "alice ", "j\u00fcrgen", "\U0001f600", "svc:deployer@prod"]

TRACEPARENTS: list[tuple[str, str]] = [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "the W3C example"),
    (" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t", "spaces and tabs around"),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "a later version may add fields"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "version 00 may not"),
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff is invalid"),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "an all-zero trace id"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "an all-zero parent id"),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "upper-case hex"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "no flags"),
]


def _redacted(redactor: Redactor, value: Any) -> Any:
    return redactor.redact(value)


def _masked(value: Any) -> Any:
    return mask_client_ip(value)


def _trace(text: str) -> str | None:
    try:
        return parse_traceparent(text)
    except InvalidEvent:
        return None


EVENTS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "event_id": "019ad0c2-5e00-7abc-8def-0123456789ab",
            "occurred_at_us": 1_764_417_599_123_456,
            "actor": "alice",
            "actor_type": "user",
            "action": "update",
            "target": "payments.timeout_ms",
            "before": '{"timeout_ms":1000}',
            "after": '{"timeout_ms":2500}',
            "reason": None,
            "source": "api",
            "trace_id": None,
            "client_ip": None,
            "attributes": [],
        },
        "the minimal event: optional fields null, no attributes",
    ),
    (
        {
            "event_id": "019ad0c2-5e00-7abc-8def-0123456789ab",
            "occurred_at_us": 1_764_417_599_123_456,
            "actor": "deployer",
            "actor_type": "service",
            "action": "restart",
            "target": "pods/payments-7f9c",
            "before": None,
            "after": '{"replicas":3}',
            "reason": "p99 latency \u2192 SLO",
            "source": "framework",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "client_ip": "10.1.***.***",
            "attributes": [["service", "payments"], ["r\u00e9gion", "eu-west-1"]],
        },
        "every field set; attributes in this order; non-ASCII text",
    ),
    (
        {
            "event_id": "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "occurred_at_us": -1,
            "actor": "healer",
            "actor_type": "system",
            "action": "trip",
            "target": "x",
            "before": "null",
            "after": "[]",
            "reason": "",
            "source": "scheduler",
            "trace_id": None,
            "client_ip": None,
            "attributes": [["k", ""]],
        },
        "a time before 1970 (negative µs), the JSON text null, an empty reason",
    ),
]


def _encoded(fields: dict[str, Any]) -> str:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    event = ChangeEvent(
        event_id=uuid.UUID(fields["event_id"]),
        occurred_at=epoch + timedelta(microseconds=fields["occurred_at_us"]),
        actor=Actor(fields["actor"], fields["actor_type"]),
        action=fields["action"],
        target=fields["target"],
        source=fields["source"],
        before=fields["before"],
        after=fields["after"],
        reason=fields["reason"],
        trace_id=fields["trace_id"],
        client_ip=fields["client_ip"],
        attributes=dict(fields["attributes"]),
    )
    return encode_event(event).hex()


def build() -> dict[str, Any]:
    """The vectors document."""
    plain, keyed = Redactor(), Redactor(REDACTION_KEY)
    return {
        "spec": "baldur-audit producer rules v1 (docs/PRODUCERS.md)",
        "how_to_use": (
            "Every section lists inputs and the output a conforming producer computes. JSON "
            "values are given as JSON. redact_* apply the redaction rules without a key (the "
            "marker [REDACTED]); redact_keyed applies them with redaction_key_hex. mask_client_ip "
            "takes a string, a list or null. pseudonyms use pseudonym_key_hex. traceparents give "
            "the trace id a producer takes from a W3C traceparent, or null when it must refuse "
            "it. encodings give the exact single-object encoding of events whose fields are "
            "final (already redacted, masked and validated). uuid7 gives UUIDv7 from a time and "
            "10 random bytes."
        ),
        "sensitive_keys": [{"key": key, "sensitive": is_sensitive_key(key)} for key in SENSITIVE + INNOCENT],
        "redact_text": [
            {"description": why, "text": text, "expected": plain.redact_text(text)} for text, why in TEXTS
        ],
        "redact_value": [
            {"description": why, "value": value, "expected": _redacted(plain, value)}
            for value, why in VALUES + DEPTH_VALUES
        ],
        "redaction_key_hex": REDACTION_KEY.hex(),
        "redact_keyed": [
            {"description": why, "value": value, "expected": _redacted(keyed, value)} for value, why in KEYED
        ],
        "mask_client_ip": [{"description": why, "input": raw, "expected": _masked(raw)} for raw, why in IPS],
        "pseudonym_key_hex": PSEUDONYM_KEY.hex(),
        "pseudonyms": [
            {"actor_id": actor, "expected": pseudonym(PSEUDONYM_KEY, actor)} for actor in PSEUDONYMS
        ],
        "traceparents": [
            {"description": why, "traceparent": text, "trace_id": _trace(text)} for text, why in TRACEPARENTS
        ],
        "schema_fingerprint_hex": CURRENT_SCHEMA.fingerprint.hex(),
        "encodings": [
            {"description": why, "event": fields, "value_hex": _encoded(fields)} for fields, why in EVENTS
        ],
        "uuid7": [
            {
                "unix_ms": unix_ms,
                "random_hex": random.hex(),
                "expected": str(uuid7(unix_ms, random)),
            }
            for unix_ms, random in (
                (1_764_417_600_000, bytes(range(10))),
                (0, b"\xff" * 10),
                (2**48 - 1, bytes(10)),
            )
        ],
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
