"""Settings of the ledger side: every ``BALDUR_*`` variable it reads, its default and its
parsing — the README's configuration table, in code.

Read once, at the edge: the CLI builds one :class:`Settings` from its options and the
environment (:meth:`Settings.from_env`); everything below it is handed values. A value is
parsed when it is first asked for, so a malformed variable fails only the commands that need
it, with a :class:`ConfigError` that names the variable and never echoes a secret. Secrets
(keys) stay out of ``repr`` and are listed by :meth:`Settings.secrets` for scrubbing.
The producer library reads its own variables (``producers/trail.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from baldur_audit.producers.kafka_config import CONFIG_ENV, client_config_secrets, load_client_config
from baldur_audit.schemas.checkpoint import default_origin, is_valid_name
from baldur_audit.schemas.defaults import DEFAULT_BOOTSTRAP, DEFAULT_DSN, DEFAULT_GROUP, DEFAULT_TOPIC
from baldur_audit.schemas.errors import ConfigError

from .times import parse_duration

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_DSN",
    "DEFAULT_GROUP",
    "DEFAULT_TOPIC",
    "VARIABLES",
    "Settings",
    "Variable",
    "scrub",
]

# -- the variables ------------------------------------------------------------------------------

BOOTSTRAP_ENV = "BALDUR_KAFKA_BOOTSTRAP"
TOPIC_ENV = "BALDUR_AUDIT_TOPIC"
DSN_ENV = "BALDUR_SQL_DSN"
GROUP_ENV = "BALDUR_CHAINER_GROUP"
LEDGER_ID_ENV = "BALDUR_LEDGER_ID"
ENV_ENV = "BALDUR_ENV"
STATE_DIR_ENV = "BALDUR_STATE_DIR"
SIGNING_KEY_ENV = "BALDUR_SECRETS_AUDIT_SIGNING_KEY"
OLD_KEYS_ENV = "BALDUR_SECRETS_AUDIT_OLD_KEYS"
RETIRED_IDS_ENV = "BALDUR_AUDIT_RETIRED_KEY_IDS"
EPOCH_ENV = "BALDUR_FORWARD_SECURE_EPOCH"
CHECKPOINT_KEY_ENV = "BALDUR_SECRETS_CHECKPOINT_KEY"
PUBLIC_KEYS_ENV = "BALDUR_CHECKPOINT_PUBLIC_KEYS"
EVERY_ENV = "BALDUR_CHECKPOINT_EVERY"
INTERVAL_ENV = "BALDUR_CHECKPOINT_INTERVAL"
WITNESS_TOPIC_ENV = "BALDUR_WITNESS_TOPIC"
CHECKPOINT_DIR_ENV = "BALDUR_CHECKPOINT_DIR"
ORIGIN_ENV = "BALDUR_CHECKPOINT_ORIGIN"
KAFKA_CONFIG_ENV = CONFIG_ENV  # BALDUR_KAFKA_CONFIG, shared with the producer library
METRICS_ADDRESS_ENV = "BALDUR_METRICS_ADDRESS"
LOG_FORMAT_ENV = "BALDUR_LOG_FORMAT"
READER_DSN_ENV = "BALDUR_SQL_READER_DSN"
VIEWER_TOKENS_ENV = "BALDUR_VIEWER_TOKENS"
TRACE_URL_ENV = "BALDUR_VIEWER_TRACE_URL"
RETENTION_ENV = "BALDUR_AUDIT_RETENTION"
RETENTION_MODE_ENV = "BALDUR_AUDIT_RETENTION_MODE"
OWNER_DSN_ENV = "BALDUR_SQL_OWNER_DSN"
CHAINER_ROLE_ENV = "BALDUR_SQL_CHAINER_ROLE"
READER_ROLE_ENV = "BALDUR_SQL_READER_ROLE"
OPERATOR_ROLE_ENV = "BALDUR_SQL_OPERATOR_ROLE"
ALLOW_OWNER_ENV = "BALDUR_ALLOW_OWNER_ROLE"
NATIVE_ENV = "BALDUR_NATIVE"


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable of the ledger side, as the README's configuration table lists it."""

    name: str
    flag: str | None = None
    secret: bool = False


