"""``replay`` digest first (a record whose bytes, position and rebuilt link match the ledger's
event entry is not classified) gives the report of ``replay --classify-all`` (every record
classified, as the chainer did): the same first divergence (seq, offset, kind, detail), counts
and unsealed tail, on an intact ledger and on every class of the tamper catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from baldur_audit.schemas.errors import AuditError
from tests.support.stack import require_services, with_dbname
from tests.support.tamper import (
    CATALOGUE,
    BaseLedger,
    apply_tamper,
    base_ledger,
    create_copy,
    drop_copy,
    replay_report,
    seed_from_env,
    trial_rng,
)

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseLedger]:
    require_services()
    with base_ledger(tmp_path_factory.mktemp("digest-first"), seed=seed_from_env()) as built:
        yield built


def _report(base: BaseLedger, dsn: str, *, classify_all: bool) -> dict[str, Any]:
    try:
        shape: dict[str, Any] = replay_report(dsn, base, classify_all=classify_all).as_dict()
    except AuditError as exc:  # could not check: the same error either way
        return {"error": f"{type(exc).__name__}: {exc}"}
    for timing in ("seconds", "records_per_second"):
        shape.pop(timing)
    return shape


def test_digest_first_replay_of_an_intact_ledger(base: BaseLedger) -> None:
    fast = _report(base, base.ledger.dsn, classify_all=False)
    assert fast["consistent"] and fast["topic_records"] == fast["ledger_entries"] > 20, fast
    assert fast == _report(base, base.ledger.dsn, classify_all=True)


@pytest.mark.parametrize("index", range(len(CATALOGUE)))
def test_digest_first_replay_finds_what_classifying_every_record_finds(base: BaseLedger, index: int) -> None:
    tamper = CATALOGUE[index % len(CATALOGUE)]
    dbname = create_copy(base, 9500 + index)
    try:
        damage = apply_tamper(base, dbname, tamper, trial_rng(seed_from_env(), index, tamper.name))
        dsn = with_dbname(base.ledger.dsn, dbname)
        fast = _report(base, dsn, classify_all=False)
        full = _report(base, dsn, classify_all=True)
    finally:
        drop_copy(base, dbname)
    assert fast == full, (tamper.name, damage)
