"""The ledger side of baldur-audit: the chaining consumer, the PostgreSQL ledger, verify,
replay, checkpoints and evidence, retention, and the ``baldur-audit`` CLI.

The rooms, and the one rule: imports point down only.

- ``settings``, ``files``, ``chain_keys``, ``checkpoint_keys``: configuration and keys, at
  the bottom (they import the pure core ``schemas`` and nothing of the ledger side above).
- ``postgres/`` and ``kafka/``: the adapters, the only importers of psycopg and
  confluent_kafka on the ledger side.
- ``chainer``, ``checkpointer``, ``witnesses``, ``retention``, ``verification/``,
  ``evidence/``: what the ledger does, built on the adapters.
  ``evidence/check.py`` (what an auditor runs offline) imports ``schemas`` only.
- ``cli/``: the edge (parse options, call one library function, print, exit); nothing
  imports it but ``__main__`` and the console script.

``tests/unit/test_layers.py`` keeps the rule.
"""
