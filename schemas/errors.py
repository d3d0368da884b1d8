"""Error types of baldur-audit.

One base, ``AuditError``. Messages are lowercase, say what was expected, what was
found and where, and never carry key material, passwords or payload secrets.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error raised by baldur-audit."""


class InvalidEvent(AuditError, ValueError):
    """An event given to the producer (or read back) is not valid; ``field`` names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"invalid event field {field!r}: {message}")


class DecodeError(AuditError):
    """Bytes from the topic are not a decodable change event (the record becomes *rejected*)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConfigError(AuditError):
    """Configuration is missing or invalid (exit status 2 at the CLI)."""


class ServiceUnavailable(AuditError):
    """Kafka or PostgreSQL could not be reached or answered with an error."""


class StoreUnavailable(ServiceUnavailable):
    """PostgreSQL could not be reached or failed."""


class StoreRefused(StoreUnavailable):
    """PostgreSQL refused a statement (privileges, a constraint, bad data): not transient."""


class BrokerUnavailable(ServiceUnavailable):
    """Kafka could not be reached or failed."""


class TopicMisconfigured(AuditError):
    """The ledger topic exists with a configuration the ledger cannot work with."""


class Fenced(AuditError):
    """Another chainer took over the chain head: this one must stop writing."""

    def __init__(self, mine: int, current: int) -> None:
        self.mine = mine
        self.current = current
        super().__init__(f"fenced: chain head epoch is {current}, this chainer holds {mine}")


class ChainBreak(AuditError):
    """The ledger is not what was sealed: ``seq`` is the first affected entry.

    ``kind`` is one of: modified, missing, inserted, reordered, unverifiable.
    """

    kind = "modified"

    def __init__(self, seq: int, detail: str) -> None:
        self.seq = seq
        self.detail = detail
        super().__init__(f"{self.kind} at seq {seq}: {detail}")


class LinkMismatch(ChainBreak):
    """A stored link differs from the one recomputed from the entry."""

    kind = "modified"

    def __init__(self, seq: int, expected: bytes, computed: bytes) -> None:
        self.expected = expected
        self.computed = computed
        super().__init__(
            seq, f"link mismatch: stored {expected.hex()[:16]}…, computed {computed.hex()[:16]}…"
        )


class ValueMismatch(ChainBreak):
    """A visible column or the payload differs from what the sealed bytes say."""

    kind = "modified"


class SequenceGap(ChainBreak):
    """Entries are missing: the walk expected ``expected_seq`` and found ``found_seq``."""

    kind = "missing"

    def __init__(self, expected_seq: int, found_seq: int | None, detail: str) -> None:
        self.expected_seq = expected_seq
        self.found_seq = found_seq
        super().__init__(expected_seq, detail)


class InsertedEntry(ChainBreak):
    """An entry that was never sealed sits in the ledger."""

    kind = "inserted"


class ReorderedEntry(ChainBreak):
    """Entries are out of offset order (swapped rows)."""

    kind = "reordered"


class UnknownKey(ChainBreak):
    """An entry names a key id whose key is not configured: it cannot be checked."""

    kind = "unverifiable"
