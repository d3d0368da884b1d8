"""A caller's event id through ``emit`` and the library, against the real stack: sending the
same id twice (an outbox or a retrying sender) seals one event and one duplicate; an invalid
id is a typed error, or one line and exit 2 from the CLI, and sends nothing."""

from __future__ import annotations

import json
import uuid

import pytest

from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.errors import InvalidEvent
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration


def kinds(ledger: Ledger) -> list[tuple[str, str]]:
    done = ledger.cli("log", "--all", "--json")
    assert done.returncode == 0, done.stderr
    return [(row["event_id"], row["kind"]) for row in map(json.loads, done.stdout.splitlines())]


def test_emit_same_event_id_twice_is_one_event_and_one_duplicate(ledger: Ledger, tmp_path) -> None:
    event_id = str(uuid.uuid4())
    options = ("emit", "--actor", "outbox", "--action", "apply", "--target", "cfg/x", "--event-id", event_id)
    for _ in range(2):
        done = ledger.cli(*options)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [event_id]
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        json.dumps({"actor": "outbox", "action": "apply", "target": "cfg/x", "event_id": event_id}) + "\n"
    )
    done = ledger.cli("emit", "--file", str(lines))
    assert done.returncode == 0 and done.stdout.split() == [event_id], done.stderr
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 3
    assert kinds(ledger) == [(event_id, "event"), (event_id, "duplicate"), (event_id, "duplicate")]


def test_emit_invalid_event_id_exits_2_in_one_line_and_sends_nothing(ledger: Ledger, tmp_path) -> None:
    done = ledger.cli("emit", "--actor", "a", "--action", "update", "--target", "t", "--event-id", "12345")
    assert done.returncode == 2 and "event_id" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    lines = tmp_path / "events.jsonl"
    good = {"actor": "a", "action": "update", "target": "t"}
    lines.write_text(json.dumps(good) + "\n" + json.dumps({**good, "event_id": "nope"}) + "\n")
    done = ledger.cli("emit", "--file", str(lines))
    assert done.returncode == 2 and "line 2" in done.stderr and "event_id" in done.stderr, done.stderr
    done = ledger.cli("emit", "--file", str(lines), "--event-id", str(uuid.uuid4()))
    assert done.returncode == 2 and "--event-id" in done.stderr, done.stderr
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 0


def test_library_resend_with_the_same_id_is_a_duplicate(ledger: Ledger) -> None:
    event_id = uuid.uuid4()
    with AuditTrail(bootstrap=ledger.bootstrap, topic=ledger.topic) as trail:
        for _ in range(2):
            assert trail.record(actor="svc", action="update", target="cfg/y", event_id=event_id) == event_id
        with pytest.raises(InvalidEvent) as caught:
            trail.record(actor="svc", action="update", target="cfg/y", event_id="cfg/y")
        assert caught.value.field == "event_id"
        assert trail.flush(15) == 0
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 2
    assert kinds(ledger) == [(str(event_id), "event"), (str(event_id), "duplicate")]
