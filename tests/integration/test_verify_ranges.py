"""``verify`` split into seq ranges checked at once (processes) gives the report of one walk:
the same first break (seq, kind, detail), the same counts up to it and the same retention
figures, on an intact ledger and on every class of the tamper catalogue, whatever the number
of ranges. The ranges are made small here so that a ledger of a few hundred entries is split."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from baldur_audit.consumers.verification import ranges
from baldur_audit.consumers.verification.verify import verify_ledger
from baldur_audit.schemas.errors import AuditError
from tests.support.stack import require_services, with_dbname
from tests.support.tamper import (
    CATALOGUE,
    BaseLedger,
    apply_tamper,
    base_ledger,
    cli_app,
    create_copy,
    drop_copy,
    seed_from_env,
    trial_rng,
)

pytestmark = [pytest.mark.integration]

JOBS = (1, 2, 3, 7)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseLedger]:
    require_services()
    with base_ledger(tmp_path_factory.mktemp("ranges"), seed=seed_from_env()) as built:
        yield built


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranges, "MIN_RANGE", 5)


def _reports(base: BaseLedger, dsn: str) -> dict[int, dict[str, Any]]:
    app = cli_app(base, dsn)
    keys, _ = app.verification_keys()
    found = {}
    for jobs in JOBS:
        try:
            with app.store() as store:
                shape = verify_ledger(store, keys, jobs=jobs).as_dict()
        except AuditError as exc:  # could not check (e.g. the identity row deleted): the same error
            found[jobs] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        for timing in ("seconds", "entries_per_second"):
            shape.pop(timing)
        found[jobs] = shape
    return found


def test_split_ranges_of_an_intact_ledger_report_one_walk(base: BaseLedger) -> None:
    reports = _reports(base, base.ledger.dsn)
    assert reports[1]["intact"], reports[1]
    assert sum(reports[1]["kinds"].values()) == reports[1]["entries"] > 20
    for jobs in JOBS[1:]:
        assert reports[jobs] == reports[1], jobs


@pytest.mark.parametrize("index", range(len(CATALOGUE)))
def test_split_ranges_find_the_first_break_of_one_walk(base: BaseLedger, index: int) -> None:
    tamper = CATALOGUE[index % len(CATALOGUE)]
    dbname = create_copy(base, 9000 + index)
    try:
        damage = apply_tamper(base, dbname, tamper, trial_rng(seed_from_env(), index, tamper.name))
        reports = _reports(base, with_dbname(base.ledger.dsn, dbname))
    finally:
        drop_copy(base, dbname)
    for jobs in JOBS[1:]:
        assert reports[jobs] == reports[1], (tamper.name, damage, jobs)