#: Every variable the ledger side reads (the CLI flag that overrides it, if any).
VARIABLES: tuple[Variable, ...] = (
    Variable(BOOTSTRAP_ENV, "--bootstrap"),
    Variable(KAFKA_CONFIG_ENV, "--kafka-config"),  # the values of its secret settings are
    Variable(TOPIC_ENV, "--topic"),
    Variable(DSN_ENV, "--dsn", secret=True),  # its password is
    Variable(GROUP_ENV, "--group"),
    Variable(LEDGER_ID_ENV, "--ledger-id"),
    Variable(ENV_ENV),
    Variable(STATE_DIR_ENV),
    Variable(SIGNING_KEY_ENV, secret=True),
    Variable(OLD_KEYS_ENV, secret=True),
    Variable(RETIRED_IDS_ENV),
    Variable(EPOCH_ENV),
    Variable(CHECKPOINT_KEY_ENV, secret=True),
    Variable(PUBLIC_KEYS_ENV),
    Variable(EVERY_ENV),
    Variable(INTERVAL_ENV),
    Variable(WITNESS_TOPIC_ENV),
    Variable(CHECKPOINT_DIR_ENV),
    Variable(ORIGIN_ENV),
    Variable(METRICS_ADDRESS_ENV, "--metrics-address"),
    Variable(LOG_FORMAT_ENV, "--log-format"),
    Variable(READER_DSN_ENV, "--reader-dsn", secret=True),  # its password is
    Variable(VIEWER_TOKENS_ENV),
    Variable(TRACE_URL_ENV, "--trace-url"),
    Variable(RETENTION_ENV),
    Variable(RETENTION_MODE_ENV),
    Variable(OWNER_DSN_ENV, "--owner-dsn", secret=True),  # its password is
    Variable(CHAINER_ROLE_ENV, "--chainer-role"),
    Variable(READER_ROLE_ENV, "--reader-role"),
    Variable(OPERATOR_ROLE_ENV, "--operator-role"),
    Variable(ALLOW_OWNER_ENV),
    Variable(NATIVE_ENV),
)
#: Besides its own variables, the state folder's default follows the XDG base directories.
_ALSO_READ = ("XDG_STATE_HOME",)

