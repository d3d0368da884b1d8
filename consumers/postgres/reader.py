"""Read-only connections for the viewer and its API (``baldur-audit serve``): every session
starts with ``default_transaction_read_only=on`` (a libpq startup option), so even an owner's
credential cannot write through them; and a small pool of them, one per request at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from baldur_audit.schemas.errors import StoreUnavailable

from . import connect, redact_dsn
from .ledger import PostgresLedgerStore

READ_ONLY_OPTION = "-c default_transaction_read_only=on"


def read_only_dsn(dsn: str) -> str:
    """``dsn`` with the read-only session option added to any ``options`` it already has."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # unparsable: connect() reports it without echoing it
        return dsn
    options = str(params.get("options") or "").strip()
    params["options"] = f"{options} {READ_ONLY_OPTION}".strip()
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def connect_reader(dsn: str, *, application_name: str = "baldur-audit-serve") -> PostgresLedgerStore:
    """A store on a read-only session; raises StoreUnavailable (the password never shown)."""
    conn = connect(read_only_dsn(dsn), application_name=application_name, connect_timeout=5)
    return PostgresLedgerStore(conn, dsn)


class ReaderPool:
    """Up to ``size`` read-only stores, lent one per request and kept open between requests.

    A store whose block raised is closed, not lent again; thread-safe.
    """

    def __init__(self, dsn: str, *, size: int = 4) -> None:
        self._dsn = dsn
        self._idle: queue.LifoQueue[PostgresLedgerStore] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    @property
    def where(self) -> str:
        """The database, as safe to log (password shown as ``***``)."""
        return redact_dsn(self._dsn)

    @contextmanager
    def borrow(self, timeout: float = 30.0) -> Iterator[PostgresLedgerStore]:
        """A store for the duration of the block; raises StoreUnavailable (none free in
        ``timeout`` s, or the database is unreachable)."""
        if not self._slots.acquire(timeout=timeout):
            raise StoreUnavailable("every database connection of the viewer is busy")
        store: PostgresLedgerStore | None = None
        try:
            try:
                store = self._idle.get_nowait()
            except queue.Empty:
                store = connect_reader(self._dsn)
            yield store
        except BaseException:
            if store is not None:
                store.close()  # its state is unknown after an error: never lend it again
                store = None
            raise
        finally:
            if store is not None:
                if self._closed:
                    store.close()
                else:
                    self._idle.put(store)
            self._slots.release()

    def close(self) -> None:
        """Close every idle store (those lent out are closed when they come back)."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
