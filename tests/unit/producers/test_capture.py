"""AuditedConfig and audited_action: what they record, and what they refuse to leave unrecorded.

Events are decoded from the bytes a capturing producer was asked to send (no broker).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from baldur_audit.producers import AuditTrail, InvalidEvent
from baldur_audit.producers.capture import AuditedConfig, CallableStore, audited_action, records_decision
from baldur_audit.producers.context import request_context
from baldur_audit.schemas.event import Actor, ChangeEvent
from tests.unit.producers.test_trail import KEY, TRACE_ID, UNREACHABLE, Capture


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def trail(capture: Capture) -> Iterator[AuditTrail]:
    made = AuditTrail(bootstrap=UNREACHABLE, producer_factory=capture, redaction_key=KEY)
    yield made
    made.close(0)


def summary(event: ChangeEvent) -> tuple[Any, ...]:
    load = lambda text: None if text is None else json.loads(text)  # noqa: E731
    return (event.action, event.target, load(event.before), load(event.after))


def test_every_kind_of_write_is_recorded_with_before_and_after(trail: AuditTrail, capture: Capture) -> None:
    store: dict[str, Any] = {"timeout": 30}
    config = AuditedConfig(store, trail=trail, prefix="svc/", actor="billing", reason="tuning")
    config["timeout"] = 45
    config["retries"] = 3
    config.update({"retries": 4, "mode": "fast"})
    config.setdefault("mode", "slow")  # present: no write
    config.setdefault("level", 1)
    assert config.pop("level") == 1
    del config["mode"]
    config.clear()
    assert store == {}
    events = capture.events()
    assert [summary(event) for event in events] == [
        ("update", "svc/timeout", 30, 45),
        ("create", "svc/retries", None, 3),
        ("update", "svc/retries", 3, 4),
        ("create", "svc/mode", None, "fast"),
        ("create", "svc/level", None, 1),
        ("delete", "svc/level", 1, None),
        ("delete", "svc/mode", "fast", None),
        ("delete", "svc/timeout", 45, None),
        ("delete", "svc/retries", 4, None),
    ]
    assert {event.actor for event in events} == {Actor("billing", "service")}
    assert {event.reason for event in events} == {"tuning"}


def test_a_write_that_changes_nothing_records_nothing(trail: AuditTrail, capture: Capture) -> None:
    config = AuditedConfig({"timeout": 30, "flag": True}, trail=trail, actor="svc")
    config["timeout"] = 30
    config.update(flag=True)
    assert capture.events() == []
    config["flag"] = 1  # equal by ==, but another value in JSON
    assert [summary(event) for event in capture.events()] == [("update", "config/flag", True, 1)]


def test_the_actor_comes_from_the_request(trail: AuditTrail, capture: Capture) -> None:
    config = AuditedConfig({}, trail=trail, actor="svc")
    with request_context(actor="alice", client_ip="203.0.113.9", trace_id=TRACE_ID):
        config["a"] = 1
    config["b"] = 2
    first, second = capture.events()
    assert (first.actor, first.client_ip, first.trace_id) == (
        Actor("alice", "user"),
        "203.0.***.***",
        TRACE_ID,
    )
    assert (second.actor, second.client_ip, second.trace_id) == (Actor("svc", "service"), None, None)


def test_without_any_actor_the_write_is_refused_and_nothing_changes(
    trail: AuditTrail, capture: Capture
) -> None:
    store = {"a": 1}
    config = AuditedConfig(store, trail=trail)
    with pytest.raises(InvalidEvent, match="actor"):
        config["a"] = 2
    with pytest.raises(InvalidEvent, match="after"):
        AuditedConfig(store, trail=trail, actor="svc")["a"] = {1, 2}  # not JSON
    assert store == {"a": 1} and capture.events() == []


def test_a_refused_event_puts_the_store_back(trail: AuditTrail, capture: Capture) -> None:
    store = {"a": 1}
    config = AuditedConfig(store, trail=trail, actor="svc")
    trail.close(0)  # the trail now refuses every event
    with pytest.raises(Exception, match="closed"):
        config["a"] = 2
    with pytest.raises(Exception, match="closed"):
        config["b"] = 2
    with pytest.raises(Exception, match="closed"):
        del config["a"]
    assert store == {"a": 1}


def test_secrets_under_sensitive_keys_are_redacted(trail: AuditTrail, capture: Capture) -> None:
    config = AuditedConfig({}, trail=trail, actor="svc")
    config["db_password"] = "hunter2"
    config["db_password"] = "hunter3"
    config["dsn"] = "postgresql://app:s3cret@db/app"
    config["token_ttl"] = 300  # a descriptor, not a secret
    config["password_auth"] = False
    text = repr(capture.sent)
    assert "hunter2" not in text and "hunter3" not in text and "s3cret" not in text
    created, updated, dsn, ttl, switch = capture.events()
    assert json.loads(created.after or "").startswith("[REDACTED:hmac-sha256:")
    assert created.after != updated.after  # "did it change?" stays answerable
    assert "app:" in (dsn.after or "")
    assert (ttl.after, switch.after) == ("300", "false")


def test_a_callable_config_store(trail: AuditTrail, capture: Capture) -> None:
    backing: dict[str, str] = {}
    store = CallableStore(
        get=backing.__getitem__, set=backing.__setitem__, delete=backing.__delitem__, keys=backing.keys
    )
    config = AuditedConfig(store, trail=trail, prefix="etcd/", actor="svc")
    config["x"] = "1"
    del config["x"]
    assert [summary(event) for event in capture.events()] == [
        ("create", "etcd/x", None, "1"),
        ("delete", "etcd/x", "1", None),
    ]


def test_a_decision_records_its_outcome_and_reraises(trail: AuditTrail, capture: Capture) -> None:
    @records_decision(
        trail,
        action="restart",
        target=lambda name: f"service/{name}",
        reason=lambda name: f"{name} unhealthy",
    )
    def restart(name: str) -> str:
        if name == "db":
            raise TimeoutError("password=hunter2 in the message")
        return "restarted"

    assert restart("api") == "restarted"
    with pytest.raises(TimeoutError) as raised:
        restart("db")
    assert str(raised.value) == "password=hunter2 in the message"  # unchanged
    ok, failed = capture.events()
    assert (ok.action, ok.target, ok.reason, ok.actor, ok.source) == (
        "restart",
        "service/api",
        "api unhealthy",
        Actor("baldur-healer", "system"),
        "framework",
    )
    after = json.loads(ok.after or "")
    assert after["outcome"] == "succeeded" and isinstance(after["duration_ms"], int)
    assert ok.attributes["outcome"] == "succeeded" and "error_type" not in ok.attributes
    failed_after = json.loads(failed.after or "")
    assert (failed_after["outcome"], failed_after["error_type"]) == ("failed", "TimeoutError")
    assert failed.attributes["error_type"] == "TimeoutError"
    assert "hunter2" not in repr(capture.sent)


def test_a_decision_as_a_context_manager_and_async(trail: AuditTrail, capture: Capture) -> None:
    class Refused(Exception):
        pass

    with audited_action(trail, action="scale", target="deploy/web", reason="cpu 95%") as decision:
        decision.details = {"replicas": 6}
        decision.attributes["cluster"] = "eu-1"
    assert decision.event_id is not None

    @audited_action(trail, action="failover", target="db/main", reason="primary lost")
    async def failover() -> None:
        await asyncio.sleep(0)
        raise Refused

    async def scenario() -> None:
        with pytest.raises(Refused):
            await failover()
        async with audited_action(trail, action="trip", target="breaker/pay", reason="errors"):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    scaled, failed, tripped = capture.events()
    assert json.loads(scaled.after or "")["details"] == {"replicas": 6}
    assert scaled.attributes["cluster"] == "eu-1"
    assert json.loads(failed.after or "")["error_type"].endswith(
        "test_a_decision_as_a_context_manager_and_async.<locals>.Refused"
    )
    assert json.loads(tripped.after or "")["outcome"] == "succeeded"