DEFAULT_CHECKPOINT_EVERY = 10_000
DEFAULT_CHECKPOINT_INTERVAL = 30.0
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where the services are, which ledger this is, and the rest of the configuration.

    The service fields come from CLI options (which fall back to their variables); every
    other value is parsed from ``environ`` when asked for.
    """

    bootstrap: str = DEFAULT_BOOTSTRAP
    topic: str = DEFAULT_TOPIC
    dsn: str = field(default=DEFAULT_DSN, repr=False)
    group: str = DEFAULT_GROUP
    ledger_id: str | None = None
    kafka_config_file: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        bootstrap: str = DEFAULT_BOOTSTRAP,
        topic: str = DEFAULT_TOPIC,
        dsn: str = DEFAULT_DSN,
        group: str = DEFAULT_GROUP,
        ledger_id: str | None = None,
        kafka_config_file: str | None = None,
    ) -> Settings:
        """Settings from an environment (the process's, at the CLI's edge) and the service
        fields (the CLI's options); only the variables of :data:`VARIABLES` are kept."""
        names = {variable.name for variable in VARIABLES} | set(_ALSO_READ)
        return cls(
            bootstrap=bootstrap,
            topic=topic,
            dsn=dsn,
            group=group,
            ledger_id=ledger_id,
            kafka_config_file=kafka_config_file,
            environ={name: value for name, value in environ.items() if name in names},
        )

    def _text(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    @property
    def kafka_config(self) -> dict[str, str]:
        """The shared Kafka client settings of ``--kafka-config`` / ``BALDUR_KAFKA_CONFIG``
        (empty when unset); raises :class:`ConfigError` naming the file and line."""
        return load_client_config(self.kafka_config_file) if self.kafka_config_file else {}

    # -- identity -----------------------------------------------------------------------------

    @property
    def effective_ledger_id(self) -> str:
        """The ledger identity bound by the genesis link (defaults to one derived from the topic)."""
        return self.ledger_id or f"baldur-audit:{self.topic}"

    @property
    def production(self) -> bool:
        """``BALDUR_ENV=production``: missing keys abort instead of falling back to dev keys."""
        return self._text(ENV_ENV).lower() == "production"

    @property
    def state_dir(self) -> Path:
        """The local state folder: ``$BALDUR_STATE_DIR``, else ``$XDG_STATE_HOME/baldur-audit``."""
        if self.environ.get(STATE_DIR_ENV):
            return Path(self.environ[STATE_DIR_ENV])
        base = self.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "baldur-audit"

    # -- the chain's keys (chain_keys.py loads them) ---------------------------------------------

    @property
    def signing_key(self) -> str:
        """The configured chain signing key's text (secret; empty when unset)."""
        return self._text(SIGNING_KEY_ENV)

    @property
    def old_keys(self) -> str:
        """``BALDUR_SECRETS_AUDIT_OLD_KEYS``: older keys, comma-separated (secret)."""
        return self.environ.get(OLD_KEYS_ENV, "")

    @property
    def retired_key_ids(self) -> frozenset[str]:
        """The key ids of ``BALDUR_AUDIT_RETIRED_KEY_IDS``."""
        return frozenset(
            item.strip() for item in self.environ.get(RETIRED_IDS_ENV, "").split(",") if item.strip()
        )

    @property
    def epoch_entries(self) -> int | None:
        """N of ``BALDUR_FORWARD_SECURE_EPOCH`` (None: forward security off).

        Raises :class:`ConfigError` unless it is a whole number from 1 to 10**12.
        """
        text = self._text(EPOCH_ENV)
        if not text:
            return None
        if not text.isdigit() or not 1 <= int(text) <= 10**12:
            raise ConfigError(f"{EPOCH_ENV} must be a whole number of entries per epoch (1 or more)")
        return int(text)

    # -- checkpoints (checkpoint_keys.py loads the keys) -----------------------------------------

    @property
    def checkpoint_keys(self) -> list[str]:
        """The items of ``BALDUR_SECRETS_CHECKPOINT_KEY`` (secret)."""
        return split_keys(self.environ.get(CHECKPOINT_KEY_ENV, ""))

    @property
    def checkpoint_public_keys(self) -> list[str]:
        """The items of ``BALDUR_CHECKPOINT_PUBLIC_KEYS``."""
        return split_keys(self.environ.get(PUBLIC_KEYS_ENV, ""))

    @property
    def checkpoint_origin(self) -> str:
        """``$BALDUR_CHECKPOINT_ORIGIN``, else ``baldur-audit/<ledger id>``; raises ConfigError."""
        configured = self._text(ORIGIN_ENV)
        if not configured:
            return default_origin(self.effective_ledger_id)
        if not is_valid_name(configured):
            raise ConfigError(f"{ORIGIN_ENV} must be non-empty, without spaces, '+' or control characters")
        return configured

    @property
    def checkpoint_every(self) -> int:
        """Checkpoint after this many new entries (0: by time only); raises ConfigError."""
        every = _number(self.environ, EVERY_ENV, DEFAULT_CHECKPOINT_EVERY)
        if every != int(every):
            raise ConfigError(f"{EVERY_ENV} must be a whole number of entries")
        return int(every)

    @property
    def checkpoint_interval(self) -> float:
        """Checkpoint after this many seconds with new entries (0: by count only)."""
        return _number(self.environ, INTERVAL_ENV, DEFAULT_CHECKPOINT_INTERVAL)

    @property
    def witness_topic(self) -> str:
        """``$BALDUR_WITNESS_TOPIC``, else ``<ledger topic>.checkpoints``."""
        return self._text(WITNESS_TOPIC_ENV) or f"{self.topic}.checkpoints"

    @property
    def checkpoint_dir(self) -> Path | None:
        """``$BALDUR_CHECKPOINT_DIR``: also write each checkpoint there (None: unset)."""
        folder = self._text(CHECKPOINT_DIR_ENV)
        return Path(folder) if folder else None

    # -- retention (retention_schedule.py applies it in the chainer) ------------------------------

    @property
    def retention(self) -> timedelta | None:
        """``BALDUR_AUDIT_RETENTION`` (``400d``, ``12w``, ``36h``...): how long entries are kept
        whole; None (unset): forever. Raises :class:`ConfigError` naming the variable."""
        text = self._text(RETENTION_ENV)
        if not text:
            return None
        try:
            period = parse_duration(text)
        except ConfigError as exc:
            raise ConfigError(f"{RETENTION_ENV}: {exc}") from None
        if period <= timedelta(0):
            raise ConfigError(f"{RETENTION_ENV} must be longer than 0 (unset it to keep entries forever)")
        return period

    @property
    def retention_mode(self) -> str:
        """``BALDUR_AUDIT_RETENTION_MODE``: ``payload`` (default: drop payloads and personal
        fields, keep the entries) or ``entries`` (drop the entries behind a signed anchor)."""
        mode = self._text(RETENTION_MODE_ENV).lower() or "payload"
        if mode not in ("payload", "entries"):
            raise ConfigError(f"{RETENTION_MODE_ENV} must be payload or entries, found {mode[:20]!r}")
        return mode

    # -- least privilege (postgres/privileges.py) -------------------------------------------------

    @property
    def allow_owner_role(self) -> bool:
        """``BALDUR_ALLOW_OWNER_ROLE=true``: break-glass, a long-running process may run as a
        superuser or the ledger's owner in production (it warns on every start). Raises
        :class:`ConfigError` unless it is true or false."""
        text = self._text(ALLOW_OWNER_ENV).lower()
        if text in ("", "false", "0", "no"):
            return False
        if text in ("true", "1", "yes"):
            return True
        raise ConfigError(f"{ALLOW_OWNER_ENV} must be true or false, found {text[:20]!r}")

    def native(self) -> bool:
        """``BALDUR_NATIVE``: ``auto`` (the default) uses the native accelerator when it is
        installed, ``off`` the pure-Python reference path. Raises :class:`ConfigError` for
        another value."""
        text = self._text(NATIVE_ENV).lower()
        if text in ("", "auto"):
            return True
        if text == "off":
            return False
        raise ConfigError(f"{NATIVE_ENV} must be auto or off, found {text[:20]!r}")

    # -- what must never be shown -----------------------------------------------------------------

    def secrets(self) -> list[str]:
        """Every configured key text, whole and item by item, for scrubbing messages."""
        found: list[str] = []
        for variable in VARIABLES:
            raw = self.environ.get(variable.name)
            if variable.secret and variable.name != DSN_ENV and raw:
                found.extend([raw.strip(), *split_keys(raw)])
        try:
            found.extend(client_config_secrets(self.kafka_config))
        except ConfigError:
            pass  # an unreadable file holds no secret this process has seen
        return found


def split_keys(text: str) -> list[str]:
    """The items of a list of keys separated by commas or white space."""
    return [part for part in _SEPARATORS.split(text.strip()) if part]


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, found {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise ConfigError(f"{name} must be a finite number >= 0")
    return value


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
