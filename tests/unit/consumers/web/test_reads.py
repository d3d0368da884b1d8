"""The viewer's filters (the same as ``log``'s) and what the status banner says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from baldur_audit.consumers.postgres.verify_results import VerifyResult
from baldur_audit.consumers.web.reads import banner_of, parse_filter
from baldur_audit.schemas.errors import ConfigError

NOW = datetime(2026, 11, 29, 15, 0, tzinfo=UTC)


def test_the_incident_question_as_a_filter() -> None:
    query = parse_filter({"target": "payments.*", "before": "2026-11-29T14:05", "window": "30m"}, now=NOW)
    assert query.target == "payments.*"
    assert query.since == datetime(2026, 11, 29, 13, 35, tzinfo=UTC)
    assert query.until == datetime(2026, 11, 29, 14, 5, tzinfo=UTC)
    assert query.kinds == ("event",) and query.limit == 100 and query.after_seq is None


def test_defaults_kinds_paging_and_relative_times() -> None:
    query = parse_filter(
        {"since": "2h", "kind": "all", "after_seq": "40", "limit": "7", "actor": " "}, now=NOW
    )
    assert query.since == NOW - timedelta(hours=2) and query.until is None
    assert query.kinds == ("event", "duplicate", "rejected", "schema")
    assert (query.after_seq, query.limit, query.actor) == (40, 7, None)
    assert parse_filter({"before": "now"}, now=NOW).since == NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"after_seq": "-1"},
        {"kind": "everything"},
        {"since": "last tuesday"},
        {"before": "1h", "until": "now"},
        {"before": "now", "window": "forever"},
        {"target": "x" * 501},
    ],
)
def test_a_bad_filter_is_a_config_error(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        parse_filter(params, now=NOW)


def _result(status: str, *, ago: timedelta = timedelta(minutes=5), **fields: object) -> VerifyResult:
    return VerifyResult(checked_at=NOW - ago, tool="verify", mode="full", status=status, **fields)  # type: ignore[arg-type]


def test_the_banner() -> None:
    age = timedelta(hours=25)
    assert banner_of(None, now=NOW, max_age=age).text.startswith("not verified since: never")
    intact = banner_of(_result("intact", head_seq=9000), now=NOW, max_age=age)
    assert (intact.state, intact.text) == (
        "intact",
        "intact: verified through seq 9000 by verify at 2026-11-29 14:55:00 UTC",
    )
    stale = banner_of(_result("intact", ago=timedelta(hours=26)), now=NOW, max_age=age)
    assert (stale.state, stale.text) == ("unverified", "not verified since 2026-11-28 13:00:00 UTC")
    tampered = banner_of(
        _result("tampered", ago=timedelta(days=30), break_seq=42, break_kind="modified"), now=NOW, max_age=age
    )
    assert tampered.state == "tampered" and tampered.text.startswith("tampered at seq 42 (modified)")
    unchecked = banner_of(_result("unchecked"), now=NOW, max_age=age)
    assert unchecked.state == "unverified" and "could not complete" in unchecked.text
