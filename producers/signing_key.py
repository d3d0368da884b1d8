"""The chain signing key from its configured text, and the development key of the state folder.

Shared by the ledger side (``consumers/chain_keys.py``) and the producer's local file chain
(:mod:`.filechain`), so that both seal under the same key and key id (CHAIN.md §3). Reads
files, never the environment: callers pass the configured text and the state folder.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from baldur_audit.schemas.chain import MIN_KEY_BYTES, SigningKey
from baldur_audit.schemas.errors import ConfigError

log = logging.getLogger(__name__)

SIGNING_KEY_ENV = "BALDUR_SECRETS_AUDIT_SIGNING_KEY"
DEV_KEY_FILE = "dev-signing-key"


def parse_key(text: str) -> bytes:
    """Key material from its configured form: ``hex:…``, ``base64:…``, or the raw text.

    Raises :class:`ConfigError` (never echoing the value) if it is malformed or
    shorter than 32 bytes.
    """
    text = text.strip()
    try:
        if text.startswith("hex:"):
            secret = bytes.fromhex(text[4:])
        elif text.startswith("base64:"):
            secret = base64.b64decode(text[7:], validate=True)
        else:
            secret = text.encode("utf-8")
    except (ValueError, binascii.Error):
        raise ConfigError(f"{SIGNING_KEY_ENV} is malformed (expected hex:…, base64:… or raw text)") from None
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{SIGNING_KEY_ENV} must hold at least {MIN_KEY_BYTES} bytes of key material, found {len(secret)}"
        )
    return secret


def dev_signing_key(state_dir: Path) -> SigningKey:
    """The development key of ``state_dir``, generated there once (mode 0600) if absent.

    Logs a warning naming the key id (never the key). Raises :class:`ConfigError` when the
    file holds no valid key, ``OSError`` when it cannot be created.
    """
    path = state_dir / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it meanwhile: use theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write("hex:" + secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
    key = SigningKey.derive(parse_key(path.read_text(encoding="utf-8")))
    log.warning(
        "%s is not set: using the development signing key %s from %s (never do this in production)",
        SIGNING_KEY_ENV,
        key.key_id,
        path,
    )
    return key


def state_dir_of(environ: Mapping[str, str]) -> Path:
    """``$BALDUR_STATE_DIR``, else ``$XDG_STATE_HOME/baldur-audit`` (the ledger side's rule)."""
    if environ.get("BALDUR_STATE_DIR"):
        return Path(environ["BALDUR_STATE_DIR"])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "baldur-audit"


def signing_key_from_env(environ: Mapping[str, str]) -> SigningKey:
    """The key of ``BALDUR_SECRETS_AUDIT_SIGNING_KEY``; without it, the state folder's
    development key, refused (:class:`ConfigError`) with ``BALDUR_ENV=production``."""
    text = environ.get(SIGNING_KEY_ENV, "")
    if text.strip():
        return SigningKey.derive(parse_key(text))
    if environ.get("BALDUR_ENV", "").strip().lower() == "production":
        raise ConfigError(
            f"{SIGNING_KEY_ENV} is not set: refusing to start in production without the chain signing key"
        )
    return dev_signing_key(state_dir_of(environ))
