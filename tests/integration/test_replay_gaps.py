"""What default (digest-first) ``replay`` does not see and ``replay --classify-all`` does: a key
holder who rewrote an entry's visible columns (actor, target or reason) over its unchanged
payload and resealed every link from there with the key (``tamper_reseal_visible`` in
tests/support/tamper/catalogue.py; ``KNOWN_GAPS["visible-resealed"]`` in base.py).

The chain stays valid, so verify reports intact; the payload bytes, offsets and digests match
the topic, so digest-first replay takes each record as the entry shows it. Classifying every
record decodes the payload and finds the rewritten column. Kept out of the random catalogue
(the matrix runs default replay): this module pins both sides of the gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.stack import require_services, with_dbname
from tests.support.tamper import (
    REPLAY,
    VERIFY,
    BaseLedger,
    Damage,
    Finding,
    apply_tamper,
    base_ledger,
    create_copy,
    drop_copy,
    run_replay,
    run_verify,
    seed_from_env,
    trial_rng,
)
from tests.support.tamper.base import KNOWN_GAPS, read_rows
from tests.support.tamper.catalogue import RESEALED_COLUMNS, TamperClass, tamper_reseal_visible

pytestmark = [pytest.mark.integration]

RESEAL = TamperClass(
    "keyholder:visible-resealed",
    tamper_reseal_visible,
    "verify cannot see it; replay --classify-all locates the entry; default replay does not (a known gap)",
)
CLASSIFY_ALL = "replay --classify-all"


@dataclass(frozen=True, slots=True)
class Resealed:
    """One resealed copy: what was done, the stored row afterwards, and what each tool said."""

    damage: Damage
    row: dict[str, Any]
    base_row: dict[str, Any]
    findings: dict[str, Finding]


@pytest.fixture(scope="module")
def resealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resealed]:
    require_services()
    with base_ledger(tmp_path_factory.mktemp("replay-gaps"), seed=seed_from_env()) as base:
        yield _reseal(base, 95_000)


def _reseal(base: BaseLedger, index: int) -> Resealed:
    dbname = create_copy(base, index)
    try:
        damage = apply_tamper(base, dbname, RESEAL, trial_rng(seed_from_env(), index, RESEAL.name))
        dsn = with_dbname(base.ledger.dsn, dbname)
        assert damage.first_seq is not None, damage
        rows = read_rows(dsn)
        findings = {
            VERIFY: run_verify(dsn, base),
            REPLAY: run_replay(dsn, base),
            CLASSIFY_ALL: run_replay(dsn, base, classify_all=True),
        }
    finally:
        drop_copy(base, dbname)
    seq = damage.first_seq
    return Resealed(damage, rows[seq - 1], base.row(seq), findings)


def test_the_reseal_changes_one_visible_column_and_keeps_the_payload(resealed: Resealed) -> None:
    """The premise of the tests below: a real rewrite of what the entry shows, a valid chain."""
    row, before = resealed.row, resealed.base_row
    assert row["seq"] == resealed.damage.first_seq and row["kind"] == "event"
    changed = {c for c in row if row[c] != before[c]}
    columns = changed & set(RESEALED_COLUMNS)
    assert len(columns) == 1, changed
    assert changed - columns <= {"link", "view_digest"}, changed
    assert row["payload"] == before["payload"] and row["digest"] == before["digest"]
    assert resealed.findings[VERIFY] == Finding("intact"), resealed.findings
    assert resealed.damage.gap is KNOWN_GAPS["visible-resealed"]


def test_visible_columns_resealed_are_seen_by_replay_classify_all(resealed: Resealed) -> None:
    found = resealed.findings[CLASSIFY_ALL]
    assert found.status == "broken" and found.seq == resealed.damage.first_seq, resealed
    assert found.kind == "modified", found


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_GAPS["visible-resealed"].why)
def test_visible_columns_resealed_are_seen_by_default_replay(resealed: Resealed) -> None:
    found = resealed.findings[REPLAY]
    assert found.status == "broken" and found.seq == resealed.damage.first_seq, resealed
