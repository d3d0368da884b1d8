"""What the fuzz tests share: their settings, a time limit, hostile values, planted secrets,
JSON lines for ``emit --file`` (good ones, and bad ones by kind) and an in-memory producer.

``HYPOTHESIS_PROFILE=faults`` runs every fuzz test with :data:`FAULTS_SCALE` times more
examples (the ``faults`` profile registered here also applies to the other hypothesis
tests of the run); without it the fuzz files of ``tests/unit`` stay within about a minute.
"""

from __future__ import annotations

import decimal
import enum
import json
import math
import os
import signal
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from baldur_audit.producers.mask import mask_client_ip
from baldur_audit.producers.redact import Redactor
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from baldur_audit.schemas.event import ACTOR_TYPES, SOURCES, to_json_text

FAULTS = os.environ.get("HYPOTHESIS_PROFILE") == "faults"
FAULTS_SCALE = 10  # hypothesis keeps ~0.3 MB per example of the widest tests
_SLOW_IS_FINE = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
settings.register_profile(
    "faults", max_examples=100 * FAULTS_SCALE, deadline=None, suppress_health_check=_SLOW_IS_FINE
)
if FAULTS:
    settings.load_profile("faults")


def fuzz(examples: int) -> settings:
    """Settings of one fuzz test: ``examples`` examples (scaled up under ``faults``), no deadline."""
    return settings(
        max_examples=examples * (FAULTS_SCALE if FAULTS else 1),
        deadline=None,
        suppress_health_check=_SLOW_IS_FINE,
    )


class TimeLimit(Exception):
    """An example ran longer than its time limit: the code under test hangs or crawls."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeLimit` in the main thread after ``seconds`` of wall time."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise TimeLimit(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- text ---------------------------------------------------------------------------------

#: Characters that break naive code: lone surrogates, NUL, line and paragraph separators, BOM,
#: quotes, escapes, separators of the redaction rules.
NASTY_CHARS = [
    "\ud800",
    "\udfff",
    "\x00",
    "\r",
    "\n",
    "\t",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\u202e",
    "\\",
    '"',
    "'",
    "=",
    ":",
    "@",
    "/",
    "-",
    "%",
    "\x7f",
    "\U0001f600",
    "\u0660",
    "\uff10",
]
ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.sampled_from(NASTY_CHARS))
ANY_TEXT = st.text(ANY_CHAR, max_size=40)


@st.composite
def huge_text(draw: st.DrawFn) -> str:
    """A string of 100 KB to 3 MB: a repeated unit, optionally with nasty characters in it."""
    unit = draw(
        st.sampled_from(
            ["x", "a=b ", "password=", "a-", "eyJ", "Bearer ", "://u:", "\ud800", "\x00", "é", "[", '{"a":']
        )
    )
    size = draw(
        st.sampled_from([100_000, 300_000, 1_000_000, 3_000_000] if FAULTS else [100_000, 300_000, 1_000_000])
    )
    return unit * (size // len(unit))


# ---- values a host might pass -----------------------------------------------------------


class Color(enum.Enum):
    RED = 1


class Plain:
    """A custom object JSON cannot represent."""


class Hostile:
    """A custom object whose dunder methods raise: nothing may call them unguarded."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ called")

    def __format__(self, spec: str) -> str:
        raise RuntimeError("__format__ called")

    def __repr__(self) -> str:  # hypothesis reports examples with repr()
        return "Hostile()"

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__ called")

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise RuntimeError("__bool__ called")

    def __len__(self) -> int:
        raise RuntimeError("__len__ called")


def _self_list() -> list[Any]:
    cycle: list[Any] = ["x"]
    cycle.append(cycle)
    return cycle


def _self_dict() -> dict[str, Any]:
    cycle: dict[str, Any] = {"a": 1}
    cycle["self"] = cycle
    return cycle


def self_shared(depth: int) -> list[Any]:
    """``[x, x]`` nested ``depth`` times: 2**depth leaves, few objects."""
    node: list[Any] = [0]
    for _ in range(depth):
        node = [node, node]
    return node


def double_cycle() -> list[Any]:
    cycle: list[Any] = []
    cycle.extend([cycle, cycle])
    return cycle


