"""The producer's durable disk spool: a subsystem with its own on-disk format.

- :mod:`.segment`: the bytes of a segment file — header, CRC-framed records, parsing with
  resynchronisation after damage (pure code, no I/O);
- :mod:`.disk`: :class:`DiskSpool`, one directory of segment files with its lock and drain
  cursor;
- :mod:`.slots`: where a trail's spool lives, one slot per process, and the adoption of
  slots orphaned by processes that are gone;
- :mod:`.drain`: the background drainer that sends spooled events to Kafka and moves the
  cursor over what the broker acknowledged.
"""

from .disk import DiskSpool, SpoolError, SpoolFull, SpoolLocked

__all__ = ["DiskSpool", "SpoolError", "SpoolFull", "SpoolLocked"]
