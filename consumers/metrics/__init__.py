"""Prometheus metrics and health probes of the ledger side: the only package of the ledger side
that imports ``prometheus_client`` (the producer library has its own optional counters in
``producers/metrics.py``).

``server`` serves ``/metrics``, ``/livez`` and ``/readyz`` over HTTP from a daemon thread;
``chainer`` turns what the chaining consumer reports into metrics.
"""
