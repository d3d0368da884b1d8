"""A small incident to look at: changes to payments and checkout around 14:05 on
2026-11-29, one of them full of hostile content (markup, a ``javascript:`` URL, HTML entities,
an RTL override, zero-width characters, a 200 kB value, deep nesting)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.support.stack import Ledger

DAY = datetime(2026, 11, 29, tzinfo=UTC)
SCRIPT = "<script>alert('owned')</script>"
JS_URL = "javascript:alert(document.cookie)"
RTL = "\u202e"
ZERO_WIDTH = "\u200b"
BIG = 200_000


def at(hour: int, minute: int) -> datetime:
    return DAY.replace(hour=hour, minute=minute)


@dataclass(frozen=True)
class Change:
    when: datetime
    target: str
    actor: str
    action: str
    before: Any
    after: Any
    reason: str
    actor_type: str = "user"
    source: str = "api"
    attributes: dict[str, str] | None = None


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for level in range(levels):
        value = {f"level{level}": value}
    return value


CHANGES = (
    Change(
        at(12, 0), "payments.ledger.retention", "alice", "update", {"days": 30}, {"days": 90}, "compliance"
    ),
    Change(at(13, 10), "payments.gateway.timeout_ms", "alice", "update", 1000, 3000, "slow upstream"),
    Change(
        at(13, 40),
        "payments.fraud.rules",
        "bob",
        "update",
        {"rules": {"velocity": {"max": 5, "window": "1m"}, "countries": ["DE", "FR"]}},
        {"rules": {"velocity": {"max": 50, "window": "1m"}, "countries": ["DE", "FR", "US"]}},
        "launch in the US",
    ),
    Change(at(13, 50), "checkout.flags.new_cart", "carol", "update", False, True, "rollout 10%"),
    Change(
        at(14, 1),
        "payments.db.pool",
        "healer-7",
        "restart",
        {"size": 20},
        {"size": 20},
        "pool exhausted: restarted",
        actor_type="system",
        source="scheduler",
    ),
    Change(
        at(14, 3),
        f"payments.{SCRIPT}",
        f"mallory{RTL}gnp.exe",
        "update",
        {"html": "<b>bold</b> &amp; &lt;i&gt;", "nested": deep(40)},
        {
            "html": f"<img src=x onerror=alert(1)>{ZERO_WIDTH}",
            "link": JS_URL,
            "big": "A" * BIG,
            "nested": deep(41),
        },
        f"see {JS_URL} &lt;b&gt;not bold&lt;/b&gt; {SCRIPT}{ZERO_WIDTH}",
        attributes={"ticket": f"<iframe src='{JS_URL}'></iframe>", "rtl": f"abc{RTL}def"},
    ),
    Change(at(14, 20), "payments.gateway.timeout_ms", "alice", "rollback", 3000, 1000, "incident resolved"),
)
#: Seqs of the changes above once sealed (the order they are produced in).
SEQ = {index: index + 1 for index in range(len(CHANGES))}
HOSTILE = 6  # seq of the hostile change
FRAUD_RULES = 3  # seq of the nested change to payments.fraud.rules
#: payments.* in the 30 minutes before 14:05: the fraud rules, the pool restart, the hostile one.
INCIDENT_SEQS = [3, 5, 6]


def produce_incident(ledger: Ledger) -> None:
    """Put the changes on the ledger's topic (seal them with ``chain``)."""
    from baldur_audit.schemas.codec import encode_event
    from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

    events = []
    for number, change in enumerate(CHANGES):
        events.append(
            ChangeEvent(
                event_id=uuid7(1_764_417_600_000 + number, os.urandom(10)),
                occurred_at=change.when,
                actor=Actor(change.actor, change.actor_type),
                action=change.action,
                target=change.target,
                source=change.source,
                before=json.dumps(change.before),
                after=json.dumps(change.after),
                reason=change.reason,
                trace_id=f"{number + 0xABC:032x}",
                client_ip="10.1.***.***",
                attributes=change.attributes or {"ticket": f"OPS-{number}"},
            )
        )
    ledger.produce_raw([encode_event(event) for event in events])


def sealed_incident(ledger: Ledger) -> None:
    """The incident on the topic, sealed, checkpointed and verified (result recorded)."""
    produce_incident(ledger)
    for args in (("chain", "--until-idle", "1"), ("checkpoint",), ("verify", "--record")):
        done = ledger.cli(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
