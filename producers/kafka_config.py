"""The Kafka client configuration file shared by every client of the project.

One librdkafka properties file (``BALDUR_KAFKA_CONFIG``, or ``--kafka-config`` on the command
line) holds how to reach a secured cluster: ``security.protocol``, ``sasl.mechanism``,
``sasl.username``, ``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``,
``ssl.key.location`` and any other librdkafka setting. The producer library, the chainer,
replay, status, the witness, topic admin, the identities reader and ``emit`` all read the same
file, so a team writes its credentials once.

Format: one ``name=value`` per line (``name: value`` also works, as in Java properties files);
blank lines and lines starting with ``#`` or ``!`` are comments; white space around names and
values is dropped. Settings that each client must own (the bootstrap servers, group,
commit and delivery-guarantee settings) are refused in the file. Errors name the file and the
line number, never a line's text, since a line may hold a password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from baldur_audit.schemas.errors import ConfigError

from .redact import is_sensitive_key

__all__ = [
    "CONFIG_ENV",
    "OWNED_BY_CLIENTS",
    "client_config_secrets",
    "load_client_config",
    "scrub_client_secrets",
]

#: The environment variable naming the file.
CONFIG_ENV = "BALDUR_KAFKA_CONFIG"
#: Settings a client of the project sets itself: a shared file must not change them.
OWNED_BY_CLIENTS = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "group.id",
        "group.instance.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "isolation.level",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "transactional.id",
        "enable.partition.eof",
        "error_cb",
        "stats_cb",
        "throttle_cb",
        "oauth_cb",
        "on_delivery",
        "dr_cb",
        "dr_msg_cb",
        "delivery.report.only.error",
        "logger",
    }
)
_MAX_BYTES = 1 << 20
# Setting names whose values are secret even though the key-name rule misses them.
_SECRET_PARTS = ("pem", "key", "oauthbearer", "jaas", "password", "secret")


def is_secret_client_setting(name: str) -> bool:
    """Whether the value of librdkafka setting ``name`` must never be shown."""
    return is_sensitive_key(name) or any(part in name for part in _SECRET_PARTS)


def load_client_config(path: str | os.PathLike[str]) -> dict[str, str]:
    """The settings of the properties file at ``path``; raises :class:`ConfigError`."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as handle:
            raw = handle.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"Kafka client configuration {where}: cannot read it ({exc.strerror})") from None
    if len(raw) > _MAX_BYTES:
        raise ConfigError(f"Kafka client configuration {where}: larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"Kafka client configuration {where}: not UTF-8 text") from None
    return parse_client_config(text, where=where)


def parse_client_config(text: str, *, where: str = "Kafka client configuration") -> dict[str, str]:
    """The settings of a properties text (see the module docstring); raises :class:`ConfigError`."""
    settings: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        cuts = [index for index in (stripped.find("="), stripped.find(":")) if index > 0]
        if not cuts:
            raise ConfigError(f"{where}: line {number}: expected name=value")
        cut = min(cuts)
        name, value = stripped[:cut].strip(), stripped[cut + 1 :].strip()
        if not name or any(ch.isspace() for ch in name) or not name.isascii():
            raise ConfigError(f"{where}: line {number}: not a setting name")
        if name in OWNED_BY_CLIENTS:
            servers = "servers" in name or "broker" in name
            hint = " (use BALDUR_KAFKA_BOOTSTRAP or --bootstrap)" if servers else ""
            raise ConfigError(f"{where}: line {number}: {name} is set by baldur-audit itself{hint}")
        if name in settings:
            raise ConfigError(f"{where}: line {number}: {name} is set twice")
        settings[name] = value
    return settings


def client_config_secrets(settings: Mapping[str, Any]) -> list[str]:
    """The values of the secret settings, for scrubbing messages."""
    return [
        value
        for name, value in settings.items()
        if isinstance(value, str) and value and is_secret_client_setting(str(name))
    ]


def scrub_client_secrets(text: str, settings: Mapping[str, Any] | None, marker: str = "***") -> str:
    """``text`` with the value of every secret setting of ``settings`` replaced by ``marker``."""
    for secret in client_config_secrets(settings or {}):
        text = text.replace(secret, marker)
    return text