def nest(depth: int, leaf: Any = 0, as_dict: bool = False) -> Any:
    """A value ``depth`` levels deep (the leaf is level ``depth``)."""
    node = leaf
    for _ in range(depth - 1):
        node = {"k": node} if as_dict else [node]
    return node


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**4000, max_value=10**4400),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.decimals(),
    st.sampled_from([decimal.Decimal("NaN"), decimal.Decimal("-Infinity")]),
    st.binary(max_size=20),
    ANY_TEXT,
    st.uuids(),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.dates(),
    st.timedeltas(),
    st.just(Color.RED),
    st.builds(Plain),
    st.complex_numbers(),
)
#: Values that cannot be built by a strategy's recursion (they contain themselves, or are huge).
SPECIAL = st.one_of(
    st.builds(_self_list),
    st.builds(_self_dict),
    st.builds(double_cycle),
    st.integers(20, 64).map(self_shared),
    st.integers(1, 200).flatmap(
        lambda depth: st.booleans().map(lambda as_dict: nest(depth, as_dict=as_dict))
    ),
    huge_text(),
    st.integers(10_000, 300_000).map(lambda n: list(range(n))),
    st.builds(Hostile),
    st.just(Hostile.__dict__),
    st.just(object),
)
_TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.frozensets(st.integers(), max_size=3),
        st.sets(st.text(max_size=3), max_size=3),
        st.dictionaries(
            st.one_of(ANY_TEXT, st.integers(), st.booleans(), st.none(), st.tuples(st.integers())),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
#: Anything a host might pass: a tree of odd values, or (a third of the time) one special
#: value alone or beside a few others.
HOSTILE = st.one_of(
    _TREES,
    _TREES,
    SPECIAL,
    st.tuples(st.lists(_TREES, max_size=3), SPECIAL).map(lambda pair: [*pair[0], pair[1]]),
)
#: JSON-like values a well-behaved host passes: what must come out intact (after redaction).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


# ---- planted secrets ----------------------------------------------------------------------

#: Secrets are alphanumeric with a digit and mixed case, 20+ characters: what a password or
#: API token looks like, so every value-shape rule applies to it.
SECRET = st.text(string.ascii_letters + string.digits, min_size=16, max_size=24).map(
    lambda tail: "S3cr" + tail
)
_B64URL = st.text(string.ascii_letters + string.digits + "-_", min_size=10, max_size=40)


@st.composite
def secret_carrier(draw: st.DrawFn, secret: str, text_only: bool = False) -> Any:
    """``secret`` in one of the shapes a secret reaches an audit event in."""
    texts = [
        f"Authorization: Bearer {secret}",
        f"Bearer {secret}",
        f"postgresql://app:{secret}@db.internal:5432/payments",
        f"redis://:{secret}@cache:6379/0",
        f"host=db port=5432 password={secret} user=app",
        f"eyJ{draw(_B64URL)}.eyJ{draw(_B64URL)}.{secret}",
        f"--db-password={secret}",
        f"mysql --password {secret} payments",
        f"token: {secret}",
        f'{{"api_key": "{secret}"}}',
        f"https://api.example.com/v1?access_token={secret}&page=2",
        f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----",
    ]
    objects = [
        {"password": secret},
        {"token": secret},
        {"Authorization": f"Bearer {secret}"},
        {"db_password": [secret, secret]},
        {"apiKey": {"v": secret}},
        ["--password", secret],
        ["deploy", "--token", secret, "--replicas", "3"],
        ("X-Api-Key", secret),
        {"name": "DB_PASSWORD", "value": secret},
        {"headers": [("Authorization", f"Basic {secret}")]},
    ]
    carrier = draw(st.sampled_from(texts if text_only else texts + objects))
    if isinstance(carrier, str) and draw(st.booleans()):
        # Surrounding text, separated by a space as in a log line or a sentence.
        before, after = draw(ANY_TEXT), draw(ANY_TEXT)
        carrier = f"{before} {carrier} {after}"
    return carrier


@st.composite
def planted(draw: st.DrawFn, secret: str) -> Any:
    """A JSON-like value with ``secret`` planted at a random depth (at most 12 levels)."""
    node = draw(secret_carrier(secret))
    for _ in range(draw(st.integers(0, 12))):
        siblings = draw(st.lists(JSON_VALUES, max_size=2))
        if draw(st.booleans()):
            node = [*siblings, node]
        else:
            node = {
                **{f"k{i}": s for i, s in enumerate(siblings)},
                draw(st.sampled_from(["config", "spec", "note", "items", "x"])): node,
            }
    return node


# ---- JSON lines for `emit --file` ----------------------------------------------------------

SAFE_CHAR = st.characters(codec="utf-8", exclude_characters="\x00")
_TEXT = st.text(SAFE_CHAR, max_size=30)
NON_BLANK = st.text(SAFE_CHAR, min_size=1, max_size=30).filter(lambda text: text.strip() != "")
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=10,
)


