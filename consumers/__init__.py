"""The ledger side of baldur-audit: the chaining consumer, the PostgreSQL ledger, verify,
replay, checkpoints and evidence, retention, and the ``baldur-audit`` CLI.

The rooms, and the one rule: imports point down only.

- ``settings``, ``files``, ``chain_keys``, ``checkpoint_keys``, ``times``: configuration, keys
  and time parsing, at the bottom (they import the pure core ``schemas`` and the producer
  library, nothing of the ledger side above).
- ``postgres/``, ``kafka/`` and ``metrics/``: the adapters, the only importers of psycopg,
  confluent_kafka (on the ledger side) and prometheus_client.
- ``chainer``, ``checkpointer``, ``witnesses``, ``retention``, ``retention_schedule``,
  ``verification/``, ``evidence/``: what the ledger does, built on the adapters.
  ``evidence/check.py`` and ``evidence/export_check.py`` (what an auditor runs offline)
  import ``schemas`` and their formats only.
- ``web/``: the viewer and its read API (starlette, uvicorn, jinja2), on the floors below.
- ``cli/``: the edge (parse options, call one library function, print, exit); nothing
  imports it but ``__main__`` and the console script.

``tests/unit/test_layers.py`` keeps the rule.
"""
