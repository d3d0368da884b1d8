"""Which key seals which entry: a keyring for rotation, and the forward-secure ratchet.

Pure: keys, sequence numbers and recorded key ids are passed in; nothing here reads the
environment, a file or a clock. ``CHAIN.md`` §16 is the normative text for the ratchet
and the epoch rule; ``vectors/ratchet-v1.json`` holds known answers.

- **Rotation.** A :class:`Keyring` maps key ids to keys. New entries are sealed with its
  *current* key; older entries keep verifying under the key id their link covers. An
  entry whose key is not in the ring is *unverifiable* (:class:`UnknownKey`), never
  tampered.
- **Forward security (opt-in).** The key evolves per *epoch* of ``N`` entries:
  ``K_0`` is the initial (escrowed) key, ``K_{e+1} = HKDF-SHA256(K_e, info = tag ‖ u64(e+1))``,
  and entry ``seq`` belongs to epoch ``(seq - 1) // N``. A sealer that holds only ``K_e``
  can derive later keys but no earlier one, so a thief of today's key cannot forge
  yesterday's entries. Verifiers derive every epoch key from ``K_0``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .chain import SigningKey
from .errors import ConfigError, UnknownKey

RATCHET_TAG = b"baldur-audit/ratchet/v1"
RATCHET_KEY_BYTES = 32
#: Deriving more epoch keys than this for one verification is refused (a typo in N).
MAX_EPOCHS = 10_000_000

#: The key an entry is sealed with, given its seq (raises :class:`UnknownKey` or
#: :class:`ConfigError` when it cannot be had).
KeyForSeq = Callable[[int], SigningKey]


class Keyring(Mapping[str, SigningKey]):
    """Keys by key id; ``current`` is the one new entries are sealed with."""

    __slots__ = ("current", "_keys")

    def __init__(self, current: SigningKey, older: Iterable[SigningKey] = ()) -> None:
        self.current = current
        self._keys = {key.key_id: key for key in older}
        self._keys[current.key_id] = current

    def __getitem__(self, key_id: str) -> SigningKey:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # ids only, never secrets
        return f"Keyring(current={self.current.key_id!r}, ids={sorted(self._keys)!r})"

    def key_for(self, seq: int) -> SigningKey:
        """The key a new entry ``seq`` is sealed with: always the current one."""
        return self.current


def epoch_of(seq: int, epoch_entries: int) -> int:
    """The epoch of entry ``seq`` (from 1) when each epoch holds ``epoch_entries`` entries."""
    if seq < 1:
        raise ValueError(f"seq must be at least 1, found {seq}")
    if epoch_entries < 1:
        raise ConfigError(f"epoch length must be at least 1 entry, found {epoch_entries}")
    return (seq - 1) // epoch_entries


def ratchet_secret(secret: bytes, next_epoch: int) -> bytes:
    """``K_{e+1}`` from ``K_e``: HKDF-SHA256 (RFC 5869), no salt, info = tag ‖ u64(e+1), 32 bytes."""
    if next_epoch < 1:
        raise ValueError(f"the next epoch must be at least 1, found {next_epoch}")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=RATCHET_KEY_BYTES,
        salt=None,
        info=RATCHET_TAG + struct.pack(">Q", next_epoch),
    ).derive(secret)


class EpochRatchet:
    """The forward-secure key of one epoch, able to move forward only.

    Holds exactly one epoch key: advancing replaces it, so the object can no longer
    produce an earlier one (the caller persists it; see ``consumers/chain_keys.py``).
    """

    __slots__ = ("epoch", "key", "epoch_entries")

    def __init__(self, key: SigningKey, *, epoch: int, epoch_entries: int) -> None:
        if epoch < 0:
            raise ConfigError(f"ratchet epoch must be at least 0, found {epoch}")
        epoch_of(1, epoch_entries)  # validates epoch_entries
        self.key = key
        self.epoch = epoch
        self.epoch_entries = epoch_entries

    def __repr__(self) -> str:
        return f"EpochRatchet(epoch={self.epoch}, key_id={self.key.key_id!r}, N={self.epoch_entries})"

    def advance_to(self, epoch: int) -> SigningKey:
        """Ratchet forward to ``epoch`` and return its key.

        Raises :class:`ConfigError` if ``epoch`` is earlier than the one held: its key is gone.
        """
        if epoch < self.epoch:
            raise ConfigError(
                f"the key of epoch {epoch} is no longer held (the ratchet is at "
                f"epoch {self.epoch}): forward security forbids going back"
            )
        if epoch - self.epoch > MAX_EPOCHS:
            raise ConfigError(f"refusing to ratchet {epoch - self.epoch} epochs forward")
        secret = self.key.secret
        for step in range(self.epoch + 1, epoch + 1):
            secret = ratchet_secret(secret, step)
        if epoch != self.epoch:
            self.key = SigningKey.derive(secret)
            self.epoch = epoch
        return self.key

    def key_for(self, seq: int) -> SigningKey:
        """The key of entry ``seq`` (ratchets forward as needed)."""
        return self.advance_to(epoch_of(seq, self.epoch_entries))


def epoch_keys(initial: SigningKey, *, epoch_entries: int, last_seq: int) -> list[SigningKey]:
    """Every epoch key from ``K_0`` (the initial key) up to the epoch of ``last_seq``
    (at least ``K_0``): what a verifier derives from the escrowed key."""
    last_epoch = epoch_of(max(last_seq, 1), epoch_entries)
    if last_epoch > MAX_EPOCHS:
        raise ConfigError(
            f"{last_epoch + 1} epochs to derive: epoch length {epoch_entries} is too small for this ledger"
        )
    keys = [initial]
    secret = initial.secret
    for epoch in range(1, last_epoch + 1):
        secret = ratchet_secret(secret, epoch)
        keys.append(SigningKey.derive(secret))
    return keys


class EpochSchedule:
    """The forward-secure rule for verifiers and replay: entry ``seq`` is sealed with the key
    of its epoch, derived from the initial key (derivations cached)."""

    __slots__ = ("epoch_entries", "_keys")

    def __init__(self, initial: SigningKey, *, epoch_entries: int) -> None:
        epoch_of(1, epoch_entries)
        self.epoch_entries = epoch_entries
        self._keys = [initial]

    def key_of_epoch(self, epoch: int) -> SigningKey:
        """``K_epoch`` (derives and caches the ones not derived yet)."""
        if epoch > MAX_EPOCHS:
            raise ConfigError(f"refusing to derive the key of epoch {epoch}")
        while len(self._keys) <= epoch:
            self._keys.append(SigningKey.derive(ratchet_secret(self._keys[-1].secret, len(self._keys))))
        return self._keys[epoch]

    def key_for(self, seq: int) -> SigningKey:
        """The key entry ``seq`` must be sealed with."""
        return self.key_of_epoch(epoch_of(seq, self.epoch_entries))

    def expected_key_id(self, seq: int) -> str:
        """The key id entry ``seq`` must carry."""
        return self.key_for(seq).key_id


class RecordedSchedule:
    """The rotation rule for replay: entry ``seq`` is rebuilt with the key the ledger says
    it used (its key id is covered by its link), looked up in a keyring.

    ``changes`` lists ``(first_seq, key_id)`` for each run of entries sealed under one key,
    in seq order; seqs past the last recorded entry use the ring's current key.
    """

    __slots__ = ("_starts", "_ids", "_ring", "_last_seq")

    def __init__(self, changes: Sequence[tuple[int, str]], ring: Keyring, *, last_seq: int) -> None:
        self._starts = [first for first, _ in changes]
        self._ids = [key_id for _, key_id in changes]
        if self._starts != sorted(self._starts):
            raise ValueError("key changes must be in seq order")
        self._ring = ring
        self._last_seq = last_seq

    def key_for(self, seq: int) -> SigningKey:
        """The key entry ``seq`` was sealed with; raises :class:`UnknownKey` if it is absent."""
        if seq > self._last_seq or not self._starts:
            return self._ring.current
        at = bisect.bisect_right(self._starts, seq) - 1
        key_id = self._ids[at] if at >= 0 else self._ring.current.key_id
        key = self._ring.get(key_id)
        if key is None:
            raise UnknownKey(seq, f"key id {key_id} is not configured")
        return key


def keys_by_id(keys: Iterable[SigningKey]) -> Mapping[str, SigningKey]:
    """A key id → key map of ``keys`` (what ``verify`` takes)."""
    return {key.key_id: key for key in keys}
