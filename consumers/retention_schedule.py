"""Retention on a schedule: the active chainer prunes what ``BALDUR_AUDIT_RETENTION`` lets go.

Why the chainer and not ``monitor``: the chainer is the one process that always runs where a
ledger is kept, exactly one of them is active (the one holding the partition), and it already
holds the chain key and, for checkpoints, the Ed25519 checkpoint key that signs the anchors;
a standby never prunes. The prune runs between two batches through :func:`.retention.prune`
(``baldur_prune``, its advisory lock, the same cut rule as ``baldur-audit prune``), at most
:data:`MAX_ENTRIES_PER_RUN` entries at a time, so sealing waits for one short transaction at
most; when a run hit that bound the next one follows right after the next batch.

When: once as soon as the chainer holds the partition, then every :func:`interval_of` the
period (a tenth of it, between one second and one hour). A failed run is logged and tried
again at the next interval; it never stops the chainer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.checkpoint import CheckpointSigner
from baldur_audit.schemas.errors import AuditError

from .postgres.ledger import PostgresLedgerStore
from .retention import MODES, PruneReport, prune

log = logging.getLogger(__name__)

MAX_ENTRIES_PER_RUN = 10_000


def interval_of(period: timedelta) -> float:
    """Seconds between two scheduled prunes for a retention ``period``: a tenth of it,
    at least one second, at most an hour."""
    return min(3600.0, max(1.0, period.total_seconds() / 10))


class RetentionSchedule:
    """Prunes entries older than ``period`` (``mode`` payload or entries) when due."""

    def __init__(
        self,
        *,
        period: timedelta,
        mode: str,
        key: Callable[[], SigningKey],
        signer: CheckpointSigner | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``key`` gives the chain key current at the time of a prune (it may rotate);
        ``signer`` signs the anchors of entries mode (None: MAC only)."""
        if mode not in MODES:
            raise ValueError(f"unknown retention mode {mode!r}")
        self.period = period
        self.mode = mode
        self.interval = interval_of(period)
        self._key = key
        self._signer = signer
        self._clock = clock
        self._due = clock()  # once at start
        self.runs = 0
        self.failures = 0
        self.last: PruneReport | None = None

    def due(self) -> bool:
        """Whether a prune is due now."""
        return self._clock() >= self._due

    def skipped(self) -> None:
        """A due run could not start (no database connection): try again after the interval."""
        self.failures += 1
        self._due = self._clock() + self.interval

    def after_batch(self, store: PostgresLedgerStore) -> PruneReport | None:
        """Prune if due (the chainer calls it between batches, holding the partition);
        returns what was done, or None when not due or the run failed (logged)."""
        now = self._clock()
        if now < self._due:
            return None
        self._due = now + self.interval
        try:
            report = prune(
                store,
                older_than=self.period,
                mode=self.mode,
                key=self._key(),
                signer=self._signer,
                max_entries=MAX_ENTRIES_PER_RUN,
            )
        except AuditError as exc:
            self.failures += 1
            log.warning(
                "scheduled retention (%s, %s) failed: %s; retrying in %.0f s",
                self.mode,
                self.period,
                exc,
                self.interval,
            )
            return None
        self.runs += 1
        self.last = report
        if report.changed:
            log.info(
                "retention: %s %d entries up to seq %d (older than %s)",
                "dropped" if self.mode == "entries" else "pruned the payloads of",
                report.changed,
                report.cut_seq,
                self.period,
            )
        if report.changed >= MAX_ENTRIES_PER_RUN:
            self._due = now  # more is due: continue after the next batch
        return report
