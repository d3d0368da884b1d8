"""The file chain's settings from ``BALDUR_*`` variables (read by ``AuditTrail.from_env``).

- ``BALDUR_AUDIT_FILE_DIR``: the chain's folder (default ``chain`` in the state folder);
- ``BALDUR_AUDIT_FILE_SYNC``: ``always`` (default; fsync before ``record()`` returns) or
  ``group`` (fsync every few ms by a background thread);
- ``BALDUR_AUDIT_RETENTION``: e.g. ``400d``; unset keeps everything. Whole segments older
  than this are dropped behind an anchor (:mod:`.retention`);
- the signing key as the ledger's (``BALDUR_SECRETS_AUDIT_SIGNING_KEY``, or the development
  key of the state folder).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from baldur_audit.schemas.errors import ConfigError

from ..signing_key import signing_key_from_env, state_dir_of
from .writer import SYNC_MODES, FileChainWriter

DIR_ENV = "BALDUR_AUDIT_FILE_DIR"
SYNC_ENV = "BALDUR_AUDIT_FILE_SYNC"
RETENTION_ENV = "BALDUR_AUDIT_RETENTION"
DISTRIBUTED_ENV = "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN"

_DURATION = re.compile(r"(\d+)(s|m|h|d|w)")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_retention_ms(text: str) -> int | None:
    """``400d``, ``12h``, ``1w2d`` … in ms (the grammar of the CLI's durations); blank: None.

    Raises :class:`ConfigError`."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        return None
    parts = _DURATION.findall(compact)
    if "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"{RETENTION_ENV}: not a duration: {text[:40]!r} (use e.g. 400d, 12h)")
    total = sum(int(number) * _UNIT_MS[unit] for number, unit in parts)
    if total <= 0:
        raise ConfigError(f"{RETENTION_ENV}: expected a positive duration, found {text[:40]!r}")
    return total


def chain_dir_of(environ: Mapping[str, str]) -> Path:
    """``$BALDUR_AUDIT_FILE_DIR``, else ``chain`` in the state folder."""
    text = (environ.get(DIR_ENV) or "").strip()
    return Path(text) if text else state_dir_of(environ) / "chain"


def open_from_env(environ: Mapping[str, str], *, topic: str) -> FileChainWriter:
    """A writer on the configured chain; raises :class:`ConfigError` (bad value, unusable
    folder, damaged chain)."""
    sync = (environ.get(SYNC_ENV) or "always").strip().lower()
    if sync not in SYNC_MODES:
        raise ConfigError(f"{SYNC_ENV}: expected one of {', '.join(SYNC_MODES)}, found {sync[:20]!r}")
    retention_ms = parse_retention_ms(environ.get(RETENTION_ENV) or "")
    key = signing_key_from_env(environ)
    directory = chain_dir_of(environ)
    try:
        return FileChainWriter(directory, key=key, topic=topic, sync=sync, retention_ms=retention_ms)
    except OSError as exc:
        raise ConfigError(f"file chain {directory}: {exc.strerror or exc}") from None
