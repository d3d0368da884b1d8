"""The pure core of baldur-audit: event model, Avro codec and framing, the chain.

Nothing in this package touches the network, the environment or the clock: keys,
times and records are passed in. ``tests/unit/schemas/test_purity.py`` proves it.
"""
