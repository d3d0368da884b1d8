"""Settings of the ledger side: where Kafka and PostgreSQL are, and the signing key.

Read at the edge (the CLI) from options and environment; everything else is
handed explicit values. The signing key is held in a ``SigningKey`` whose
``repr`` hides the secret, and DSNs are shown only through :func:`redact_dsn`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from baldur_audit.producers.trail import DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
from baldur_audit.schemas.chain import MIN_KEY_BYTES, SigningKey
from baldur_audit.schemas.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_DSN = "postgresql://baldur:baldur-local@127.0.0.1:25432/baldur_audit"
DEFAULT_GROUP = "baldur-audit-chainer"
KEY_ENV = "BALDUR_SECRETS_AUDIT_SIGNING_KEY"
DEV_KEY_FILE = "dev-signing-key"
UNPARSABLE_DSN = "<unparsable dsn>"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where the services are and which ledger this is."""

    bootstrap: str = DEFAULT_BOOTSTRAP
    topic: str = DEFAULT_TOPIC
    dsn: str = DEFAULT_DSN
    group: str = DEFAULT_GROUP
    ledger_id: str | None = None

    @property
    def effective_ledger_id(self) -> str:
        """The ledger identity bound by the genesis link (defaults to one derived from the topic)."""
        return self.ledger_id or f"baldur-audit:{self.topic}"

    def __repr__(self) -> str:
        return (f"Settings(bootstrap={self.bootstrap!r}, topic={self.topic!r}, "
                f"dsn={redact_dsn(self.dsn)!r}, group={self.group!r})")


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (safe to log or print)."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN: show nothing of it
        return UNPARSABLE_DSN
    if "password" in params:
        params["password"] = "***"  # noqa: S105 (the mask, not a password)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def dsn_password(dsn: str) -> str | None:
    """The password inside ``dsn``, if any, so that error messages can be scrubbed of it."""
    try:
        value = conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
    return str(value) if value else None


def scrub(text: str, *secrets_: str | bytes | None) -> str:
    """``text`` with every given secret (and its hex form) replaced by ``***``."""
    for secret in secrets_:
        if not secret:
            continue
        forms = [secret] if isinstance(secret, str) else [secret.hex()]
        if isinstance(secret, bytes):
            try:
                forms.append(secret.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        for form in forms:
            if len(form) >= 4:
                text = text.replace(form, "***")
    return text


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
        raise ConfigError(f"{KEY_ENV} is malformed (expected hex:…, base64:… or raw text)") from None
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(f"{KEY_ENV} must hold at least {MIN_KEY_BYTES} bytes of key material, "
                          f"found {len(secret)}")
    return secret


def state_dir(environ: Mapping[str, str]) -> Path:
    """The local state folder: ``$BALDUR_STATE_DIR``, else ``$XDG_STATE_HOME/baldur-audit``."""
    if environ.get("BALDUR_STATE_DIR"):
        return Path(environ["BALDUR_STATE_DIR"])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "baldur-audit"


def load_signing_key(environ: Mapping[str, str] | None = None) -> SigningKey:
    """The chain's signing key from ``BALDUR_SECRETS_AUDIT_SIGNING_KEY``.

    With ``BALDUR_ENV=production`` a missing key is a :class:`ConfigError`;
    otherwise a development key is generated once into the state folder (mode
    0600) and a warning says so. Never logs key material.
    """
    environ = os.environ if environ is None else environ
    configured = environ.get(KEY_ENV, "")
    if configured.strip():
        return SigningKey.derive(parse_key(configured))
    if environ.get("BALDUR_ENV", "").strip().lower() == "production":
        raise ConfigError(f"{KEY_ENV} is not set: refusing to start in production without "
                          "the chain signing key")
    path = state_dir(environ) / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("hex:" + secrets.token_hex(32) + "\n")
    key = SigningKey.derive(parse_key(path.read_text(encoding="utf-8")))
    log.warning("%s is not set: using the development signing key %s from %s "
                "(never do this in production)", KEY_ENV, key.key_id, path)
    return key
