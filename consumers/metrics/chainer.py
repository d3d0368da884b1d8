"""The chainer's metrics for Prometheus, and its readiness: :class:`PrometheusChainerMetrics`
is a chainer observer (``consumers/chainer.py`` ``ChainerObserver``, matched by shape) that
owns a registry of its own.

The chainer reports once per batch; nothing here runs per record in Python: the seal latency
of a whole batch is binned with one sort and a few bisections (:class:`BatchHistogram`), so
that watching a chainer draining 20,000 records a second costs it next to nothing.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

#: Broker timestamp of a record → database commit of its batch: 5 ms to 30 s.
SEAL_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Sealing and writing one batch.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KINDS = ("event", "rejected", "duplicate", "schema")


class _Batch(Protocol):
    """What :meth:`PrometheusChainerMetrics.committed` reads of a committed batch."""

    @property
    def events(self) -> int: ...

    @property
    def schemas(self) -> int: ...

    @property
    def rejected(self) -> int: ...

    @property
    def duplicates(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def committed_at(self) -> float: ...

    @property
    def head_seq(self) -> int: ...

    @property
    def head_offset(self) -> int: ...

    def timestamps_ms(self) -> list[int]: ...


def package_version() -> str:
    """The installed version of baldur-audit (``unknown`` from a bare source tree)."""
    try:
        return metadata.version("baldur-audit")
    except metadata.PackageNotFoundError:
        return "unknown"


class BatchHistogram:
    """A Prometheus histogram of ``now - t`` for many times ``t`` at once, for a collector
    registry: each batch is sorted once (in C) and binned by bisection, instead of one
    ``observe`` call per value. Negative ages (clock skew between a producer and this host)
    count as 0."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(sorted(buckets))
        self._cumulative = [0] * len(self._bounds)
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_ages(self, stamps_ms: Iterable[int], now: float) -> None:
        """Observe ``now - t`` (seconds) for every ``t`` of ``stamps_ms`` (ms since the epoch);
        negative stamps (a record without a timestamp) are skipped."""
        stamps = sorted(stamps_ms)
        first = bisect_left(stamps, 0)
        valid = len(stamps) - first
        if valid <= 0:
            return
        now_ms = now * 1000.0
        # age <= bound  <=>  t >= now - bound
        counts = [len(stamps) - bisect_left(stamps, now_ms - bound * 1000.0, first) for bound in self._bounds]
        past = bisect_right(stamps, now_ms, first)  # the rest are "in the future": age 0
        # Whole seconds in integers (exact), the fraction apart (``now - whole`` is exact): sums
        # of epoch times in floats would lose the sub-millisecond part.
        whole = int(now)
        counted = past - first
        total = (
            (counted * whole * 1000 - sum(stamps[first:past])) + counted * (now - whole) * 1000.0
        ) / 1000.0
        with self._lock:
            for index, count in enumerate(counts):
                self._cumulative[index] += count
            self._count += valid
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        """The histogram as it stands (for the registry)."""
        with self._lock:
            cumulative, count, total = list(self._cumulative), self._count, self._sum
        buckets = [
            (floatToGoString(bound), value) for bound, value in zip(self._bounds, cumulative, strict=True)
        ]
        buckets.append(("+Inf", count))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


