"""``log`` says what a page left out and pages forward by seq, in text and in JSON."""

from __future__ import annotations

import json

import pytest

from tests.support.stack import Ledger

pytestmark = pytest.mark.integration


def test_log_says_how_many_it_left_out_and_pages_through_every_entry(ledger: Ledger) -> None:
    ledger.produce_events(23, target="svc.paged")
    done = ledger.cli("chain", "--until-idle", "1")
    assert done.returncode == 0, done.stderr

    newest = ledger.cli("log", "--target", "svc.*", "--limit", "10", "--json")
    assert newest.returncode == 0, newest.stderr
    shown = [json.loads(line)["seq"] for line in newest.stdout.splitlines()]
    assert shown == list(range(14, 24))  # the newest ten, oldest first
    assert "showing the newest 10 of 23 matching entries" in newest.stderr
    assert "--after-seq 0" in newest.stderr

    seen: list[int] = []
    after = 0
    for _ in range(10):
        page = ledger.cli(
            "log", "--target", "svc.paged", "--limit", "10", "--after-seq", str(after), "--json"
        )
        assert page.returncode == 0, page.stderr
        seqs = [json.loads(line)["seq"] for line in page.stdout.splitlines()]
        seen += seqs
        if not page.stderr.strip():
            break  # the last page leaves nothing out and says nothing
        assert f"next page: --after-seq {seqs[-1]}" in page.stderr
        after = seqs[-1]
    assert seen == list(range(1, 24))

    everything = ledger.cli("log", "--limit", "100")
    assert everything.returncode == 0 and everything.stderr == ""  # nothing left out: no note
    assert len(everything.stdout.splitlines()) == 23
    text = ledger.cli("log", "--limit", "5", "--after-seq", "20")
    assert len(text.stdout.splitlines()) == 3 and text.stderr == ""
    bad = ledger.cli("log", "--after-seq", "-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