@st.composite
def good_item(draw: st.DrawFn) -> dict[str, Any]:
    """The keys of a line the ledger takes, with a secret planted now and then."""
    item: dict[str, Any] = {
        "actor": draw(NON_BLANK),
        "action": draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True)),
        "target": draw(NON_BLANK),
    }
    optional = {
        "actor_type": st.sampled_from(ACTOR_TYPES),
        "source": st.sampled_from(SOURCES),
        "before": _JSON,
        "after": _JSON | SECRET.flatmap(lambda secret: st.just({"password": secret})),
        "reason": _TEXT
        | SECRET.flatmap(
            lambda s: secret_carrier(s, text_only=True).filter(
                lambda text: "\x00" not in text and len(text) < 4000 and _encodable(text)
            )
        ),
        "client_ip": st.ip_addresses().map(str)
        | st.lists(st.ip_addresses().map(str), max_size=4).map(", ".join),
        "trace_id": st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda text: text != "0" * 32),
        "attributes": st.dictionaries(NON_BLANK, _TEXT, max_size=3),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        item[key] = draw(optional[key])
    return item


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False).encode("utf-8")


def _with_raw(item: dict[str, Any], key: str, raw: str) -> bytes:
    """``item`` as a JSON line, with ``key`` set to raw JSON text (a literal json.dumps refuses)."""
    rest = {k: v for k, v in item.items() if k != key}
    return dumps(rest)[:-1] + f', "{key}": {raw}}}'.encode()


#: Ways a line is certainly bad, each from a good item: (label, bytes of the line).
BAD_LINE_MAKERS: dict[str, Callable[[dict[str, Any], st.DrawFn], bytes]] = {
    "invalid utf-8": lambda item, draw: (
        dumps(item)[:-1]
        + b', "reason": "a'
        + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        + b'"}'
    ),
    "bom": lambda item, draw: b"\xef\xbb\xbf" + dumps(item),
    "NaN": lambda item, draw: _with_raw(
        item, "after", draw(st.sampled_from(["NaN", "-Infinity", "Infinity", "[NaN]", '{"a": Infinity}']))
    ),
    "duplicate key": lambda item, draw: b'{"actor": "x", ' + dumps(item)[1:],
    "nested duplicate": lambda item, draw: _with_raw(item, "before", '{"a": 1, "a": 2}'),
    "huge integer": lambda item, draw: _with_raw(item, "after", "9" * 4301),
    "huge float": lambda item, draw: _with_raw(
        item, "after", draw(st.sampled_from(["1e999", "-1e400", "[1.5e309]"]))
    ),
    "deep nesting": lambda item, draw: _with_raw(item, "after", "[" * 100_000 + "]" * 100_000),
    "too deep": lambda item, draw: _with_raw(item, "after", "[" * 65 + "]" * 65),
    "not an object": lambda item, draw: draw(
        st.sampled_from([b"[]", b"[1, 2]", b'"actor"', b"42", b"null", b"true"])
    ),
    "truncated": lambda item, draw: dumps(item)[:-1],
    "trailing text": lambda item, draw: dumps(item) + b" x",
    "unknown key": lambda item, draw: dumps(
        {**item, draw(st.sampled_from(["colour", "_line", "Actor", "password=hunter2", "event_id"])): 1}
    ),
    "missing": lambda item, draw: dumps(
        {
            **item,
            draw(st.sampled_from(["actor", "action", "target"])): draw(
                st.sampled_from([None, "", 0, [], {}])
            ),
        }
    ),
    "bad action": lambda item, draw: dumps(
        {**item, "action": draw(st.sampled_from(["Update", "not an action", "x" * 65, "ü"]))}
    ),
    "NUL": lambda item, draw: _with_raw(item, draw(st.sampled_from(["actor", "target"])), '"a\\u0000b"'),
    "lone surrogate": lambda item, draw: _with_raw(
        item, draw(st.sampled_from(["actor", "target", "reason", "after"])), '"\\ud800"'
    ),
    "attribute type": lambda item, draw: dumps(
        {**item, "attributes": draw(st.sampled_from([{"k": 1}, {"k": None}, [], "k=v", {"": "v"}]))}
    ),
    "trace id": lambda item, draw: dumps(
        {**item, "trace_id": draw(st.sampled_from(["xyz", "0" * 32, "4bf92f3577b34da6a3ce929d0e0e473", 12]))}
    ),
    "source": lambda item, draw: dumps(
        {**item, "source": draw(st.sampled_from(["carrier-pigeon", None, "API"]))}
    ),
    "actor type": lambda item, draw: dumps(
        {**item, "actor_type": draw(st.sampled_from(["admin", None, "password=hunter2"]))}
    ),
    "wrong type": lambda item, draw: dumps(
        {
            **item,
            draw(st.sampled_from(["actor", "target", "reason"])): draw(
                st.sampled_from([1, 1.5, ["a"], {"a": "b"}, True])
            ),
        }
    ),
}
BLANK_LINES = [b"", b"  ", b"\t", b"\r", b" \r"]


