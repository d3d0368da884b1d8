"""Redaction of secrets in event values, before an event is encoded.

Secrets never leave the producing process (design invariant 6): ``before``, ``after``,
``reason`` and attribute values pass through :class:`Redactor` first. Two rules apply.

**By key name.** A dict key (or attribute key) is normalized — lowercased, with ``-``,
``_``, ``.`` and spaces removed — and is *sensitive* if it contains one of
:data:`SENSITIVE_WORDS` (``db_password``, ``AWS_SECRET_ACCESS_KEY``, ``refreshToken``),
ends in ``auth`` (or ``auth_header``, ``authKey``...), or is one of :data:`SENSITIVE_KEYS`
(``session``, ``pass``, ...); but not when it ends in a descriptor (``token_ttl``,
``password_min_length``, ``secret_name``, ``token_url``: see ``_DESCRIPTOR``) or only
names LLM token counts or tokenizers (``max_tokens``, ``tokenizer_model``). The whole
value under a sensitive key (a string, number, list or dict) is replaced; booleans and
``None`` are kept, since one bit cannot be a secret and switches like
``password_authentication: false`` are what an audit is for.
Dict keys themselves are kept as they are.

**By value shape**, in every string at any depth (also under innocent keys and in lists):
PEM private-key blocks; passwords in URL user-info (``postgresql://u:pw@h/db``);
``key=value`` / ``key: value`` / ``"key": "value"`` pairs inside text (DSNs like
``host=x password=y``, query strings, headers, JSON text) whose key is sensitive — a
``Bearer``/``Basic`` scheme word is kept, the credential after it replaced; JWTs;
``Bearer``/``Basic`` credentials; AWS access key ids, GitHub, Slack, Google API and Stripe
keys. Strings are not parsed as JSON: a secret object nested inside JSON *text* is only
caught by the pair and shape rules.

A redacted value becomes ``[REDACTED]``; with a redaction key it becomes
``[REDACTED:hmac-sha256:<16 hex>]``, the first 16 hex digits of
HMAC-SHA256(key, ``b"baldur-audit/redaction/v1"`` + the secret's canonical bytes: UTF-8 for
text, compact sorted JSON otherwise), so "did the secret change?" can be answered without
storing it. Existing markers are kept, so redaction is idempotent.

**In argument lists.** In a list, the item after a command-line flag whose name is
sensitive (``["--password", "hunter2"]``, ``["-token", "..."]``) is replaced whole, unless
it is itself a ``--flag``; so is the second item of a two-item *tuple* whose first item is a
sensitive name (a header as an ``("X-Api-Key", "...")`` pair; a JSON-like list of two words
is left to the other rules). In text, the word after such a flag
(``mysql --password hunter2 db``) is replaced.

Structure: dicts (any ``Mapping``), lists and tuples (which become lists) are walked
iteratively, so no nesting depth raises ``RecursionError``. A node deeper than
``MAX_JSON_DEPTH`` is replaced by ``[REDACTED:too-deep]``: nothing unredacted is returned,
and the event validation still refuses the value as too deep. The walk is bounded: once the
nodes and string characters seen exceed what any event field can hold (``MAX_JSON_BYTES``;
strings count at their length before redaction), it stops and returns
:data:`~baldur_audit.schemas.event.OVERSIZED`, which validation refuses as too large — so a
structure that shares itself (``x = [x, x]``) or a string of megabytes costs little.
Other values (sets, bytes, objects, NaN) are returned unchanged for
:func:`~baldur_audit.schemas.event.to_json_text` to refuse with
:class:`~baldur_audit.schemas.errors.InvalidEvent` naming the field.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.event import MAX_JSON_BYTES, MAX_JSON_DEPTH, OVERSIZED

REDACTED = "[REDACTED]"
TOO_DEEP = "[REDACTED:too-deep]"
MIN_KEY_BYTES = 16
_DOMAIN = b"baldur-audit/redaction/v1"
_MARKER = re.compile(r"\[REDACTED(?::hmac-sha256:[0-9a-f]{16}|:too-deep)?\]")

SENSITIVE_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "credential",
    "authoriz",
    "cookie",
    "sessionid",
    "sessionkey",
    "accesskey",
    "signature",
    "encryptionkey",
    "signingkey",
    "masterkey",
    "hmackey",
    "sharedkey",
    "sshkey",
)
SENSITIVE_KEYS = frozenset({"auth", "session", "pass", "pw", "jwt", "bearer"})
_SENSITIVE = re.compile("|".join(SENSITIVE_WORDS) + "|auth(?:header|key|value|string)?$")
_DESCRIPTOR = re.compile(
    r"(?:ttl|timeout|expiry|expiration|expires|expiresin|expiresat|lifetime|maxage|length"
    r"|policy|rotation|algorithm|count|limit|type|name|path|file|ref|version|enabled"
    r"|required|headername|url|uri|endpoint)$"
)
_INNOCENT = re.compile(
    r"tokeniz(?:ers?|ation|ed|e)?"
    r"|^(?:max|min|num|total|input|output|prompt|completion)[a-z]*tokens?$"
)
_NORMALIZE = str.maketrans("", "", "-_. ")
#: In an object naming a setting ({"name": ..., "value": ...}), the keys that hold the name and
#: the keys whose value is redacted when that name is sensitive.
_NAME_KEYS = ("name", "key", "header", "variable")
_VALUE_KEYS = frozenset({"value", "val", "secret", "data"})

_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r".*?(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@\[\]]*:)([^\s/?#]+)@"
)
# A key may follow '-' or '--' (command-line flags such as --db-password=...).
_KEY_SEPARATOR = re.compile(
    r"(?<![A-Za-z0-9_.])([A-Za-z][A-Za-z0-9_.-]*)([\"']?)"
    r"[ \t]*([:=])[ \t]*"
)
_SCHEME = re.compile(r"(?i:bearer|basic|digest|negotiate|ntlm|token)[ \t]+")
_BARE_END = {
    "json": re.compile(r"[\s,}\]]"),  # after a quoted key: JSON text or a Python repr
    "=": re.compile(r"[\s&;\"']"),  # DSNs, query strings, environment lines, cookies
    ":": re.compile(r"[\r\n]"),  # YAML, headers, log lines: the rest of the line
}
_LITERALS = frozenset({"true", "false", "null", "True", "False", "None"})
#: Values copied as they are, without a visit: nothing in them can be a secret.
_ATOMS = frozenset({int, float, bool, type(None)})
#: A command-line flag as one list item: ``--db-password``, ``-token``.
_FLAG = re.compile(r"--?([A-Za-z][A-Za-z0-9_.-]{0,127})")
#: A flag and the word after it inside text: ``mysql --password hunter2 db``.
_FLAG_WORD = re.compile(r"(?<![^\s\"'])--?([A-Za-z][A-Za-z0-9_.-]*)[ \t]+(?!--)(?=\S)")
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_AUTH_SCHEME = re.compile(r"(?i)(?<![A-Za-z0-9_-])(bearer|basic)([ \t]+)([A-Za-z0-9._~+/-]+=*)")
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,}"
    r"|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}"
    r"|(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}"
    r"|(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35,}"
    r"|(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}"
)
#: What every match of ``_TOKEN_SHAPES`` contains, one alternative after the other.
_TOKEN_PREFIXES = ("AKIA", "ASIA", "gh", "github_pat_", "xox", "AIza", "k_live_", "k_test_")


def is_sensitive_key(key: str) -> bool:
    """Whether values under ``key`` are redacted whole (the key-name rule above)."""
    # Keys repeat a lot; the cache holds only short ones so it stays small.
    return _classify_key(key) if len(key) <= 128 else _classify_key.__wrapped__(key)


@functools.lru_cache(maxsize=4096)
def _classify_key(key: str) -> bool:
    normalized = key.lower().translate(_NORMALIZE)
    if normalized in SENSITIVE_KEYS:
        return True
    normalized = _INNOCENT.sub("", normalized)
    return bool(_SENSITIVE.search(normalized)) and not _DESCRIPTOR.search(normalized)


def _looks_like_credential(word: str) -> bool:
    """Whether the word after ``Bearer``/``Basic`` is a credential rather than prose."""
    return len(word) >= 8 and (
        any(c.isdigit() or c in "._~+/=-" for c in word) or any(c.isupper() for c in word[1:])
    )


def _fits(value: Any, budget: int) -> bool:
    """Whether ``value`` has at most ``budget`` nodes and string characters in all."""
    stack = [value]
    while stack:
        node = stack.pop()
        budget -= 1 + (len(node) if isinstance(node, str) else 0)
        if isinstance(node, Mapping):
            children: Any = list(node.values())
            budget -= sum(len(key) for key in node if isinstance(key, str))
        elif isinstance(node, list | tuple):
            children = node
        else:
            children = ()
        if budget - len(children) < 0:
            return False
        stack.extend(children)
    return True


def _may_hold_flag(text: str) -> bool:
    """Whether ``text`` has a ``-`` where ``_FLAG_WORD`` can start: first, or after white
    space (``str.isspace`` is what ``\\s`` matches in a str pattern) or a quote."""
    index = text.find("-")
    while index >= 0:
        if index == 0 or text[index - 1].isspace() or text[index - 1] in "\"'":
            return True
        index = text.find("-", index + 1)
    return False


def _is_secret_flag(item: Any) -> bool:
    """Whether a list item is a command-line flag that takes a secret (``--password``)."""
    if not isinstance(item, str):
        return False
    flag = _FLAG.fullmatch(item)
    return flag is not None and is_sensitive_key(flag.group(1))


#: What ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
#: builds for every call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> bytes | None:
    """The bytes a fingerprint covers, or None when ``value`` has no stable form."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if not _fits(value, MAX_JSON_BYTES):  # json.dumps would expand a shared structure
        return None
    try:
        text = _CANONICAL_JSON.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return text.encode("utf-8", "surrogatepass")


