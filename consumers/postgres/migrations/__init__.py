"""Versioned SQL migrations, applied in order by ``PostgresLedgerStore.migrate``."""
