"""Where a trail's spool lives: ``<spool dir>/<topic>/<slot>``, one slot per process.

Each process takes the lowest slot whose lock is free (:class:`.disk.DiskSpool` holds an
exclusive ``flock``), so the workers of one service on one host never share files. A slot
that is not locked but holds records belonged to a process that is gone: the next process
to start adopts it (locks it, drains it, removes it) — so records survive a restart even
when fewer processes come back.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from baldur_audit.schemas.errors import ConfigError

from .disk import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SEGMENT_BYTES,
    DiskSpool,
    SpoolError,
    SpoolLocked,
    ensure_private_dir,
)

logger = logging.getLogger(__name__)

MAX_SLOTS = 64
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def default_spool_dir(environ: Mapping[str, str]) -> Path:
    """``$BALDUR_AUDIT_SPOOL_DIR``, else ``spool`` in the state folder.

    The state folder is ``$BALDUR_STATE_DIR``, else ``$XDG_STATE_HOME/baldur-audit`` (the
    same rule as the ledger side's, which this package may not import).
    """
    if environ.get("BALDUR_AUDIT_SPOOL_DIR"):
        return Path(environ["BALDUR_AUDIT_SPOOL_DIR"])
    if environ.get("BALDUR_STATE_DIR"):
        return Path(environ["BALDUR_STATE_DIR"]) / "spool"
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "baldur-audit" / "spool"


def open_slots(
    spool_dir: Path,
    topic: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> tuple[DiskSpool, list[DiskSpool]]:
    """This process's spool for ``topic`` under ``spool_dir``, and the orphans it adopts.

    Spools live in ``<spool_dir>/<topic>/<slot>``. Each process takes the lowest free slot;
    a slot that is not locked but holds records belonged to a process that is gone: it is
    adopted (locked and drained by this process, then removed). Raises
    :class:`ConfigError` or :class:`SpoolError`.
    """
    if not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise ConfigError(f"topic {topic[:60]!r}: not usable as a spool folder name")
    if not spool_dir.exists():
        try:
            spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"spool directory {spool_dir}: {exc.strerror or exc}") from None
    root = spool_dir / topic
    ensure_private_dir(root)
    own: DiskSpool | None = None
    for slot in range(MAX_SLOTS):
        try:
            own = DiskSpool.open(root / str(slot), max_bytes=max_bytes, segment_bytes=segment_bytes)
            break
        except SpoolLocked:
            continue
    if own is None:
        raise SpoolLocked(f"spool {root}: all {MAX_SLOTS} slots are in use")
    adopted: list[DiskSpool] = []
    for other in _slot_dirs(root):
        if other == own.directory:
            continue
        try:
            spool = DiskSpool.open(other, max_bytes=max_bytes, segment_bytes=segment_bytes)
        except SpoolLocked:
            continue  # its process is alive
        except (SpoolError, ConfigError) as exc:
            logger.error("cannot adopt the orphaned audit spool %s: %s", other, exc)
            continue
        if spool.pending:
            adopted.append(spool)
        else:
            spool.close()
    return own, adopted


def _slot_dirs(root: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        if name.isdigit() and (root / name).is_dir():
            yield root / name
