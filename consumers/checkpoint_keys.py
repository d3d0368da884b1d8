"""Checkpoint signing and verifier keys from the settings (never echoed, never logged).

``BALDUR_SECRETS_CHECKPOINT_KEY`` holds one or more Ed25519 keys that sign (a 32-byte seed
written ``hex:``/``base64:``, named by the checkpoint origin, or a sumdb ``PRIVATE+KEY+…``
note key); ``BALDUR_CHECKPOINT_PUBLIC_KEYS`` the verifier keys of earlier or other signers.
Without a key, outside production, a development key is generated once into the state folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from baldur_audit.schemas.checkpoint import (
    CheckpointSigner,
    VerifierKey,
    load_seed,
    parse_verifier_key,
)
from baldur_audit.schemas.errors import ConfigError

from .settings import CHECKPOINT_KEY_ENV, PUBLIC_KEYS_ENV, Settings, split_keys

log = logging.getLogger(__name__)

DEV_CHECKPOINT_KEY_FILE = "dev-checkpoint-key"


@dataclass(frozen=True, slots=True)
class CheckpointKeys:
    """The origin of a ledger's checkpoints, the keys that sign them (none for a verifier)
    and every verifier key accepted (the signers' own first, then configured public ones)."""

    origin: str
    signers: tuple[CheckpointSigner, ...]
    verifiers: tuple[VerifierKey, ...]

    def require_signer(self) -> None:
        """Raise :class:`ConfigError` unless a signing key is configured."""
        if not self.signers:
            raise ConfigError(f"{CHECKPOINT_KEY_ENV} is not set: no checkpoint signing key")


def _signer(text: str, origin: str) -> CheckpointSigner:
    try:
        if text.startswith("PRIVATE+KEY+"):
            return CheckpointSigner.from_note_key(text)
        return CheckpointSigner.from_seed(origin, load_seed(text))
    except ConfigError as exc:  # the messages never echo the key
        raise ConfigError(f"{CHECKPOINT_KEY_ENV}: {exc}") from None


def load_checkpoint_keys(settings: Settings, *, signing: bool) -> CheckpointKeys:
    """The checkpoint keys of the ledger's origin from ``BALDUR_SECRETS_CHECKPOINT_KEY`` (one or
    more ``hex:``/``base64:`` Ed25519 seeds or ``PRIVATE+KEY+…`` note keys, comma-separated:
    all sign) and ``BALDUR_CHECKPOINT_PUBLIC_KEYS`` (verifier keys of earlier or other signers).

    Without a configured key: with ``BALDUR_ENV=production`` and ``signing`` a
    :class:`ConfigError`; otherwise the development key of the state folder, generated
    (mode 0600) only when ``signing``. Never logs or echoes key material.
    """
    origin = settings.checkpoint_origin
    signers: list[CheckpointSigner] = [_signer(part, origin) for part in settings.checkpoint_keys]
    if not signers:
        if settings.production and signing:
            raise ConfigError(
                f"{CHECKPOINT_KEY_ENV} is not set: refusing to sign checkpoints "
                "in production without the checkpoint signing key"
            )
        if not settings.production:
            dev = _dev_signer(settings.state_dir / DEV_CHECKPOINT_KEY_FILE, origin, create=signing)
            if dev is not None:
                signers.append(dev)
                if signing:
                    log.warning(
                        "%s is not set: using the development checkpoint key %s from %s "
                        "(never do this in production)",
                        CHECKPOINT_KEY_ENV,
                        dev.verifier().label,
                        settings.state_dir,
                    )
    verifiers: list[VerifierKey] = [signer.verifier() for signer in signers]
    for text in settings.checkpoint_public_keys:
        try:
            key = parse_verifier_key(text)
        except ConfigError as exc:
            raise ConfigError(f"{PUBLIC_KEYS_ENV}: {exc}") from None
        if key not in verifiers:
            verifiers.append(key)
    return CheckpointKeys(origin=origin, signers=tuple(signers), verifiers=tuple(verifiers))


def _dev_signer(path: Path, origin: str, *, create: bool) -> CheckpointSigner | None:
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write("hex:" + os.urandom(32).hex() + "\n")
    try:
        return CheckpointSigner.from_seed(origin, load_seed(path.read_text(encoding="utf-8")))
    except ConfigError:
        raise ConfigError(f"the development checkpoint key in {path} is malformed") from None


def read_verifier_keys(text: str, where: str) -> list[VerifierKey]:
    """Verifier keys from a file's text: one per line (or comma-separated), ``#`` comments
    and blank lines ignored. Raises :class:`ConfigError` naming ``where``."""
    keys: list[VerifierKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for part in split_keys(line.split("#", 1)[0]):
            try:
                keys.append(parse_verifier_key(part))
            except ConfigError as exc:
                raise ConfigError(f"{where} line {number}: {exc}") from None
    if not keys:
        raise ConfigError(f"{where} holds no verifier key")
    return keys
