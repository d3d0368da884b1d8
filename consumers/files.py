"""Durable files: the one way the ledger side writes a file that must survive a crash (the
ratchet state, a witnessed checkpoint note, verify's accepted checkpoint).

The spool of the producer library keeps its own, group-committed path (producers/spool/).
"""

from __future__ import annotations

import os
from pathlib import Path


def durable_write(path: Path, data: bytes, *, mode: int, replace: bool = False) -> None:
    """Write ``data`` to ``path`` with permissions ``mode``, fsync'd, then fsync the folder.

    Without ``replace`` the file is created exclusively (raises ``FileExistsError`` when it
    exists: write-once); with ``replace`` it is written to a temporary file beside it and
    renamed over ``path`` atomically, so readers see the old or the new content, never a
    part. Raises ``OSError``.
    """
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if replace:
        os.replace(target, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
