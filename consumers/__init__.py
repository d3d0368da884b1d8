"""The ledger side of baldur-audit: chaining consumer, PostgreSQL store, verify,
replay, forensic queries and the ``baldur-audit`` CLI."""
