"""The chainer's Prometheus metrics: a batch's seal latencies binned at once agree with
prometheus_client's own histogram fed one value at a time; counts by kind, the head, the
active flag; the lag and the checkpoint age only while they are known; readiness through a
chainer's life (joining, standby, active, database failing, stopped); and the observer
matches the chainer's observer protocol method for method."""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from baldur_audit.consumers.chainer import ChainerObserver, NoObserver
from baldur_audit.consumers.metrics.chainer import (
    SEAL_LATENCY_BUCKETS,
    BatchHistogram,
    PrometheusChainerMetrics,
)

NOW = 1_800_000_000.0


@dataclass
class Batch:
    """The shape of consumers/chainer.py's CommittedBatch that the metrics read."""

    stamps: list[int]
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    schemas: int = 0
    seconds: float = 0.01
    committed_at: float = NOW
    head_seq: int = 0
    head_offset: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def timestamps_ms(self) -> list[int]:
        return list(self.stamps)


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float | None:
    return registry.get_sample_value(name, labels or {})


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_binned_at_once_matches_observing_each_value(seed: int) -> None:
    rng = random.Random(seed)
    theirs, mine = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h_seconds", "h", buckets=SEAL_LATENCY_BUCKETS, registry=theirs)
    binned = BatchHistogram("h_seconds", "h", SEAL_LATENCY_BUCKETS)
    mine.register(binned)
    edges = (0, 1, 4, 5, 6, 10, 250, 999, 1000, 29_999, 30_000, 31_000, 10**6)
    exact = Fraction(0)
    for _ in range(20):
        now = NOW + rng.uniform(0, 100)
        now_ms = now * 1000
        stamps = [int(now_ms - rng.choice(edges)) for _ in range(3)]
        stamps += [int(now_ms - rng.expovariate(1 / 400)) for _ in range(rng.randint(0, 300))]
        stamps += [int(now_ms + rng.uniform(0, 50)) for _ in range(rng.randint(0, 3))]  # clock ahead
        stamps += [-1] * rng.randint(0, 2)  # records without a timestamp
        rng.shuffle(stamps)
        binned.observe_ages(stamps, now)
        for stamp in stamps:
            if stamp >= 0:
                reference.observe(max(now - stamp / 1000, 0.0))
                exact += max(Fraction(now) - Fraction(stamp, 1000), Fraction(0))
    for le in [*(str(bound) for bound in SEAL_LATENCY_BUCKETS), "+Inf"]:
        expected = sample(theirs, "h_seconds_bucket", {"le": le})
        assert sample(mine, "h_seconds_bucket", {"le": le}) == expected, le
    assert sample(mine, "h_seconds_count") == sample(theirs, "h_seconds_count")
    # Exact: observing each age in floats near 1.8e9 s loses some 1e-7 s every time.
    assert sample(mine, "h_seconds_sum") == pytest.approx(float(exact), rel=1e-12)
    assert sample(theirs, "h_seconds_sum") == pytest.approx(float(exact), rel=1e-6)


def test_an_empty_batch_or_one_without_timestamps_observes_nothing() -> None:
    histogram = BatchHistogram("h_seconds", "h", (1.0,))
    histogram.observe_ages([], NOW)
    histogram.observe_ages([-1, -1], NOW)
    (family,) = histogram.collect()
    assert [(s.name, s.value) for s in family.samples if s.name == "h_seconds_count"] == [
        ("h_seconds_count", 0)
    ]


