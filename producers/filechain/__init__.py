"""The local file chain: events sealed in-process into append-only segment files.

The default backend of :meth:`~baldur_audit.producers.AuditTrail.from_env` when
``BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN`` is false. Same key, key ids, genesis binding,
framing and link rule as the Kafka ledger (CHAIN.md §20 specifies the container).
"""

from .format import FileChainError, FileRecord, SegmentHeader
from .reader import chain_status, iter_records, scan_chain
from .retention import FileAnchor, read_anchor
from .writer import SYNC_MODES, Appended, FileChainWriter

__all__ = [
    "SYNC_MODES",
    "Appended",
    "FileAnchor",
    "FileChainError",
    "FileChainWriter",
    "FileRecord",
    "SegmentHeader",
    "chain_status",
    "iter_records",
    "read_anchor",
    "scan_chain",
]
