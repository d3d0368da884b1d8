"""The forward-secure epoch rule (CHAIN.md §16): with ``BALDUR_FORWARD_SECURE_EPOCH=N``,
entry ``seq`` must be sealed with the key of epoch ``(seq - 1) // N``. A thief of the chainer's
current key holds *later* epochs' keys: an entry sealed with one of them links perfectly, so
``verify`` checks the rule on top of the chain walk.
"""

from __future__ import annotations

from dataclasses import replace

from baldur_audit.schemas.errors import ChainBreak
from baldur_audit.schemas.keys import EpochSchedule, epoch_of

from ..postgres.ledger import PostgresLedgerStore
from .verify import Break, VerifyReport


class OffSchedule(ChainBreak):
    """An entry sealed with a key other than its epoch's: a forgery, not a missing key."""

    kind = "modified"


def with_epoch_check(
    store: PostgresLedgerStore, report: VerifyReport, schedule: EpochSchedule
) -> VerifyReport:
    """``report`` with the forward-secure epoch rule checked too: an entry sealed with any
    key but its epoch's is a break (the earliest break wins)."""
    off = first_off_schedule(store, schedule, int(report.head["seq"]))
    if off is None or (report.first_break is not None and report.first_break.seq < off.seq):
        return report
    return replace(report, first_break=Break.of(off))


def first_off_schedule(
    store: PostgresLedgerStore, schedule: EpochSchedule, last_seq: int
) -> ChainBreak | None:
    """The first entry not sealed with its epoch's key (forward security), as a break.

    Its key may be a *later* epoch's key, which a thief of the current key holds: such an
    entry is a forgery however well it links, so it is reported as modified.
    """
    if last_seq < 1:
        return None
    ids = [
        schedule.key_of_epoch(epoch).key_id for epoch in range(epoch_of(last_seq, schedule.epoch_entries) + 1)
    ]
    found = store.first_off_schedule(last_seq=last_seq, key_ids=ids, epoch_entries=schedule.epoch_entries)
    if found is None:
        return None
    seq, key_id = found
    epoch = epoch_of(seq, schedule.epoch_entries)
    return OffSchedule(
        seq,
        f"entry is sealed with key {key_id}, but epoch {epoch} "
        f"(forward security, N={schedule.epoch_entries}) uses "
        f"{schedule.key_of_epoch(epoch).key_id}",
    )
