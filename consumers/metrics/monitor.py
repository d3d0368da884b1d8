"""The scheduled verifier's metrics for Prometheus, and its readiness: :class:`MonitorMetrics`
owns a registry of its own, fed once per round by ``baldur-audit monitor``.

The verdict series (``baldur_audit_verify_intact``, ``_first_break_seq``,
``_last_success_timestamp_seconds``) are absent until a round has checked the ledger, and a
round that could not check leaves them as they were: the last verdict stands, and its age
(``time() - baldur_audit_verify_last_success_timestamp_seconds``) says how stale it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric

from .chainer import package_version

MODES = ("incremental", "full")
RESULTS = ("intact", "tampered", "unchecked")
#: The witness statuses of ``verify`` (``verification/witness_check.py``); the first three are ok.
WITNESS_OK = ("matched", "none", "skipped")
WITNESS_STATUSES = (*WITNESS_OK, "mismatch", "invalid", "unverifiable", "unavailable")


class _Verdict:
    """The series that exist only once known (absent before, never reset to a default)."""

    def __init__(self, owner: MonitorMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        owner = self._owner
        with owner.lock:
            intact, first_break, success, run = (
                owner.intact,
                owner.first_break_seq,
                owner.last_success,
                owner.last_run,
            )
            witness_ok, verified_seq, checkpoint_size = (
                owner.witness_ok,
                owner.verified_seq,
                owner.checkpoint_size,
            )
        if intact is not None:
            yield GaugeMetricFamily(
                "baldur_audit_verify_intact",
                "1 when the last round that could check found the ledger intact, 0 when tampered.",
                value=1 if intact else 0,
            )
        if first_break is not None:
            yield GaugeMetricFamily(
                "baldur_audit_verify_first_break_seq",
                "Seq of the first broken entry the last checking round found (0 when intact).",
                value=first_break,
            )
        if success is not None:
            yield GaugeMetricFamily(
                "baldur_audit_verify_last_success_timestamp_seconds",
                "Unix time of the last round that completed a check, whatever its verdict.",
                value=success,
            )
        if run is not None:
            yield GaugeMetricFamily(
                "baldur_audit_verify_last_run_timestamp_seconds",
                "Unix time of the last round, whether or not it could check.",
                value=run,
            )
        if witness_ok is not None:
            yield GaugeMetricFamily(
                "baldur_audit_witness_ok",
                "1 when the last round's witness check passed (matched, none yet, or skipped), "
                "0 when it found a mismatch, an invalid or unverifiable checkpoint, or no witness answered.",
                value=1 if witness_ok else 0,
            )
        if verified_seq is not None:
            yield GaugeMetricFamily(
                "baldur_audit_verify_verified_seq",
                "The last seq an intact round verified (where the next incremental round starts).",
                value=verified_seq,
            )
        if checkpoint_size is not None:
            yield GaugeMetricFamily(
                "baldur_audit_verify_checkpoint_size",
                "Size of the last checkpoint the verifier accepted (0: none yet).",
                value=checkpoint_size,
            )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected on every scrape: nothing to describe up front


class MonitorMetrics:
    """``baldur-audit monitor``'s metrics (in :attr:`registry`) and its readiness (:meth:`ready`).

    Ready once a round has completed (checked or not) with the database answering, and
    while the database answered in the last round.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.lock = threading.Lock()
        self.intact: bool | None = None
        self.first_break_seq: int | None = None
        self.last_success: float | None = None
        self.last_run: float | None = None
        self.witness_ok: bool | None = None
        self.verified_seq: int | None = None
        self.checkpoint_size: int | None = None
        self._completed = False
        self._store_problem: str | None = None
        r = self.registry
        Gauge(
            "baldur_audit_build_info", "The running baldur-audit's version.", ["version"], registry=r
        ).labels(package_version()).set(1)
        rounds = Counter(
            "baldur_audit_verify_rounds",
            "Verification rounds by mode (incremental, full) and result (intact, tampered, "
            "unchecked: could not check).",
            ["mode", "result"],
            registry=r,
        )
        self._rounds = {(m, res): rounds.labels(m, res) for m in MODES for res in RESULTS}
        self._entries = Gauge(
            "baldur_audit_verify_entries",
            "Entries walked by the last round of each mode.",
            ["mode"],
            registry=r,
        )
        self._seconds = Gauge(
            "baldur_audit_verify_round_seconds",
            "Seconds the last round of each mode took.",
            ["mode"],
            registry=r,
        )
        self._witness = Gauge(
            "baldur_audit_witness_status",
            "1 for the witness status of the last round that reached the witness check, else 0.",
            ["status"],
            registry=r,
        )
        r.register(_Verdict(self))

    def observe(
        self,
        *,
        mode: str,
        result: str,
        seconds: float,
        walked: int | None = None,
        first_break_seq: int | None = None,
        witness_status: str | None = None,
        verified_seq: int | None = None,
        checkpoint_size: int | None = None,
        store_problem: str | None = None,
    ) -> None:
        """Record one round. ``result`` is ``intact``, ``tampered`` or ``unchecked``;
        ``walked`` is None when the round ended before it could walk (then also
        ``store_problem`` says why when the database did not answer)."""
        now = self.clock()
        self._rounds[(mode, result)].inc()
        self._seconds.labels(mode).set(seconds)
        if walked is not None:
            self._entries.labels(mode).set(walked)
        if witness_status is not None:
            for status in WITNESS_STATUSES:
                self._witness.labels(status).set(1 if status == witness_status else 0)
        with self.lock:
            self.last_run = now
            self._store_problem = store_problem
            if walked is not None:
                self._completed = True
            if witness_status is not None:
                self.witness_ok = witness_status in WITNESS_OK
            if result in ("intact", "tampered"):
                self.intact = result == "intact"
                self.first_break_seq = first_break_seq or 0
                self.last_success = now
            if verified_seq is not None:
                self.verified_seq = verified_seq
            if checkpoint_size is not None:
                self.checkpoint_size = checkpoint_size

    def ready(self) -> tuple[bool, str]:
        """(ready, why) for ``/readyz``."""
        with self.lock:
            problem, completed = self._store_problem, self._completed
        if problem is not None:
            return False, f"the database did not answer in the last round ({problem})"
        if not completed:
            return False, "no round completed yet"
        return True, ""
