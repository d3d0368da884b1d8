"""Delivery counters of the producer library for Prometheus — only when the host service has
``prometheus_client`` installed: the library never requires it, and without it nothing here
does anything.

In prometheus_client's default registry (what the service's own ``/metrics`` exposes), each
labelled with the trail's topic:

- ``baldur_audit_producer_delivered_total``: events the broker acknowledged;
- ``baldur_audit_producer_failed_total``: events whose delivery failed for good (also passed
  to ``on_failure``);
- ``baldur_audit_producer_spooled_total``: events written to the disk spool (the broker was
  unreachable or slow, or ``durability="always"``);
- ``baldur_audit_producer_spool_bytes``: bytes of events waiting in the spools of the open
  trails (computed when scraped).

The counters are registered once per process, however many trails there are: the trails of
one topic add to the same series.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: TrailStats field → (metric name, help).
COUNTERS = {
    "delivered": ("baldur_audit_producer_delivered", "Audit events the Kafka broker acknowledged."),
    "failed": ("baldur_audit_producer_failed", "Audit events whose delivery failed for good."),
    "spooled": ("baldur_audit_producer_spooled", "Audit events written to the disk spool."),
}
SPOOL_BYTES = "baldur_audit_producer_spool_bytes"


class _Spooling(Protocol):
    @property
    def spool_bytes(self) -> int: ...


class _Collector:
    """The counters, and the spool bytes of the live trails summed per topic when scraped."""

    def __init__(self, counters: Mapping[str, Any]) -> None:
        self.counters = counters
        self.trails: weakref.WeakKeyDictionary[_Spooling, str] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for counter in self.counters.values():
            yield from counter.collect()
        with self.lock:
            trails = list(self.trails.items())
        gauge = GaugeMetricFamily(
            SPOOL_BYTES,
            "Bytes of audit events waiting in the disk spools of the open trails.",
            labels=["topic"],
        )
        by_topic: dict[str, int] = {}
        for trail, topic in trails:
            by_topic[topic] = by_topic.get(topic, 0) + trail.spool_bytes
        for topic, size in sorted(by_topic.items()):
            gauge.add_metric([topic], size)
        yield gauge


_LOCK = threading.Lock()
_COLLECTOR: _Collector | None = None
_TRIED = False


def _collector() -> _Collector | None:
    """The process's collector, registered on first use; None without prometheus_client (or
    when its names are taken in the default registry already)."""
    global _COLLECTOR, _TRIED
    with _LOCK:
        if _TRIED:
            return _COLLECTOR
        _TRIED = True
        try:
            from prometheus_client import REGISTRY, Counter
        except ImportError:
            return None
        counters = {
            field: Counter(name, text, ["topic"], registry=None) for field, (name, text) in COUNTERS.items()
        }
        collector = _Collector(counters)
        try:
            REGISTRY.register(collector)
        except ValueError as exc:  # the names are taken (another copy of this module?)
            log.warning("audit producer metrics not registered: %s", exc)
            return None
        _COLLECTOR = collector
        return collector


class TrailMetrics:
    """One trail's handle on the counters (does nothing without prometheus_client)."""

    def __init__(self, topic: str, *, enabled: bool = True) -> None:
        collector = _collector() if enabled else None
        self._collector = collector
        self._children = (
            None
            if collector is None
            else {field: counter.labels(topic) for field, counter in collector.counters.items()}
        )
        self._topic = topic

    def count(self, deltas: Mapping[str, int]) -> None:
        """Add what a trail counted (TrailStats field names; others are ignored)."""
        children = self._children
        if children is None:
            return
        for field, value in deltas.items():
            child = children.get(field)
            if child is not None and value:
                child.inc(value)

    def watch_spool(self, trail: _Spooling) -> None:
        """Report ``trail.spool_bytes`` while the trail lives."""
        if self._collector is not None:
            with self._collector.lock:
                self._collector.trails[trail] = self._topic