def test_committed_batches_are_counted_by_kind() -> None:
    metrics = PrometheusChainerMetrics()
    r = metrics.registry
    metrics.assigned(head_seq=10, head_offset=19)
    assert sample(r, "baldur_audit_head_seq") == 10
    metrics.committed(Batch([int(NOW * 1000) - 20] * 5, events=3, rejected=1, duplicates=1, head_seq=15))
    metrics.committed(Batch([int(NOW * 1000) - 3_000] * 2, events=2, head_seq=17, seconds=0.2))
    assert [
        sample(r, "baldur_audit_sealed_total", {"kind": k}) for k in ("event", "rejected", "duplicate")
    ] == [
        5,
        1,
        1,
    ]
    assert sample(r, "baldur_audit_head_seq") == 17
    assert sample(r, "baldur_audit_batch_seconds_count") == 2
    assert sample(r, "baldur_audit_batch_seconds_sum") == pytest.approx(0.21)
    assert sample(r, "baldur_audit_seal_latency_seconds_count") == 7
    assert sample(r, "baldur_audit_seal_latency_seconds_bucket", {"le": "0.025"}) == 5
    assert sample(r, "baldur_audit_seal_latency_seconds_bucket", {"le": "2.5"}) == 5
    assert sample(r, "baldur_audit_seal_latency_seconds_bucket", {"le": "5.0"}) == 7
    assert sample(r, "baldur_audit_seal_latency_seconds_sum") == pytest.approx(5 * 0.02 + 2 * 3.0)
    assert sample(r, "baldur_audit_build_info", {"version": metrics_version(r)}) == 1


def metrics_version(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    line = next(line for line in text.splitlines() if line.startswith("baldur_audit_build_info{"))
    return line.split('version="', 1)[1].split('"', 1)[0]


def test_the_lag_and_the_checkpoint_age_appear_only_while_known() -> None:
    clock = [NOW]
    metrics = PrometheusChainerMetrics(clock=lambda: clock[0])
    r = metrics.registry
    assert sample(r, "baldur_audit_lag_records") is None
    assert sample(r, "baldur_audit_checkpoint_age_seconds") is None
    metrics.assigned(head_seq=0, head_offset=-1)
    metrics.lag(42)
    metrics.checkpoint_stored(NOW - 12.5)
    assert sample(r, "baldur_audit_lag_records") == 42
    assert sample(r, "baldur_audit_checkpoint_age_seconds") == 12.5
    clock[0] += 30  # computed when scraped
    assert sample(r, "baldur_audit_checkpoint_age_seconds") == 42.5
    metrics.lag(None)
    assert sample(r, "baldur_audit_lag_records") is None
    metrics.lag(0)
    metrics.revoked()  # a standby does not know them
    assert sample(r, "baldur_audit_lag_records") is None
    assert sample(r, "baldur_audit_checkpoint_age_seconds") is None


def test_counters_of_retries_and_checkpoint_failures() -> None:
    metrics = PrometheusChainerMetrics()
    metrics.store_retry("StoreUnavailable")
    metrics.store_retry("StoreUnavailable")
    metrics.checkpoint_failed()
    assert sample(metrics.registry, "baldur_audit_store_retries_total") == 2
    assert sample(metrics.registry, "baldur_audit_checkpoint_failures_total") == 1


def test_readiness_through_a_chainers_life() -> None:
    metrics = PrometheusChainerMetrics()
    active = lambda: sample(metrics.registry, "baldur_audit_chainer_active")  # noqa: E731
    assert metrics.ready() == (False, "joining the chainer group") and active() == 0
    metrics.joined(True)
    assert metrics.ready() == (True, "standby") and active() == 0
    metrics.assigned(head_seq=5, head_offset=9)
    assert metrics.ready() == (True, "active") and active() == 1
    metrics.store_retry("StoreUnavailable")
    assert metrics.ready() == (False, "database unavailable (StoreUnavailable), retrying")
    metrics.store_recovered()
    assert metrics.ready() == (True, "active")
    metrics.store_retry("StoreUnavailable")
    metrics.committed(Batch([], events=1, head_seq=6))  # a committed batch: the database answers
    assert metrics.ready() == (True, "active")
    metrics.revoked()
    assert metrics.ready() == (True, "standby") and active() == 0
    metrics.joined(False)
    assert metrics.ready() == (False, "joining the chainer group")
    metrics.joined(True)
    metrics.assigned(head_seq=6, head_offset=10)
    metrics.stopped("fenced")
    assert metrics.ready() == (False, "stopped: fenced") and active() == 0
    metrics.joined(True)
    assert metrics.ready() == (False, "stopped: fenced")


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize("observer", [NoObserver, PrometheusChainerMetrics])
def test_observers_implement_the_chainer_protocol(observer: type) -> None:
    wanted = _methods(ChainerObserver)
    found = _methods(observer)
    for name, signature in wanted.items():
        assert name in found, name
        assert list(found[name].parameters) == list(signature.parameters), name