@dataclass
class JsonlFile:
    """A JSON-lines file as ``emit`` reads it: its lines (without the newline), the good item
    of each line (None for blank and bad lines), and the kind of each bad line by number."""

    lines: list[bytes]
    items: list[dict[str, Any] | None]
    bad: dict[int, str]
    final_newline: bool

    @property
    def content(self) -> bytes:
        return b"\n".join(self.lines) + (b"\n" if self.final_newline else b"")

    @property
    def first_bad(self) -> int | None:
        return min(self.bad, default=None)

    @property
    def good(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item is not None]


@st.composite
def jsonl_file(
    draw: st.DrawFn,
    min_lines: int = 1,
    max_lines: int = 12,
    kinds: tuple[str, ...] = ("good", "good", "good", "blank", "bad"),
) -> JsonlFile:
    """Good, blank and bad lines (bad ones of every kind in BAD_LINE_MAKERS), LF or CRLF."""
    crlf = draw(st.booleans())
    file = JsonlFile(lines=[], items=[], bad={}, final_newline=draw(st.booleans()))
    for number in range(1, draw(st.integers(min_lines, max_lines)) + 1):
        kind = draw(st.sampled_from(kinds))
        item = draw(good_item())
        if kind == "blank":
            line = draw(st.sampled_from(BLANK_LINES))
        elif kind == "good":
            line = dumps(item)
        else:
            file.bad[number] = draw(st.sampled_from(sorted(BAD_LINE_MAKERS)))
            line = BAD_LINE_MAKERS[file.bad[number]](item, draw)
        file.lines.append(line + b"\r" if crlf and line else line)
        file.items.append(item if kind == "good" else None)
    return file


def expected_fields(item: dict[str, Any]) -> dict[str, Any]:
    """What the ledger must show for a good line: its values after redaction and masking."""
    redactor = Redactor()
    return {
        "actor": item["actor"],
        "action": item["action"],
        "target": item["target"],
        "actor_type": item.get("actor_type", "user"),
        "source": item.get("source", "cli"),
        "before": None
        if item.get("before") is None
        else to_json_text("before", redactor.redact(item["before"])),
        "after": None if item.get("after") is None else to_json_text("after", redactor.redact(item["after"])),
        "reason": redactor.redact(item.get("reason")),
        "client_ip": mask_client_ip(item.get("client_ip")),
        "trace_id": item.get("trace_id"),
        "attributes": redactor.redact(item.get("attributes") or {}),
    }


def sealed_fields(payload: bytes) -> dict[str, Any]:
    event = decode_event(payload, KNOWN_SCHEMAS)
    return {
        "actor": event.actor.id,
        "action": event.action,
        "target": event.target,
        "actor_type": event.actor.type,
        "source": event.source,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "client_ip": event.client_ip,
        "trace_id": event.trace_id,
        "attributes": dict(event.attributes),
    }


# ---- an in-memory producer ----------------------------------------------------------------


class MemoryProducer:
    """Stands in for ``confluent_kafka.Producer``: appends what it is asked to send to a log."""

    def __init__(
        self, config: dict[str, Any], log: list[tuple[bytes, list[tuple[str, bytes]] | None]]
    ) -> None:
        self.config = config
        self.log = log

    def produce(self, topic: str, value: bytes | None = None, *args: Any, **kwargs: Any) -> None:
        assert isinstance(value, bytes)
        self.log.append((value, kwargs.get("headers")))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __len__(self) -> int:
        return 0


class MemoryProducers:
    """A ``producer_factory``: its producers share one log, in the order things were sent."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes, list[tuple[str, bytes]] | None]] = []

    def __call__(self, config: dict[str, Any]) -> MemoryProducer:
        return MemoryProducer(config, self.log)

    def values_since(self, mark: int) -> list[bytes]:
        """The values sent after the log held ``mark`` entries."""
        return [value for value, _ in self.log[mark:]]

    def wire(self, mark: int = 0) -> bytes:
        """Every byte sent after ``mark``: values and header values."""
        return b"".join(value + b"".join(v for _, v in headers or []) for value, headers in self.log[mark:])


def mutated(data: st.DataObject, value: bytes, *, first: int, set_to: Sequence[int]) -> bytes:
    """``value`` after 1-3 random byte mutations at positions from ``first`` on: a flipped bit,
    a byte set to one of ``set_to``, the rest cut off, bytes added at the end or inserted."""
    out = bytearray(value)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        if len(out) < 4:
            break
        action = data.draw(st.sampled_from(["flip", "set", "cut", "add", "insert"]))
        pos = data.draw(st.integers(min_value=first, max_value=len(out) - 1))
        if action == "flip":
            out[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif action == "set":
            out[pos] = data.draw(st.sampled_from(list(set_to)))
        elif action == "cut":
            del out[pos:]
        elif action == "add":
            out += data.draw(st.binary(min_size=1, max_size=4))
        else:
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
    return bytes(out)