class Redactor:
    """Replaces secrets in JSON-like values by a fixed marker or a keyed fingerprint."""

    def __init__(self, key: bytes | None = None) -> None:
        """Raises :class:`ConfigError` when ``key`` is shorter than :data:`MIN_KEY_BYTES`."""
        if key is not None and (not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES):
            raise ConfigError(f"redaction key: expected at least {MIN_KEY_BYTES} bytes")
        self._key = key
        # HMAC(key, domain || secret): the state after the domain is computed once and copied.
        self._keyed = None if key is None else hmac.new(key, _DOMAIN, hashlib.sha256)

    def marker(self, secret: Any) -> str:
        """The marker that replaces ``secret``: fixed, or fingerprinted with the key."""
        if self._keyed is None:
            return REDACTED
        canonical = _canonical(secret)
        if canonical is None:
            return REDACTED
        mac = self._keyed.copy()
        mac.update(canonical)
        return f"[REDACTED:hmac-sha256:{mac.hexdigest()[:16]}]"

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with secrets replaced (see the module docstring); never raises.

        Returns :data:`~baldur_audit.schemas.event.OVERSIZED` instead of a copy when
        ``value`` is larger than any event field can hold.
        """
        if type(value) is str:  # the walk below, for the commonest root
            return OVERSIZED if len(value) + 2 > MAX_JSON_BYTES else self.redact_text(value)
        if type(value) in _ATOMS:
            return value
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 1)]
        # What is left of the JSON text's size limit, counting the least text each node can
        # take: a scalar 1 byte (paid by its container, or here for the root), a string its
        # length and quotes, a container its brackets, commas, colons and quoted keys. Past
        # the limit validation refuses the value anyway, so the walk stops.
        budget = MAX_JSON_BYTES - 1
        while stack:
            node, parent, slot, depth = stack.pop()
            if depth > MAX_JSON_DEPTH:
                parent[slot] = TOO_DEEP
            elif isinstance(node, str):
                budget -= len(node) + 1
                if budget < 0:
                    return OVERSIZED
                parent[slot] = self.redact_text(node)
            elif isinstance(node, Mapping):
                budget -= 2 * len(node) + sum(len(key) + 3 for key in node if isinstance(key, str))
                if budget < 0:
                    return OVERSIZED
                copy: dict[Any, Any] = {}
                parent[slot] = copy
                # {"name": "DB_PASSWORD", "value": "..."}: Kubernetes env vars, headers lists.
                secret_value = False
                for name_key in _NAME_KEYS:
                    if isinstance(node.get(name_key), str):
                        secret_value = is_sensitive_key(node[name_key])
                        break
                for key, child in node.items():
                    sensitive = isinstance(key, str) and (
                        is_sensitive_key(key) or (secret_value and key in _VALUE_KEYS)
                    )
                    if sensitive:
                        copy[key] = self._replace(child)
                    elif type(child) in _ATOMS:
                        copy[key] = child
                    else:
                        copy[key] = None  # keeps the key order; filled when popped
                        stack.append((child, copy, key, depth + 1))
            elif isinstance(node, list | tuple):
                budget -= 2 * len(node)
                if budget < 0:
                    return OVERSIZED
                items: list[Any] = list(node)  # atoms stay; the rest is replaced below
                parent[slot] = items
                # ("Authorization", "Basic ...") as a pair; ["--password", "hunter2"] as argv.
                pair = (
                    isinstance(node, tuple)
                    and len(node) == 2
                    and isinstance(node[0], str)
                    and is_sensitive_key(node[0])
                )
                after_flag = False
                for index, child in enumerate(node):
                    is_text = isinstance(child, str)
                    if (after_flag and not (is_text and child.startswith("--"))) or (pair and index == 1):
                        items[index] = self._replace(child)
                    elif type(child) not in _ATOMS:
                        stack.append((child, items, index, depth + 1))
                    after_flag = is_text and child.startswith("-") and _is_secret_flag(child)
            else:
                parent[slot] = node
        return root[0]

    def _replace(self, secret: Any) -> Any:
        """The marker for a value under a sensitive name; booleans, None and markers are kept."""
        if secret is None or isinstance(secret, bool):
            return secret
        if isinstance(secret, str) and _MARKER.fullmatch(secret):
            return secret
        return self.marker(secret)

    def redact_text(self, text: str) -> str:
        """``text`` with every secret found by the value-shape rules replaced."""
        # The rules run in this order, each on the text the one before returned. A rule runs
        # only when the text holds what every match of it contains (substring tests, in C):
        # a rule that cannot match would return the text unchanged, so skipping it changes
        # nothing, and most strings in an event (names, ids, targets) skip them all.
        if type(text) is not str:
            text = str.__str__(text)  # a plain str, as re.sub returns for a subclass
        if "PRIVATE KEY" in text:
            text = _PEM.sub(lambda m: self.marker(m.group(0)), text)
        if "://" in text and "@" in text:
            text = _URL_CREDENTIALS.sub(self._url_password, text)
        if "=" in text or ":" in text:
            text = self._redact_pairs(text)
        spaced = " " in text or "\t" in text
        if spaced and _may_hold_flag(text):
            text = self._redact_flag_words(text)
        if "eyJ" in text:
            text = _JWT.sub(lambda m: self.marker(m.group(0)), text)
        if spaced:
            text = _AUTH_SCHEME.sub(self._scheme_credential, text)
        if (  # _TOKEN_PREFIXES, spelled out: faster than a loop
            "gh" in text
            or "github_pat_" in text
            or "AKIA" in text
            or "ASIA" in text
            or "xox" in text
            or "AIza" in text
            or "k_live_" in text
            or "k_test_" in text
        ):
            text = _TOKEN_SHAPES.sub(lambda m: self.marker(m.group(0)), text)
        return text

    def _url_password(self, match: re.Match[str]) -> str:
        password = match.group(2)
        if _MARKER.fullmatch(password):
            return match.group(0)
        return f"{match.group(1)}{self.marker(password)}@"

    def _scheme_credential(self, match: re.Match[str]) -> str:
        scheme, space, credential = match.groups()
        if not _looks_like_credential(credential):
            return match.group(0)
        return f"{scheme}{space}{self.marker(credential)}"

    def _redact_flag_words(self, text: str) -> str:
        """Replace the word after every ``--flag`` whose name is sensitive."""
        if "-" not in text:
            return text
        pieces: list[str] = []
        done = 0
        for match in _FLAG_WORD.finditer(text):
            if match.start() < done or not is_sensitive_key(match.group(1)):
                continue
            span = _secret_span(text, match.end(), "", "=", "")
            if span is None:
                continue
            begin, end, _ = span
            pieces.append(text[done:begin])
            pieces.append(self.marker(text[begin:end]))
            done = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)

    def _redact_pairs(self, text: str) -> str:
        """Replace the value of every ``key=value``-like pair whose key is sensitive."""
        if "=" not in text and ":" not in text:
            return text
        pieces: list[str] = []
        done = 0  # text[:done] is already in pieces
        for match in _KEY_SEPARATOR.finditer(text):
            if match.start() < done or not is_sensitive_key(match.group(1)):
                continue
            start = match.end()
            scheme = _SCHEME.match(text, start)
            if scheme:  # keep "Bearer " in "Authorization: Bearer <credential>"
                start = scheme.end()
            opener = text[match.start() - 1] if match.start() else ""
            span = _secret_span(
                text, start, match.group(2), match.group(3), opener if opener in ("'", '"') else ""
            )
            if span is None:
                continue
            begin, end, quote = span
            pieces.append(text[done:begin])
            pieces.append(f"{quote}{self.marker(text[begin:end])}{quote}")
            done = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)


def _secret_span(
    text: str, start: int, key_quote: str, separator: str, opener: str
) -> tuple[int, int, str] | None:
    """Where the secret of a pair starts and ends, and the quote to wrap its marker in.

    ``opener`` is a quote standing right before the key (``'Authorization: Basic x'``
    in a shell line): the value then also ends at that quote. None when there is
    nothing to redact: no value, an existing marker, or a JSON literal
    (``true``/``false``/``null``) after a quoted key.
    """
    if start >= len(text):
        return None
    quote = text[start]
    if quote in ("'", '"'):
        index = start + 1
        while index < len(text) and text[index] != quote:
            index += 2 if text[index] == "\\" else 1
        begin, end, wrap = start + 1, min(index, len(text)), ""
    else:
        stop = _BARE_END["json" if key_quote else separator].search(text, start)
        begin, end = start, stop.start() if stop else len(text)
        if opener and not key_quote:
            closing = text.find(opener, begin, end)
            end = end if closing < 0 else closing
        # After a quoted key (JSON text) the marker is quoted, so the text stays JSON.
        wrap = key_quote
        if key_quote and text[begin:end] in _LITERALS:
            return None
    if end <= begin or _MARKER.fullmatch(text, begin, end):
        return None
    return begin, end, wrap
