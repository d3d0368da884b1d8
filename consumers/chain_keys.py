"""The chain's HMAC keys from the settings: the signing key, the keyring for rotation, and
the forward-secure ratchet state of the chainer.

Variables (``settings.py``):

- ``BALDUR_SECRETS_AUDIT_SIGNING_KEY``: the current key (rotation), or, with forward
  security, the *initial* key ``K_0`` (escrowed; a chainer needs it only on its first
  start, verifiers always);
- ``BALDUR_SECRETS_AUDIT_OLD_KEYS``: comma-separated older keys (same ``hex:``/``base64:``/
  raw forms) so that entries sealed before a rotation keep verifying;
- ``BALDUR_AUDIT_RETIRED_KEY_IDS``: comma-separated key *ids* (public) the chain may have
  been sealed with before the current key: lets a chainer take over after a rotation
  without holding the old secret;
- ``BALDUR_FORWARD_SECURE_EPOCH``: N entries per epoch; enables the ratchet (CHAIN.md §16).

The signing key is held in a ``SigningKey`` whose ``repr`` hides the secret. Without a
configured key (and not in production) a development key is generated once into the state
folder. The chainer's ratchet state lives in ``<state dir>/ratchet-state.json`` (mode 0600).
It is rewritten atomically (temporary file, fsync, rename, fsync of the folder) once a batch
in a new epoch is committed, so the previous epoch's key is no longer on disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baldur_audit.producers.signing_key import dev_signing_key, parse_key
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.keys import EpochRatchet, Keyring, epoch_keys, epoch_of

from .files import durable_write
from .settings import EPOCH_ENV, OLD_KEYS_ENV, RETIRED_IDS_ENV, SIGNING_KEY_ENV, Settings

log = logging.getLogger(__name__)

RATCHET_FILE = "ratchet-state.json"
STATE_VERSION = 1
#: Epoch keys derived for ``verify`` beyond the head it saw first, so that entries the
#: chainer appends before verify's snapshot still find their key (HKDF is cheap).
VERIFY_MARGIN_EPOCHS = 1000


def load_signing_key(settings: Settings) -> SigningKey:
    """The chain's signing key from ``BALDUR_SECRETS_AUDIT_SIGNING_KEY``.

    With ``BALDUR_ENV=production`` a missing key is a :class:`ConfigError`;
    otherwise a development key is generated once into the state folder (mode
    0600) and a warning says so. Never logs key material.
    """
    if settings.signing_key:
        return SigningKey.derive(parse_key(settings.signing_key))
    if settings.production:
        raise ConfigError(
            f"{SIGNING_KEY_ENV} is not set: refusing to start in production without the chain signing key"
        )
    return dev_signing_key(settings.state_dir)


def parse_old_keys(text: str) -> list[SigningKey]:
    """The keys of ``BALDUR_SECRETS_AUDIT_OLD_KEYS`` (empty items ignored).

    Raises :class:`ConfigError` naming the item's position, never its value.
    """
    keys = []
    for position, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        try:
            keys.append(SigningKey.derive(parse_key(item)))
        except ConfigError:
            raise ConfigError(
                f"{OLD_KEYS_ENV}: item {position} is not a valid key (expected "
                f"hex:…, base64:… or raw text of at least 32 bytes)"
            ) from None
    return keys


def load_keyring(settings: Settings) -> Keyring:
    """The configured keyring: the signing key as current, plus the old keys.

    Raises :class:`ConfigError` (production without a key, malformed keys).
    """
    return Keyring(load_signing_key(settings), parse_old_keys(settings.old_keys))


def verification_keys(ring: Keyring, *, epoch_n: int | None, last_seq: int) -> Mapping[str, SigningKey]:
    """What ``verify`` takes: the ring, plus, with forward security, every epoch key up to
    ``last_seq``'s (and :data:`VERIFY_MARGIN_EPOCHS` more) derived from the ring's current
    key (the escrowed ``K_0``)."""
    keys = dict(ring)
    if epoch_n is not None:
        reach = last_seq + VERIFY_MARGIN_EPOCHS * epoch_n
        keys.update(
            {key.key_id: key for key in epoch_keys(ring.current, epoch_entries=epoch_n, last_seq=reach)}
        )
    return keys


def genesis_key(ring: Keyring, genesis_key_id: str | None) -> SigningKey:
    """The key ``init`` binds (a new ledger, ``genesis_key_id`` None: the current key) or
    validates the ledger with (an existing one: its genesis key, which may be an old key
    after a rotation).

    Raises :class:`ConfigError` when the existing ledger's genesis key is not in the ring.
    """
    if genesis_key_id is None:
        return ring.current
    if genesis_key_id not in ring:
        raise ConfigError(
            f"the configured signing key {ring.current.key_id} is not this "
            f"ledger's key {genesis_key_id}; after a rotation, `init` needs the "
            f"genesis key in {OLD_KEYS_ENV}"
        )
    return ring[genesis_key_id]


# -- the chainer's keys ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotatingChainKeys:
    """Rotation: every new entry is sealed with the current key."""

    ring: Keyring
    retired_ids: frozenset[str]

    def check(self, *, genesis_key_id: str, last_key_id: str | None) -> None:
        """Refuse a key that neither continues the chain nor follows a declared rotation.

        The chain continues from the newest entry's key (the genesis key before any entry):
        the current key may be it, or replace it when that key is in the ring or its id is
        listed in ``BALDUR_AUDIT_RETIRED_KEY_IDS``. Raises :class:`ConfigError`.
        """
        previous = last_key_id or genesis_key_id
        current = self.ring.current.key_id
        if previous == current or previous in self.ring or previous in self.retired_ids:
            return
        raise ConfigError(
            f"the configured signing key {current} is not this ledger's key "
            f"{previous}; to rotate, list {previous} in {RETIRED_IDS_ENV} "
            f"(or its key in {OLD_KEYS_ENV})"
        )

    @property
    def current(self) -> SigningKey:
        """The key new entries are sealed with."""
        return self.ring.current

    def key_for(self, seq: int) -> SigningKey:
        """The current key."""
        return self.ring.current

    def committed(self, head_seq: int) -> None:
        """Nothing to persist."""


class RatchetState:
    """The chainer's forward-secure state file: one epoch key, and which ledger it serves."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[str, EpochRatchet] | None:
        """``(initial key id, ratchet)``, or None if there is no state file yet.

        Raises :class:`ConfigError` for an unreadable or inconsistent file (content never shown).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the ratchet state {self.path}: {exc.strerror}") from None
        try:
            state: dict[str, Any] = json.loads(text)
            if state.get("version") != STATE_VERSION:
                raise ValueError("version")
            key = SigningKey.derive(bytes.fromhex(state["key_hex"]))
            if key.key_id != state["key_id"]:
                raise ValueError("key id")
            ratchet = EpochRatchet(key, epoch=int(state["epoch"]), epoch_entries=int(state["epoch_entries"]))
            return str(state["initial_key_id"]), ratchet
        except (ValueError, KeyError, TypeError, ConfigError):
            raise ConfigError(f"the ratchet state {self.path} is malformed") from None

    def save(self, initial_key_id: str, ratchet: EpochRatchet) -> None:
        """Replace the state atomically and durably (0600; the old epoch key is overwritten)."""
        body = json.dumps(
            {
                "version": STATE_VERSION,
                "initial_key_id": initial_key_id,
                "epoch_entries": ratchet.epoch_entries,
                "epoch": ratchet.epoch,
                "key_id": ratchet.key.key_id,
                "key_hex": ratchet.key.secret.hex(),
            }
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable_write(self.path, body.encode("utf-8"), mode=0o600, replace=True)
        except OSError as exc:
            raise ConfigError(f"cannot write the ratchet state {self.path}: {exc.strerror}") from None


class ForwardSecureChainKeys:
    """Forward security for the chainer: seals entry ``seq`` with its epoch's key.

    ``committed(head_seq)`` (after each database commit) ratchets the persisted state to
    the epoch of the next entry, so an uncommitted batch can always be resealed after a
    crash, and no committed epoch's key stays on disk.
    """

    def __init__(self, state: RatchetState, *, initial_key_id: str, ratchet: EpochRatchet) -> None:
        self._state = state
        self.initial_key_id = initial_key_id
        self._committed = ratchet
        self._working = EpochRatchet(ratchet.key, epoch=ratchet.epoch, epoch_entries=ratchet.epoch_entries)

    @classmethod
    def open(cls, state_path: Path, *, epoch_n: int, initial: SigningKey | None) -> ForwardSecureChainKeys:
        """The chainer's keys from its state file, created from ``initial`` (K_0) on the first
        start. Raises :class:`ConfigError` when there is neither, or N differs from the file's."""
        state = RatchetState(state_path)
        loaded = state.load()
        if loaded is None:
            if initial is None:
                raise ConfigError(
                    f"forward security: no ratchet state at {state_path} and no "
                    f"initial key in {SIGNING_KEY_ENV}"
                )
            ratchet = EpochRatchet(initial, epoch=0, epoch_entries=epoch_n)
            state.save(initial.key_id, ratchet)
            log.warning(
                "forward security: ratchet state created at %s (epoch 0, key %s); "
                "escrow the initial key and remove it from the chainer's environment",
                state_path,
                initial.key_id,
            )
            return cls(state, initial_key_id=initial.key_id, ratchet=ratchet)
        initial_id, ratchet = loaded
        if ratchet.epoch_entries != epoch_n:
            raise ConfigError(
                f"{EPOCH_ENV}={epoch_n}, but the ratchet state was made with "
                f"{ratchet.epoch_entries} entries per epoch"
            )
        return cls(state, initial_key_id=initial_id, ratchet=ratchet)

    @property
    def current(self) -> SigningKey:
        """The persisted epoch's key."""
        return self._committed.key

    @property
    def epoch(self) -> int:
        """The epoch whose key is persisted."""
        return self._committed.epoch

    def check(self, *, genesis_key_id: str, last_key_id: str | None) -> None:
        """Refuse a ratchet that did not start from this ledger's genesis key (ConfigError)."""
        if genesis_key_id != self.initial_key_id:
            raise ConfigError(
                f"the ratchet state starts from key {self.initial_key_id}, not "
                f"this ledger's genesis key {genesis_key_id}"
            )

    def key_for(self, seq: int) -> SigningKey:
        """Entry ``seq``'s epoch key; ConfigError if that epoch's key is already erased."""
        epoch = epoch_of(seq, self._committed.epoch_entries)
        if epoch < self._working.epoch:  # a batch was resealed after a failed commit
            self._working = EpochRatchet(
                self._committed.key, epoch=self._committed.epoch, epoch_entries=self._committed.epoch_entries
            )
        if epoch < self._committed.epoch:
            raise ConfigError(
                f"entry {seq} belongs to epoch {epoch}, whose key this chainer "
                f"erased (its ratchet is at epoch {self._committed.epoch}); was "
                "the ledger restored from an older backup?"
            )
        return self._working.advance_to(epoch)

    def committed(self, head_seq: int) -> None:
        """Entries up to ``head_seq`` are committed: persist the next entry's epoch key."""
        epoch = epoch_of(head_seq + 1, self._committed.epoch_entries)
        if epoch <= self._committed.epoch:
            return
        self._committed.advance_to(epoch)
        self._state.save(self.initial_key_id, self._committed)
        log.info("forward security: ratchet advanced to epoch %d (key %s)", epoch, self._committed.key.key_id)


ChainKeys = RotatingChainKeys | ForwardSecureChainKeys


def load_chain_keys(settings: Settings) -> ChainKeys:
    """The chainer's keys: the ratchet with ``BALDUR_FORWARD_SECURE_EPOCH``, else the ring.

    Raises :class:`ConfigError`.
    """
    epoch_n = settings.epoch_entries
    if epoch_n is None:
        return RotatingChainKeys(load_keyring(settings), settings.retired_key_ids)
    path = settings.state_dir / RATCHET_FILE
    initial = None
    if not path.exists():
        initial = load_signing_key(settings)
    return ForwardSecureChainKeys.open(path, epoch_n=epoch_n, initial=initial)