class _Computed:
    """Gauges computed when scraped: the lag and the checkpoint age, absent when unknown."""

    def __init__(self, owner: PrometheusChainerMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        lag = self._owner.lag_records
        if lag is not None:
            yield GaugeMetricFamily(
                "baldur_audit_lag_records",
                "Records in the topic beyond the chain head (topic end offset - head offset - 1), "
                "as the active chainer last saw the end.",
                value=lag,
            )
        signed_at = self._owner.checkpoint_signed_at
        if signed_at is not None:
            yield GaugeMetricFamily(
                "baldur_audit_checkpoint_age_seconds",
                "Seconds since the newest stored checkpoint was signed.",
                value=max(self._owner.clock() - signed_at, 0.0),
            )

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("baldur_audit_lag_records", "")
        yield GaugeMetricFamily("baldur_audit_checkpoint_age_seconds", "")


class PrometheusChainerMetrics:
    """The chainer's metrics (in :attr:`registry`) and its readiness (:meth:`ready`).

    Ready: holding the partition with the database answering, or a healthy standby (in the
    chainer group, not holding the partition). Not ready: while joining, while the database
    fails and is retried, and once the loop has stopped (fenced, an outage past its budget,
    or simply finished).
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.lag_records: int | None = None
        self.checkpoint_signed_at: float | None = None
        self._member = False
        self._active = False
        self._store_error: str | None = None
        self._stopped: str | None = None
        r = self.registry
        Gauge(
            "baldur_audit_build_info", "The running baldur-audit's version.", ["version"], registry=r
        ).labels(package_version()).set(1)
        sealed = Counter(
            "baldur_audit_sealed_total",
            "Entries sealed into the ledger by this chainer, by kind (event, rejected, duplicate, schema).",
            ["kind"],
            registry=r,
        )
        self._sealed = {kind: sealed.labels(kind) for kind in KINDS}
        self._head_seq = Gauge("baldur_audit_head_seq", "Sequence number of the chain head.", registry=r)
        self._active_gauge = Gauge(
            "baldur_audit_chainer_active",
            "1 while this chainer holds the partition (the one writer), else 0.",
            registry=r,
        )
        self._batch_seconds = Histogram(
            "baldur_audit_batch_seconds",
            "Seconds to seal and commit one batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._retries = Counter(
            "baldur_audit_store_retries_total",
            "Database operations that failed and were retried.",
            registry=r,
        )
        self._unknown_schemas = Counter(
            "baldur_audit_unknown_schema_total",
            "Records sealed as rejected because no schema record announced their writer schema.",
            ["fingerprint"],
            registry=r,
        )
        self._checkpoint_failures = Counter(
            "baldur_audit_checkpoint_failures_total",
            "Checkpoints that could not be made (retried later).",
            registry=r,
        )
        self._latency = BatchHistogram(
            "baldur_audit_seal_latency_seconds",
            "Seconds from a record's broker timestamp to the database commit of its batch.",
            SEAL_LATENCY_BUCKETS,
        )
        r.register(self._latency)
        r.register(_Computed(self))

    # -- readiness ------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """(ready, why) for ``/readyz``."""
        if self._stopped is not None:
            return False, f"stopped: {self._stopped}"
        if self._store_error is not None:
            return False, f"database unavailable ({self._store_error}), retrying"
        if self._active:
            return True, "active"
        if self._member:
            return True, "standby"
        return False, "joining the chainer group"

    # -- the chainer observer -------------------------------------------------------------------

    def joined(self, member: bool) -> None:
        self._member = member

    def assigned(self, head_seq: int, head_offset: int) -> None:
        self._active = True
        self._store_error = None
        self._active_gauge.set(1)
        self._head_seq.set(head_seq)

    def revoked(self) -> None:
        self._active = False
        self._active_gauge.set(0)
        # What only the active chainer knows goes stale once it stands by.
        self.lag_records = None
        self.checkpoint_signed_at = None

    def committed(self, batch: _Batch) -> None:
        self._store_error = None
        if batch.events:
            self._sealed["event"].inc(batch.events)
        if batch.rejected:
            self._sealed["rejected"].inc(batch.rejected)
        if batch.duplicates:
            self._sealed["duplicate"].inc(batch.duplicates)
        if batch.schemas:
            self._sealed["schema"].inc(batch.schemas)
        self._head_seq.set(batch.head_seq)
        self._batch_seconds.observe(batch.seconds)
        self._latency.observe_ages(batch.timestamps_ms(), batch.committed_at)

    def lag(self, records: int | None) -> None:
        self.lag_records = records

    def store_retry(self, reason: str) -> None:
        self._store_error = reason
        self._retries.inc()

    def store_recovered(self) -> None:
        self._store_error = None

    def checkpoint_stored(self, signed_at: float) -> None:
        self.checkpoint_signed_at = signed_at

    def checkpoint_failed(self) -> None:
        self._checkpoint_failures.inc()

    def unknown_schema(self, fingerprint: str) -> None:
        self._unknown_schemas.labels(fingerprint).inc()

    def stopped(self, reason: str) -> None:
        self._stopped = reason
        self._active = False
        self._active_gauge.set(0)
        self.lag_records = None
